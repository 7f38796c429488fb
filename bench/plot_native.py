#!/usr/bin/env python3
"""Plot bench_native.sh's CSV: nanoseconds per UCP operation over shared
memory, plain UCX against mrlease, every round a dot, the median a bar.

    plot_native.py NATIVE_CSV PNG_OUT
"""
import csv
import statistics
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    machine = ''
    with open(sys.argv[1]) as f:
        lines = f.readlines()
    for line in lines:
        if line.startswith('# machine,'):
            machine = line[len('# machine,'):].strip().replace(',', ', ')
    rows = list(csv.DictReader(l for l in lines if not l.startswith('#')))
    if not rows:
        sys.exit('plot_native: no rows in %s' % sys.argv[1])
    benches = list(dict.fromkeys(r['bench'] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(benches)), 4.5))
    for i, b in enumerate(benches):
        for off, variant, color in ((-0.2, 'plain', 'C0'), (0.2, 'mrlease', 'C1')):
            v = [float(r['ns_per_op']) for r in rows
                 if r['bench'] == b and r['variant'] == variant]
            if not v:
                continue
            med = statistics.median(v)
            ax.bar(i + off, med, 0.4, color=color, alpha=0.6,
                   label=variant if i == 0 else None)
            ax.plot([i + off] * len(v), v, 'k.', markersize=4)
            ax.annotate('%.0f' % med, (i + off, med), ha='center', va='bottom', fontsize=7)
    ax.set_xticks(range(len(benches)))
    ax.set_xticklabels(benches)
    ax.set_ylabel('ns per operation (half round trip), dots: rounds')
    ax.set_title('UCP over shared memory, plain UCX vs mrlease\n%s' % machine, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)
    print('plot: %s' % sys.argv[2])


if __name__ == '__main__':
    main()
