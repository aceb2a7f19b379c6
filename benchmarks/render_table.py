"""Renders the CPU performance tables of docs/performance.md from benchmark JSON records.

    python benchmarks/render_table.py BENCH_JSONL [TIMM_JSONL]

BENCH_JSONL: records of `scripts/benchmark.py --json_out`; TIMM_JSONL:
records of `benchmarks/timm_compare.py --json_out`. Prints two markdown
tables: ours vs timm (and the `feature_group_count` path), and the
`scripts/benchmark.py` figures.
"""
import json
import sys


def _read(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def timm_table(records):
  by_shape = {}
  for r in records:
    by_shape.setdefault(r['shape'], {})[r['impl']] = r
  lines = ['| shape | timm ms/step | ours ms/step | ours/timm img/s | '
           '`feature_group_count` ms/step | its ratio to timm | our compile s (split / fgc) |',
           '|---|---|---|---|---|---|---|']
  for shape, impls in by_shape.items():
    auto, xla = impls.get('auto'), impls.get('xla')
    if auto is None:
      continue
    xla_ms = f"{xla['ours_ms']:.0f}" if xla else '-'
    xla_ratio = f"{xla['ratio_img_s']:.2f}x" if xla else '-'
    comp = f"{auto.get('ours_compile_s', float('nan')):.1f}"
    if xla:
      comp += f" / {xla.get('ours_compile_s', float('nan')):.1f}"
    lines.append(f"| {shape} | {auto['timm_ms']:.0f} | {auto['ours_ms']:.0f} | "
                 f"**{auto['ratio_img_s']:.2f}x** | {xla_ms} | {xla_ratio} | {comp} |")
  return '\n'.join(lines)


def bench_table(records):
  lines = ['| run | ms/step median (min-max) | img/s | compile s | GFLOP/step | GFLOP/s | '
           '% of f32 matmul peak | AGC+EMA share | XLA peak MiB |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in records:
    if r.get('mode') == 'data':
      continue
    gf = r.get('flops_per_step')
    pct = r.get('pct_of_matmul_peak')
    share = r.get('extra', {}).get('agc_ema_share_pct')
    lines.append(
        f"| {r['name']} ({r['model']} {r['mode']} b{r['batch']}@{r['resolution']} "
        f"{r['dtype']}, conv {r['conv_impl']}) | {r['median_ms']:.0f} "
        f"({r['min_ms']:.0f}-{r['max_ms']:.0f}) | {r['images_per_s']:.2f} | "
        f"{r['compile_s']:.1f} | {gf / 1e9:.1f} | {r.get('gflops_per_s') or 0:.0f} | "
        + (f"{pct:.0f}% of {r['matmul_peak_gflops']:.0f}" if pct is not None else '-')
        + ' | ' + (f'{share:.1f}%' if share is not None else '-')
        + f" | {r.get('peak_mib') or 0:.0f} |")
  return '\n'.join(lines)


def main(argv):
  if len(argv) not in (2, 3):
    sys.exit(__doc__)
  if len(argv) == 3:
    print(timm_table(_read(argv[2])))
    print()
  print(bench_table(_read(argv[1])))


if __name__ == '__main__':
  main(sys.argv)
