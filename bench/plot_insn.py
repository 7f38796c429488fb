#!/usr/bin/env python3
"""Plot bench_insn.sh's CSV: instructions per operation, plain UCX against
mrlease, one pair of bars per benchmark, with what mrlease itself executed.

    plot_insn.py INSN_CSV PNG_OUT
"""
import csv
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    machine, rows = '', []
    with open(sys.argv[1]) as f:
        for line in f:
            if line.startswith('# machine,'):
                machine = line[len('# machine,'):].strip().replace(',', ', ')
            elif not line.startswith('#'):
                break
        f.seek(0)
        rows = list(csv.DictReader(l for l in f if not l.startswith('#')))
    if not rows:
        sys.exit('plot_insn: no rows in %s' % sys.argv[1])
    labels = ['%s\n(%s)' % (r['bench'], r['mode']) for r in rows]
    plain = [float(r['plain_insn_per_op']) for r in rows]
    mrl = [float(r['mrlease_insn_per_op']) for r in rows]
    added = [float(r['added_per_op']) for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4.5))
    ax.bar([i - 0.2 for i in x], plain, 0.4, label='plain UCX')
    ax.bar([i + 0.2 for i in x], mrl, 0.4, label='mrlease (total)')
    ax.bar([i + 0.2 for i in x], added, 0.4, label='executed by mrlease', color='black')
    for i in x:
        pct = 100 * added[i] / plain[i] if plain[i] else 0
        ax.annotate('%+.1f (%+.1f%%)' % (added[i], pct), (i + 0.2, mrl[i]),
                    ha='center', va='bottom', fontsize=7)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel('instructions per operation (callgrind)')
    ax.set_title('Instructions per operation, plain UCX vs mrlease\n%s' % machine,
                 fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)
    print('plot: %s' % sys.argv[2])


if __name__ == '__main__':
    main()
