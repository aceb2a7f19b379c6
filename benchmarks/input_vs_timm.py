r"""Input pipeline throughput: ours (tf.data) vs timm's loader vs plain PIL decode.

  pip install -e '.[bench]' -c constraints.txt      # torch, torchvision, timm, psutil
  python benchmarks/input_vs_timm.py [--images 512] [--rounds 3] [--batches 16]

The same JPEG files feed every side: `--images` synthetic photo-like
375x500 JPEGs (the size of a typical ImageNet image) in an image-folder tree
(train/<class>/*.JPEG), written once to `--dir`. Our side reads that tree with
the `image_folder` source, so nothing needs tfds.

Sides (one worker per core on each):
  * ours: `nfnet_jax.data.train_iterator` (tf.data; `num_parallel_calls` =
    cores) over the image-folder tree, float32 normalised batches
    [B, 224, 224, 3] with one-hot/mixed labels, exactly what the train loop
    receives;
  * ours_tfds: the same from a tfds-prepared imagenet2012 of 512 synthetic
    JPEGs made the same way (tfds shuffle buffer, tfrecord reading);
  * timm: `timm.data.create_transform(224, is_training=True, ...)` over a
    torchvision `ImageFolder`, a torch `DataLoader` with `num_workers` = cores,
    and timm's `Mixup` on each batch in the main process (as timm's train.py
    does);
  * decode: `PIL.Image.open(f).convert('RGB')` of each file, one process (the
    floor every pipeline pays).

Settings: `crop_flip` (random-resized crop 0.08-1, 3/4-4/3, bicubic, flip)
and `ra_mix` (the same + RandAugment 2 layers at magnitude 15 + MixUp 0.2 /
CutMix on the batch: ours half/half per batch, timm switch prob 0.5). Our
RandAugment uses `--ra_mode` (default `official`, the TPU level mapping of
the NFNet configs) in the order `--augment_before_mix` picks (default: after
MixUp/CutMix, on each mixed example, as the official NFNet pipeline and our
NFNet configs do).

Allocator: `--malloc tcmalloc` preloads tcmalloc into every side's
processes (timm's DataLoader workers inherit it), as `nfnet-train` runs;
the default is glibc's `malloc` for all.

Measure: images per CPU-second = images delivered / CPU time (user + system)
of every process involved (the main process and, for timm, its workers),
taken between two points after `--warmup` batches (enough to drain the
read-ahead both sides build up during start-up). Each (side, setting) runs
in its own fresh subprocess, and the subprocesses are INTERLEAVED (round 1:
ours, timm, decode for each setting; round 2: ...), so load from other work
on the machine hits every side alike; medians over rounds and the ratio
ours/timm are printed, with the load average.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SETTINGS = ('crop_flip', 'ra_mix')
SIDES = ('ours', 'ours_tfds', 'timm', 'decode')
DEFAULT_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'nfnet_jax', 'jpeg_folder')
SIZE = 224
RA_LAYERS, RA_MAG = 2, 15
MIXUP_ALPHA = 0.2


def cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def write_images(root: str, n: int, classes: int = 8, hw=(375, 500)) -> str:
  """Writes (once) `n` synthetic JPEGs as train/<class>/*.JPEG under root."""
  done = os.path.join(root, f'done_{n}_{classes}_{hw[0]}x{hw[1]}')
  if os.path.exists(done):
    return root
  from nfnet_jax.testing import fake_data  # pylint: disable=g-import-not-at-top
  for i in range(n):
    d = os.path.join(root, 'train', f'class{i % classes:03d}')
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f'img{i:05d}.JPEG'), 'wb') as f:
      f.write(fake_data.synthetic_jpeg(hw[0], hw[1], i))
  open(done, 'w').close()
  return root


def _cpu_self_and_children() -> float:
  import psutil  # pylint: disable=g-import-not-at-top
  procs = [psutil.Process()]
  procs += procs[0].children(recursive=True)
  total = 0.0
  for p in procs:
    try:
      t = p.cpu_times()
      total += t.user + t.system
    except psutil.NoSuchProcess:
      pass
  return total


def _measure(next_batch, batches: int, warmup: int, batch: int) -> dict:
  for _ in range(warmup):
    next_batch()
  c0, t0 = _cpu_self_and_children(), time.perf_counter()
  for _ in range(batches):
    next_batch()
  c1, t1 = _cpu_self_and_children(), time.perf_counter()
  n = batches * batch
  return {'images': n, 'cpu_s': c1 - c0, 'wall_s': t1 - t0,
          'images_per_cpu_s': n / max(c1 - c0, 1e-9), 'images_per_s': n / (t1 - t0)}


# ------------------------------------------------------------------ sides


def run_ours(root, setting, batch, batches, warmup, source='image_folder',
             tfds_images=512, ra_mode='official', augment_before_mix=False) -> dict:
  from nfnet_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax import data  # pylint: disable=g-import-not-at-top
  c = config_lib.base_config()
  if source == 'image_folder':
    c.data.name = 'image_folder'
    c.data.data_dir = root
    c.data.eval_split = 'train'
  else:
    from nfnet_jax.analysis import benchmark as data_bench  # pylint: disable=g-import-not-at-top
    c.data.name = 'imagenet2012'
    if tfds_images == 512:
      c.data.data_dir = data_bench.prepare_synthetic_imagenet()
    else:  # 8 classes; a bigger epoch amortises tfds's per-epoch start-up
      c.data.data_dir = data_bench.prepare_synthetic_imagenet(
          f'{data_bench.SYNTHETIC_DIR}_{tfds_images}', num_classes=8,
          per_class=tfds_images // 8, num_val=16)
  c.data.image_size = SIZE
  c.data.train_crop = 'inception'
  c.data.random_flip = True
  c.data.resize_method = 'bicubic'
  c.data.num_parallel_calls = cores()
  c.train.batch_size = batch
  if setting == 'ra_mix':
    c.data.randaugment_layers, c.data.randaugment_magnitude = RA_LAYERS, RA_MAG
    c.data.mixup_alpha, c.data.cutmix = MIXUP_ALPHA, True
    c.data.randaugment_mode = ra_mode
    c.data.augment_before_mix = augment_before_mix
  else:
    c.data.randaugment_layers = 0
    c.data.mixup_alpha, c.data.cutmix = 0.0, False
  it = data.train_iterator(c, layout='host', process_index=0, process_count=1,
                           local_device_count=1)
  try:
    return _measure(lambda: next(it), batches, warmup, batch)
  finally:
    it.close()


def run_timm(root, setting, batch, batches, warmup) -> dict:
  from benchmarks import timm_compare  # pylint: disable=g-import-not-at-top
  torch, _ = timm_compare.import_timm()
  import torchvision  # pylint: disable=g-import-not-at-top
  from timm.data import Mixup, create_transform  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  aa = f'rand-m{RA_MAG}-n{RA_LAYERS}' if setting == 'ra_mix' else None
  tf = create_transform(SIZE, is_training=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        hflip=0.5, vflip=0.0, color_jitter=None, auto_augment=aa,
                        interpolation='bicubic', re_prob=0.0)
  ds = torchvision.datasets.ImageFolder(os.path.join(root, 'train'), transform=tf)
  loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=cores(),
                                       drop_last=True, persistent_workers=True)
  mix = None
  if setting == 'ra_mix':
    mix = Mixup(mixup_alpha=MIXUP_ALPHA, cutmix_alpha=1.0, switch_prob=0.5, mode='batch',
                label_smoothing=0.0, num_classes=len(ds.classes))
  state = {'it': iter(loader)}

  def next_batch():
    try:
      x, y = next(state['it'])
    except StopIteration:
      state['it'] = iter(loader)
      x, y = next(state['it'])
    if mix is not None:
      x, y = mix(x, y)
    return x, y
  try:
    return _measure(next_batch, batches, warmup, batch)
  finally:
    del state['it']


def run_decode(root, setting, batch, batches, warmup) -> dict:
  del setting
  from PIL import Image  # pylint: disable=g-import-not-at-top
  files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(root, 'train'))
                 for f in fs if f.endswith('.JPEG'))
  pos = [0]

  def next_batch():
    for _ in range(batch):
      with Image.open(files[pos[0] % len(files)]) as im:
        im.convert('RGB').load()
      pos[0] += 1
  return _measure(next_batch, batches, warmup, batch)


def run_ours_tfds(root, setting, batch, batches, warmup, tfds_images=512,
                  **ours) -> dict:
  """Ours from a tfds-prepared imagenet2012 of the same kind of JPEGs.

  `prepare_synthetic_imagenet`: `tfds_images` synthetic 375x500 JPEGs (made
  by the same function as --dir's files, other seeds), read through tfds
  with its shuffle buffer. The tfds path builds a new tf.data pipeline per
  epoch (per-epoch file order); with 512 images an epoch is only 8 batches,
  so that start-up weighs far more than on ImageNet (20,000 batches).
  """
  del root
  return run_ours(None, setting, batch, batches, warmup, source='tfds',
                  tfds_images=tfds_images, **ours)


RUNNERS = {'ours': run_ours, 'ours_tfds': run_ours_tfds, 'timm': run_timm,
           'decode': run_decode}


def child(a) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  kw = {'tfds_images': a.tfds_images} if a.side == 'ours_tfds' else {}
  if a.side.startswith('ours'):
    kw.update(ra_mode=a.ra_mode, augment_before_mix=a.augment_before_mix)
  out = RUNNERS[a.side](a.dir, a.setting, a.batch, a.batches, a.warmup, **kw)
  print('RESULT ' + json.dumps(out), flush=True)


def child_environment(environ, malloc: str, find=None) -> dict:
  """The environment of every side's process: this checkout importable and,
  for ``malloc='tcmalloc'``, tcmalloc preloaded (`find` locates it; the
  commands' `find_tcmalloc` by default)."""
  env = dict(environ, PYTHONPATH=ROOT)
  if malloc == 'system':
    return env
  if find is None:
    from nfnet_jax.commands import base as commands_base  # pylint: disable=g-import-not-at-top
    find = commands_base.find_tcmalloc
  library = find()
  if library is None:
    sys.exit('--malloc tcmalloc: no libtcmalloc found; install '
             'libtcmalloc-minimal4 (scripts/setup_env.sh does)')
  env['LD_PRELOAD'] = f'{library} {env.get("LD_PRELOAD", "")}'.strip()
  return env


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--dir', default=DEFAULT_DIR)
  p.add_argument('--images', type=int, default=512)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--batches', type=int, default=24, help='timed batches per run')
  p.add_argument('--warmup', type=int, default=8,
                 help='batches before timing: long enough to drain the read-ahead '
                      'buffers filled during start-up (tf.data prefetch, DataLoader '
                      'prefetch_factor), which would otherwise be counted as free')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--settings', default=','.join(SETTINGS))
  p.add_argument('--sides', default=','.join(SIDES))
  p.add_argument('--tfds_images', type=int, default=512,
                 help='size of the synthetic tfds imagenet2012 for ours_tfds '
                      '(512, or a multiple of 8 built once)')
  p.add_argument('--ra_mode', default='official', choices=('official', 'increasing'),
                 help="our RandAugment level mapping (official: the NFNet configs')")
  p.add_argument('--augment_before_mix', action='store_true',
                 help='ours: RandAugment each example before MixUp/CutMix instead of '
                      'each mixed example after it (the official order, the default)')
  p.add_argument('--malloc', default='system', choices=('system', 'tcmalloc'),
                 help="the allocator of every side's processes: glibc's, or "
                      'tcmalloc preloaded into all of them (as nfnet-train runs)')
  p.add_argument('--json_out', default=None)
  p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--side', help=argparse.SUPPRESS)
  p.add_argument('--setting', help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.child:
    return child(a)
  env = child_environment(os.environ, a.malloc)
  write_images(a.dir, a.images)
  settings, sides = a.settings.split(','), a.sides.split(',')
  results = {(st, sd): [] for st in settings for sd in sides}
  print(f'{a.images} JPEGs 375x500 in {a.dir}; {SIZE} px, batch {a.batch}, {a.batches} timed '
        f'batches per run, {cores()} worker(s) per side; ours: RandAugment {a.ra_mode} '
        f'{"before" if a.augment_before_mix else "after"} mixing; '
        f'allocator {a.malloc}; load {os.getloadavg()[0]:.2f}', flush=True)
  for r in range(a.rounds):
    for st in settings:
      for sd in sides:
        cmd = [sys.executable, os.path.abspath(__file__), '--child', '--side', sd,
               '--setting', st, '--dir', a.dir, '--batch', str(a.batch),
               '--batches', str(a.batches), '--warmup', str(a.warmup),
               '--tfds_images', str(a.tfds_images), '--ra_mode', a.ra_mode]
        cmd += ['--augment_before_mix'] if a.augment_before_mix else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
        if proc.returncode or not line:
          print(f'round {r} {st} {sd} failed:\n{proc.stderr[-2000:]}', flush=True)
          continue
        res = json.loads(line[0][len('RESULT '):])
        res['load'] = os.getloadavg()[0]
        results[(st, sd)].append(res)
        print(f'  round {r} {st:9s} {sd:6s} {res["images_per_cpu_s"]:7.1f} img/CPU-s  '
              f'{res["images_per_s"]:7.1f} img/s  (load {res["load"]:.2f})', flush=True)
  nan = float('nan')
  print('\nimages per CPU-second, medians over rounds (ratio: over timm)')
  print('| setting | ' + ' | '.join(sides) + ' |')
  print('|---|' + '---|' * len(sides))
  records = []
  for st in settings:
    med = {sd: statistics.median([x['images_per_cpu_s'] for x in results[(st, sd)]])
           if results[(st, sd)] else nan for sd in sides}
    cells = []
    for sd in sides:
      cell = f'{med[sd]:.0f}'
      if sd.startswith('ours') and 'timm' in med:
        cell += f' ({med[sd] / med["timm"]:.2f}x)'
      cells.append(cell)
    print(f'| {st} | ' + ' | '.join(cells) + ' |')
    records.append({'setting': st, 'median_images_per_cpu_s': med,
                    'ratio_ours_timm': med.get('ours', nan) / med.get('timm', nan),
                    'tfds_images': a.tfds_images,
                    'ra_mode': a.ra_mode, 'augment_before_mix': a.augment_before_mix,
                    'malloc': a.malloc, 'runs': {sd: results[(st, sd)] for sd in sides}})
  if a.json_out:
    with open(a.json_out, 'a') as f:
      for rec in records:
        f.write(json.dumps(rec) + '\n')
  return records


if __name__ == '__main__':
  main()
