#!/usr/bin/env python3
"""Plot bench-engine.csv: python3 bench/plot_engine.py bench-engine.csv out.png"""
import csv
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows, machine = [], ""
with open(sys.argv[1]) as f:
    for line in f:
        if line.startswith("# machine"):
            machine = line.strip()[len("# machine,"):].replace(",", ", ")
        elif not line.startswith("bench,"):
            rows.append(next(csv.reader([line])))

fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
idle = {r[1]: float(r[3]) for r in rows if r[0] == "idle_progress"}
ax[0].bar(list(idle), list(idle.values()), color=["grey", "tab:blue", "tab:green"])
ax[0].set_ylabel("ns per call")
ax[0].set_title("idle progress")
ax[0].tick_params(axis="x", labelrotation=15)

p50 = {r[1]: float(r[3]) / 1e3 for r in rows if r[0] == "munmap_1MiB_p50"}
p99 = {r[1]: float(r[3]) / 1e3 for r in rows if r[0] == "munmap_1MiB_p99"}
x = range(len(p50))
ax[1].bar([i - 0.2 for i in x], list(p50.values()), 0.4, label="p50")
ax[1].bar([i + 0.2 for i in x], [p99[k] for k in p50], 0.4, label="p99")
ax[1].set_xticks(list(x), list(p50), rotation=15)
ax[1].set_ylabel("us")
ax[1].set_title("munmap of a leased 1 MiB range")
ax[1].legend()

for name, label in (("dispatch_one_of_n", "one event, 1 of N leases (ns/event)"),
                    ("dispatch_all_per_lease", "one event, all N leases (ns/lease)")):
    pts = sorted((int(r[2]), float(r[3])) for r in rows if r[0] == name)
    ax[2].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
ax[2].set_xscale("log")
ax[2].set_yscale("log")
ax[2].set_xlabel("leases N")
ax[2].set_title("dispatch")
ax[2].legend()
fig.suptitle(machine, fontsize=9)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=90)
print(f"plot: {sys.argv[2]}")
