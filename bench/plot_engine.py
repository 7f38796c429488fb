#!/usr/bin/env python3
"""Plot bench-engine.csv: python3 bench/plot_engine.py bench-engine.csv out.png

Idle progress, munmap of a leased 1 MiB range, dispatch at 10^3..10^5 leases,
change-to-visible and event-to-restored latency per monitor (p50/p99), and
engine bytes per lease against the 128 B goal. docs/benchmarks.md."""
import csv
import re
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows, machine = [], ""
with open(sys.argv[1]) as f:
    for line in f:
        if line.startswith("# machine"):
            machine = re.sub(r",\s*", ", ", line.strip()[len("# machine,"):])
        elif not line.startswith("bench,"):
            rows.append(next(csv.reader([line])))

fig, axes = plt.subplots(2, 3, figsize=(15, 9))
ax = axes[0]
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

for name, label in (("dispatch_one_of_n", "1 of N leases (ns/event)"),
                    ("dispatch_all_per_lease", "all N leases (ns/lease)")):
    for variant in sorted({r[1] for r in rows if r[0] == name}):
        pts = sorted((int(r[2]), float(r[3])) for r in rows
                     if r[0] == name and r[1] == variant)
        ax[2].plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                   label="%s, %s" % (variant, label))
ax[2].set_xscale("log")
ax[2].set_yscale("log")
ax[2].set_xlabel("leases N")
ax[2].set_title("dispatch")
ax[2].legend()
lat = {}
for r in rows:
    if r[0].startswith(("change_to_visible", "event_to_restored")):
        lat.setdefault(r[1], {})[r[0]] = float(r[3]) / 1e3
names = ("change_to_visible_p50", "change_to_visible_p99",
         "event_to_restored_p50", "event_to_restored_p99")
for i, name in enumerate(names):
    axes[1][0].bar([j + (i - 1.5) * 0.2 for j in range(len(lat))],
                   [lat[m].get(name, 0) for m in lat], 0.2, label=name.replace("_", " "))
axes[1][0].set_xticks(list(range(len(lat))), list(lat))
axes[1][0].set_yscale("log")
axes[1][0].set_ylabel("us")
axes[1][0].set_title("latency of a 1 MiB munmap, per monitor")
axes[1][0].legend(fontsize=7)

per = {r[1]: float(r[3]) for r in rows if r[0] == "bytes_per_lease"}
axes[1][1].bar(list(per), list(per.values()), color="tab:blue")
axes[1][1].axhline(128, color="tab:red", linestyle="--", label="goal: 128 B")
axes[1][1].set_ylabel("bytes per lease (malloc, 10^5 leases)")
axes[1][1].set_title("engine memory per lease")
axes[1][1].tick_params(axis="x", labelrotation=10)
axes[1][1].legend()
axes[1][2].set_axis_off()
# The guest's CSV (make bench-rdma) has only the munmap and latency rows:
# say so in the panels it leaves empty instead of drawing empty axes.
dispatch = [r for r in rows if r[0].startswith("dispatch_")]
for a, empty in ((ax[0], not idle), (ax[1], not p50), (ax[2], not dispatch),
                 (axes[1][0], not lat), (axes[1][1], not per)):
    if empty:
        a.clear()
        a.set_axis_off()
        a.text(0.5, 0.5, "not measured in this run\n(make bench on the host has it)",
               ha="center", va="center", transform=a.transAxes, color="grey")
fig.suptitle(machine, fontsize=9)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=90)
print(f"plot: {sys.argv[2]}")
