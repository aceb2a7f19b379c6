"""Step logging and the non-finite policy (host side of each finished step).

:class:`StepLog` receives each step's host metrics: a non-finite step is
recorded and, by ``config.train.nonfinite``, raised or skipped (too many in a
row stop the run); a finite one joins the logging window, whose mean is
written every ``log_every`` steps. Its bookkeeping travels in the
checkpoint's metadata (:meth:`meta` / the ``meta`` argument), so a resumed
run logs exactly what an uninterrupted one would.
"""
from nfnet_jax import errors
from nfnet_jax.train.logs import writer as writer_lib

_WINDOW_KEYS = ('loss', 'top1', 'grad_norm', 'param_norm')


class TrainingDiverged(errors.DivergedError):
  """Too many consecutive non-finite steps (``train.max_consecutive_nonfinite``).

  The command line exits with its own status for it (``errors.EXIT_DIVERGED``),
  so sweeps tell a diverged run from a crash without reading logs.
  """


class NonfiniteStepError(errors.DivergedError, FloatingPointError):
  """A non-finite step with ``config.train.nonfinite='raise'``."""


class StepLog:
  """The train-side log of a run.

  Args:
    train_config: ``config.train`` (nonfinite, max_consecutive_nonfinite,
      total_steps).
    writer: the run's ``logs.MetricWriter``.
    meta: the restored checkpoint's metadata ({} for a fresh run).
    fetch: device metrics -> host metrics (``Parallel.get_metrics``).
    agc_log: a ``logs.AGCLog`` pooling the step's AGC statistics
      (``metrics['agc']``) over each log window; None: no telemetry.
  """

  def __init__(self, train_config, writer, meta: dict, fetch=None, agc_log=None):
    self.cfg = train_config
    self.writer = writer
    self.fetch = fetch or (lambda m: m)
    self._pending = None
    self.window: list = list(meta.get('log_window', []))
    self.skipped_steps: list = list(meta.get('skipped_steps', []))
    self.last_train: dict = dict(meta.get('last_train', {}))
    self.agc_log = agc_log
    if agc_log is not None:
      agc_log.restore(meta.get('agc_window'))

  def meta(self) -> dict:
    """What a checkpoint must carry to resume this log exactly."""
    return {'log_window': list(self.window),
            'skipped_steps': list(self.skipped_steps),
            'last_train': self.last_train,
            'agc_window': self.agc_log.state() if self.agc_log is not None else None}

  def push(self, metrics) -> None:
    """Takes a step's device metrics; records the previous step's.

    The one-step lag lets the host queue the next step before it waits on
    this one's metrics; :meth:`settle` records the held one.
    """
    self.settle()
    self._pending = metrics

  def settle(self) -> None:
    """Records the held step's metrics now (before a log, eval or save)."""
    if self._pending is not None:
      pending, self._pending = self._pending, None
      self.record(self.fetch(pending))

  def record(self, m: dict) -> None:
    """Host metrics of one finished step: non-finite policy, log window.

    Raises:
      FloatingPointError: a non-finite step with ``nonfinite='raise'``.
      TrainingDiverged: ``max_consecutive_nonfinite`` non-finite steps in a
        row.
    """
    s = int(m['step'])
    if float(m['finite']) != 0.0:
      if self.agc_log is not None and 'agc' in m:
        self.agc_log.add(m['agc'])
      self.window.append({k: float(m[k]) for k in _WINDOW_KEYS if k in m}
                         | {'lr': float(m.get('lr', 0.0))})
      return
    self.skipped_steps.append(s)
    del self.skipped_steps[:-1000]
    if self.cfg.nonfinite == 'raise':
      raise NonfiniteStepError(
          f'step {s}: non-finite loss or gradients (loss={m["loss"]}); '
          "config.train.nonfinite='raise'. The update was not applied.")
    self.writer.log(
        f'[train] step {s}: non-finite loss/gradients (loss={m["loss"]}); '
        f'update skipped ({int(m["nonfinite_consecutive"])} in a row, '
        f'{int(m["nonfinite_total"])} in total).')
    if int(m['nonfinite_consecutive']) >= self.cfg.max_consecutive_nonfinite:
      raise TrainingDiverged(
          f'{int(m["nonfinite_consecutive"])} consecutive non-finite steps '
          f'(up to step {s}; config.train.max_consecutive_nonfinite='
          f'{self.cfg.max_consecutive_nonfinite}): training diverged. Try a '
          'lower config.optimizer.base_lr, a longer '
          'config.optimizer.warmup_steps or tighter AGC '
          '(smaller config.optimizer.clipping).')

  def flush(self, step: int) -> None:
    """Writes the window's means (and the rate) at ``step``; logs a line."""
    writer, total = self.writer, self.cfg.total_steps
    steps_s, images_s = writer.rate(step)
    scalars = {}
    if self.window:
      mean = writer_lib.mean_of(self.window)
      scalars = {f'train/{k}': v for k, v in mean.items()}
      scalars['train/lr'] = self.window[-1]['lr']
    scalars['train/steps_per_s'] = steps_s
    scalars['train/images_per_s'] = images_s
    scalars['train/skipped_total'] = len(self.skipped_steps)
    self.window.clear()
    writer.write(step, 'train', scalars)
    self.last_train = {k: v for k, v in scalars.items()
                       if not k.endswith('_s')}
    eta = (total - step) / max(steps_s, 1e-9)
    agc_scalars = self.agc_log.scalars() if self.agc_log is not None else {}
    if agc_scalars:
      writer.write(step, 'agc', agc_scalars)
      writer.log(self.agc_log.console(step, agc_scalars))
    if 'train/loss' in scalars:
      writer.log(
          f'[train] step {step}/{total}: loss {scalars["train/loss"]:.4f} '
          f'top-1 {100 * scalars["train/top1"]:.1f}% lr '
          f'{scalars["train/lr"]:.4g} | {steps_s:.2f} steps/s '
          f'{images_s:.0f} images/s | ETA {writer_lib.format_eta(eta)}')
