"""Logging of a training run: what the loop writes and prints.

* `writer`: console lines and the progress bar, TensorBoard scalars,
  ``metrics.jsonl`` (`MetricWriter`, `read_jsonl`, `write_json_atomic`).
* `steplog`: each finished step's host metrics, the non-finite policy and
  the log window (`StepLog`, `TrainingDiverged`, `NonfiniteStepError`).
* `agc`: AGC telemetry pooled over the log window (`AGCLog`).

The profiler is not logging: it lives in ``train/profiler.py``.
"""
from nfnet_jax.train.logs.agc import AGCLog
from nfnet_jax.train.logs.steplog import NonfiniteStepError
from nfnet_jax.train.logs.steplog import StepLog
from nfnet_jax.train.logs.steplog import TrainingDiverged
from nfnet_jax.train.logs.writer import MetricWriter
from nfnet_jax.train.logs.writer import format_eta
from nfnet_jax.train.logs.writer import mean_of
from nfnet_jax.train.logs.writer import read_jsonl
from nfnet_jax.train.logs.writer import write_json_atomic

__all__ = ['AGCLog', 'MetricWriter', 'NonfiniteStepError', 'StepLog', 'TrainingDiverged',
           'format_eta', 'mean_of', 'read_jsonl', 'write_json_atomic']
