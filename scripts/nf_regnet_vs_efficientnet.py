#!/usr/bin/env python
"""NF-RegNets vs EfficientNets B0-B5: the table and figure of docs/studies/.

    python scripts/nf_regnet_vs_efficientnet.py \
        [--out_png docs/figures/nf_regnet_vs_efficientnet.png] [--print]

Reads the published values (docs/figures/nf_regnet_vs_efficientnet.json:
EfficientNet's FLOPs / params / top-1 from the papers' tables, NF-RegNet
FLOPs and top-1 read off the NF-ResNet paper's plot) and our official-rule
FLOPs and parameter counts at each variant's test resolution
(docs/figures/zoo.json, written by nfnet-model-table), prints the Markdown
table the page shows and draws top-1 against FLOPs. Nothing is trained or
evaluated here: the top-1 values are the papers'.
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = os.path.join(REPO, 'docs', 'figures', 'nf_regnet_vs_efficientnet.json')
ZOO = os.path.join(REPO, 'docs', 'figures', 'zoo.json')
VARIANTS = ('B0', 'B1', 'B2', 'B3', 'B4', 'B5')


def load(published=PUBLISHED, zoo=ZOO):
  """Rows joining the published values with our zoo counts (B0-B5)."""
  with open(published) as f:
    pub = {r['variant']: r for r in json.load(f)['rows']}
  with open(zoo) as f:
    ours = {r['variant']: r for r in json.load(f)['rows'] if r['name'] == 'NFRegNet'}
  missing = [v for v in VARIANTS if v not in pub or v not in ours]
  if missing:
    raise ValueError(f'variants {missing} missing from {published} or {zoo}')
  rows = []
  for v in VARIANTS:
    row = dict(pub[v])
    row.update(resolution=ours[v]['resolution'], our_gflops=ours[v]['official_gmacs'],
               our_params_m=ours[v]['params'] / 1e6)
    rows.append(row)
  return rows


HEADER = (
    '| variant | test res (px) | NF-RegNet FLOPs (G), ours: official rule [1] '
    '| NF-RegNet FLOPs (G), read off the plot [2] | ours / plot '
    '| NF-RegNet params (M), ours [1] | NF-RegNet top-1 (%), read off the plot [2] '
    '| EfficientNet FLOPs (G) [3] | EfficientNet params (M) [3] | EfficientNet top-1 (%) [3] '
    '| NF-RegNet minus EfficientNet top-1 (points) [2]-[3] |')


def markdown(rows) -> str:
  """The comparison table (sources: the numbered notes under it)."""
  lines = [HEADER, '|' + '---|' * HEADER.count(' | ') + '---|']
  for r in rows:
    lines.append(
        f"| {r['variant']} | {r['resolution']} | {r['our_gflops']:.2f} "
        f"| {r['nf_regnet_gflops_read_off']:.2f} "
        f"| {r['our_gflops'] / r['nf_regnet_gflops_read_off']:.3f} "
        f"| {r['our_params_m']:.1f} | {r['nf_regnet_top1_read_off']:.1f} "
        f"| {r['efficientnet_gflops']:g} | {r['efficientnet_params_m']:g} "
        f"| {r['efficientnet_top1']:.1f} "
        f"| {r['nf_regnet_top1_read_off'] - r['efficientnet_top1']:+.1f} |")
  notes = [
      '',
      '[1] nfnet_jax, `docs/figures/zoo.json` (`nfnet-model-table`): multiply-adds by '
      "DeepMind's `count_flops` rule at the variant's test resolution; parameters "
      'counted from the built model (1000 classes).',
      "[2] NF-ResNet paper (Brock, De & Smith 2021), ImageNet top-1 vs FLOPs figure: "
      '**read off the plot** (REFERENCE.md; uncertainty about ±0.05 points), not a '
      'table value.',
      '[3] Published tables (EfficientNet, Tan & Le 2019; B0/B3/B4/B5 also in the '
      "NFNet paper's Table 3), as REFERENCE.md transcribes them.",
  ]
  return '\n'.join(lines + notes) + '\n'


def plot(rows, path: str) -> None:
  """Top-1 vs FLOPs (log x): EfficientNet (published), NF-RegNet (read off) at our and the plot's FLOPs."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7.0, 4.8))
  ax.plot([r['efficientnet_gflops'] for r in rows], [r['efficientnet_top1'] for r in rows],
          'o-', color='C0', label='EfficientNet B0-B5 (published tables)')
  ax.plot([r['nf_regnet_gflops_read_off'] for r in rows],
          [r['nf_regnet_top1_read_off'] for r in rows], 's-', color='C3',
          label='NF-RegNet B0-B5 (FLOPs and top-1 read off the NF-ResNet paper plot)')
  ax.plot([r['our_gflops'] for r in rows], [r['nf_regnet_top1_read_off'] for r in rows], 'x',
          color='k', markersize=8,
          label="NF-RegNet at nfnet_jax's FLOPs (official rule), same top-1")
  for r in rows:
    ax.annotate(r['variant'], (r['efficientnet_gflops'], r['efficientnet_top1']),
                textcoords='offset points', xytext=(-16, 4), fontsize=8, color='C0')
    ax.annotate(r['variant'], (r['nf_regnet_gflops_read_off'], r['nf_regnet_top1_read_off']),
                textcoords='offset points', xytext=(4, -10), fontsize=8, color='C3')
  ax.set_xscale('log')
  ax.set_xlabel('FLOPs (G multiply-adds, test resolution)')
  ax.set_ylabel('ImageNet top-1 (%)')
  ax.set_title('NF-RegNets vs EfficientNets (published accuracies; no training here)')
  ax.grid(alpha=0.3, which='both')
  ax.legend(fontsize=8, loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out_png', default=os.path.join(REPO, 'docs', 'figures',
                                                   'nf_regnet_vs_efficientnet.png'))
  p.add_argument('--no_png', action='store_true', help='print the table only')
  args = p.parse_args(argv)
  try:
    rows = load()
  except (OSError, ValueError, KeyError) as e:
    print(f'nf_regnet_vs_efficientnet.py: {e}', file=sys.stderr)
    return 2
  print(markdown(rows), end='')
  if not args.no_png:
    plot(rows, args.out_png)
    print(f'[figure] wrote {args.out_png}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
