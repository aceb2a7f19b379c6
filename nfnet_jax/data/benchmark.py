"""Throughput of the train input pipeline (images/s, and per CPU-second).

`scripts/benchmark.py --mode data` calls `benchmark_pipeline`. With
`synthetic=True` an imagenet2012 of synthetic 375x500 JPEGs (a few classes,
prepared once by tfds from fake manual tars) stands in for the real data, so
the ImageNet-style pipeline (JPEG crop-decode, inception crop, RandAugment,
MixUp/CutMix) can be measured anywhere.
"""
import copy
import os
import resource
import time
from typing import Optional

from nfnet_jax.data import pipeline

SYNTHETIC_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'nfnet_jax',
                             'synthetic_imagenet')


def prepare_synthetic_imagenet(root: str = SYNTHETIC_DIR, num_classes=4,
                               per_class=128, num_val=64) -> str:
  """Prepares (once) a synthetic imagenet2012; returns its tfds data_dir."""
  from nfnet_jax.data import imagenet  # pylint: disable=g-import-not-at-top
  data_dir = os.path.join(root, 'tfds')
  done = os.path.join(root, f'done_{num_classes}_{per_class}_{num_val}')
  if os.path.exists(done):
    return data_dir
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  names = [l.strip() for l in open(os.fspath(tfds.core.tfds_path(
      'datasets/imagenet2012/labels.txt')))][:num_classes]
  manual = os.path.join(root, 'manual')
  imagenet.write_fake_manual_tars(manual, names, per_class,
                                  list(range(1, num_val + 1)))
  imagenet.prepare_imagenet2012(data_dir, manual, progress=False)
  open(done, 'w').close()
  return data_dir


def _cpu_seconds():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def benchmark_pipeline(config, num_batches: int, *, warmup_batches: int = 3,
                       layout: str = 'host', synthetic: bool = False,
                       synthetic_dir: Optional[str] = None) -> dict:
  """Times `num_batches` train batches after `warmup_batches`.

  Args:
    config: full config (data, seed, train.batch_size).
    num_batches: batches to time.
    warmup_batches: batches fetched before timing (tracing, buffers).
    layout: iterator layout ('host' or 'pmap').
    synthetic: use the synthetic imagenet2012 (config.data.name is set to
      imagenet2012 and data_dir to the synthetic folder).
    synthetic_dir: where to build/reuse the synthetic data.

  Returns:
    dict(images_per_sec, images_per_cpu_sec, cpu_count, seconds, cpu_seconds,
    num_images, batch_size, image_size, dataset, decode_errors).
  """
  if synthetic:
    config = copy.deepcopy(config)
    config.data.name = 'imagenet2012'
    config.data.data_dir = prepare_synthetic_imagenet(
        synthetic_dir or SYNTHETIC_DIR)
  it = pipeline.train_iterator(config, layout=layout, process_index=0,
                               process_count=1, local_device_count=1)
  try:
    for _ in range(warmup_batches):
      next(it)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    n = 0
    for _ in range(num_batches):
      b = next(it)
      n += b['images'].shape[0] if layout == 'host' else (
          b['images'].shape[0] * b['images'].shape[1])
    dt, dc = time.perf_counter() - t0, _cpu_seconds() - c0
  finally:
    it.close()
  return dict(images_per_sec=n / dt, images_per_cpu_sec=n / max(dc, 1e-9),
              cpu_count=os.cpu_count(), seconds=dt, cpu_seconds=dc,
              num_images=n, batch_size=int(config.train.batch_size),
              image_size=int(config.data.image_size),
              dataset=config.data.name, decode_errors=it.decode_errors)
