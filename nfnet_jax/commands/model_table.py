"""nfnet-model-table: params and FLOPs of every registered model and variant.

Columns: parameters (1000 classes), the reference implementation's count
where one was measured (DeepMind's code for NF-RegNets, timm for the light
NFNets), XLA's cost-analysis FLOPs of one eval forward at the variant's test
resolution with batch 1 (measured; a multiply-add is 2 FLOPs), the official
`count_flops` multiply-adds (counted from the built modules by the official
rule; the papers call these "FLOPs"), and the NFNet paper's published FLOPs
and top-1. Conventions are explained in nfnet_jax/analysis/zoo.py.

Examples:
  nfnet-model-table                       # Markdown to stdout
  nfnet-model-table --out docs/model_table.md --json docs/figures/zoo.json --plot docs/figures/flops_vs_top1.png
  nfnet-model-table --models NFRegNet --lowered   # fast: no XLA compile
"""
import json
import sys
import time

from nfnet_jax.commands import base


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__)
  p.add_argument('--models', default=None,
                 help='comma-separated registry names or name:variant to keep (default: all)')
  p.add_argument('--lowered', action='store_true',
                 help='cost-analyse the lowered module (no compile; ~0.2%% higher)')
  p.add_argument('--out', default=None, help='write the Markdown table here too')
  p.add_argument('--json', default=None, help='write the rows as JSON')
  p.add_argument('--plot', default=None, help='write the FLOPs vs top-1 plot (PNG)')
  p.add_argument('--from_json', default=None,
                 help='re-render the table/plot from a --json file instead of measuring')
  return p


def main(argv=None):
  p = parser()
  args = p.parse_args(argv)
  # JAX and every model: imported after the flags parse (--help stays fast).
  zoo = base.library('nfnet_jax.analysis.zoo')

  if args.from_json:
    with open(args.from_json) as f:
      rows = json.load(f)['rows']
    return _write(rows, args, zoo)

  entries = zoo.zoo_entries()
  if args.models:
    keep = [m.strip() for m in args.models.split(',') if m.strip()]
    known = {e['name'] for e in entries} | {f"{e['name']}:{e['variant']}" for e in entries}
    bad = [k for k in keep if k not in known]
    if bad:
      p.error(f'--models: unknown {bad}; use registry names {sorted({e["name"] for e in entries})} '
              'or name:variant, e.g. NFRegNet:B0')
    entries = [e for e in entries
               if e['name'] in keep or f"{e['name']}:{e['variant']}" in keep]

  t0 = time.time()
  log = lambda r: print(f"[model_table] {r['name']} {r['variant']}: {r['params']:,} params, "
                        f"{r['xla_gflops']:.2f} XLA GFLOPs ({time.time() - t0:.0f}s)",
                        file=sys.stderr, flush=True)
  rows = zoo.measure(entries, compiled=not args.lowered, log=log)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'compiled': not args.lowered, 'rows': rows}, f, indent=1)
  return _write(rows, args, zoo)


def _write(rows, args, zoo) -> int:
  table = zoo.markdown_table(rows)
  print(table)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(table + '\n')
  if args.plot:
    n = zoo.plot_flops_vs_top1(rows, args.plot)
    print(f'[model_table] wrote {args.plot} ({n} points)', file=sys.stderr)
  return 0

