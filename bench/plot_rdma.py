#!/usr/bin/env python3
"""Plot bench-rdma.csv: python3 bench/plot_rdma.py bench-rdma.csv out.png

One bar per benchmark: mrlease's overhead against plain UCX in the same
guest run, in percent, positive = mrlease is worse (lower bandwidth, longer
time), with the 1% target band. Each row also says both values; a row where
plain UCX has no valid value (wrong bytes under churn) says so."""
import csv
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

machine, values, units, order = "", {}, {}, []
with open(sys.argv[1]) as f:
    for line in f:
        if line.startswith("# machine"):
            machine = line.strip()[len("# machine,"):].replace(",", ", ").replace(",  ", ", ")
            continue
        if line.startswith("bench,") or not line.strip():
            continue
        bench, variant, value, unit = next(csv.reader([line]))
        if bench not in values:
            order.append(bench)
            values[bench] = {}
        values[bench][variant] = value
        units[bench] = unit
if not order:
    sys.exit(f"plot_rdma: no rows in {sys.argv[1]}")


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


overheads, notes = [], []
for b in order:
    unit = units[b]
    plain, mrl = values[b].get("plain", "?"), values[b].get("mrlease", "?")
    p, m = number(plain), number(mrl)
    if p and m:
        higher_is_better = unit.endswith("/s")
        overheads.append(100.0 * ((p / m) if higher_is_better else (m / p)) - 100.0)
        notes.append(f"plain {plain} {unit}, mrlease {mrl} {unit}")
    else:
        overheads.append(None)
        notes.append(f"plain: {plain} bytes, no valid {unit}; mrlease: {mrl} {unit}")

fig, ax = plt.subplots(figsize=(12, 0.55 * len(order) + 1.8))
fig.subplots_adjust(left=0.33, right=0.97, top=0.86, bottom=0.2)
y = list(range(len(order)))
span = max([3.0] + [abs(o) * 1.3 for o in overheads if o is not None])
ax.axvspan(-1, 1, color="tab:green", alpha=0.15, label="within 1% of plain UCX")
ax.axvline(0, color="black", linewidth=0.8)
for i, (o, note) in enumerate(zip(overheads, notes)):
    if o is None:
        ax.text(-span * 0.95, i, note, va="center", fontsize=8, color="tab:red")
    else:
        ax.barh(i, o, 0.5, color="tab:blue" if abs(o) <= 1 else "tab:orange")
        ax.text(-span * 0.95, i + 0.32, f"{o:+.2f}%   ({note})", va="center", fontsize=8)
ax.set_yticks(y, [f"{b}" for b in order], fontsize=8)
ax.set_ylim(len(order) - 0.4, -0.6)  # top to bottom, with room for the notes
ax.set_xlim(-span, span)
ax.set_xlabel("mrlease overhead against plain UCX, % (positive = slower)")
ax.legend(loc="lower right", fontsize=8)
ax.set_title(f"bench-rdma, one guest run\n{machine}", fontsize=9)
fig.savefig(sys.argv[2], dpi=90)
print(f"plot: {sys.argv[2]}")
