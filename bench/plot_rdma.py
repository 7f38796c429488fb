#!/usr/bin/env python3
"""Tables and plots of make bench-rdma: python3 bench/plot_rdma.py OUT_DIR

Reads OUT_DIR/bench-rdma.csv (one row per stack, round and point; written by
bench/bench_rdma.sh in the guest), OUT_DIR/bench-regcost-guest.csv and, when
there, OUT_DIR/bench-regcost-host.csv. Prints per benchmark and point the
three stacks' bandwidth (median over rounds), the ratios mrlease/plain and
mrlease/cache-off of the same round with their spread (min/median/max over
rounds), registrations and CPU time per message, and wrong bytes; writes
OUT_DIR/bench-rdma-summary.csv, one PNG per benchmark
(OUT_DIR/bench-rdma-KIND-TEST.png) and OUT_DIR/bench-regcost.png.
docs/benchmarks.md says what each figure means."""
import csv
import math
import os
import re
import statistics
import sys
import textwrap
from collections import defaultdict

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

STACKS = ("plain", "cacheoff", "mrlease")
COLORS = {"plain": "tab:grey", "cacheoff": "tab:orange", "mrlease": "tab:blue"}
LABELS = {"plain": "plain UCX (cache on, incoherent)",
          "cacheoff": "UCX cache off (UCX_IB_REG_METHODS=direct)",
          "mrlease": "mrlease (coherent, cached)"}
# Published line rates (IBTA InfiniBand Architecture Specification, Vol. 2,
# data rates; NVIDIA ConnectX-6/-7 product briefs): bytes per second of data.
LINKS = (("EDR 100 Gb/s", 100e9 / 8), ("HDR 200 Gb/s", 200e9 / 8),
         ("NDR 400 Gb/s", 400e9 / 8))


def number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_rows(path):
    machine, rows, peaks = "", [], []
    with open(path) as f:
        for line in f:
            if line.startswith("# machine,"):
                machine = re.sub(r",\s*", ", ", line.strip()[len("# machine,"):])
            elif line.startswith("# mrlease.ko,"):
                machine += "; mrlease.ko " + line.strip()[len("# mrlease.ko,"):]
            elif line.startswith("# peak_registered,"):
                peaks.append(line.strip()[2:].split(","))
            elif line.startswith("#") or line.startswith("kind,") or not line.strip():
                continue
            else:
                rows.append(next(csv.reader([line])))
    return machine, rows, peaks


def spread(values, positive=False):
    """min, median, max of the values there are (POSITIVE: and above 0: a
    bandwidth of 0 is one too small to print)"""
    values = [v for v in values if v is not None and (v > 0 or not positive)]
    if not values:
        return None
    return min(values), statistics.median(values), max(values)


def fmt_spread(s, digits=3):
    if s is None:
        return "n/a"
    return f"{s[1]:.{digits}f} [{s[0]:.{digits}f}..{s[2]:.{digits}f}]"


def summarize(rows):
    """(kind, test, n, size) -> stack -> round -> dict of numbers"""
    points = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        kind, test, stack, rnd, n, size = r[0], r[1], r[2], r[3], int(r[4]), int(r[5])
        points[(kind, test, n, size)][stack][rnd] = {
            "bw": number(r[8]), "us": number(r[7]), "cpu": number(r[9]),
            "regs": number(r[10]), "wrong": number(r[11]) or 0}
    return points


def main():
    out = sys.argv[1]
    machine, rows, peaks = read_rows(os.path.join(out, "bench-rdma.csv"))
    if not rows:
        # the parts that write their own CSV may have run alone
        # (MRL_BENCH_PARTS="pinned catchup")
        found = pinned(out) + catchup(out)
        if not found:
            sys.exit(f"plot_rdma: no rows in {out}/bench-rdma.csv")
        return
    points = summarize(rows)
    summary = open(os.path.join(out, "bench-rdma-summary.csv"), "w")
    summary.write(f"# machine,{machine}\n")
    summary.write("kind,test,n,size,stack,MB_per_s_median,MB_per_s_min,MB_per_s_max,"
                  "cpu_us_per_op_median,regs_per_op_median,wrong_bytes_total,"
                  "ratio_vs_plain_min,ratio_vs_plain_median,ratio_vs_plain_max,"
                  "ratio_vs_cacheoff_min,ratio_vs_cacheoff_median,ratio_vs_cacheoff_max\n")
    print(f"# machine: {machine}")
    benches = sorted({(k[0], k[1]) for k in points})
    for kind, test in benches:
        keys = sorted(k for k in points if k[:2] == (kind, test))
        print(f"\n## {kind} {test}: MB/s median over rounds; ratios of the same round "
              "median [min..max]; regs and CPU per message; wrong bytes (all rounds)")
        print(f"{'N':>4} {'size':>8} | {'plain':>8} {'cacheoff':>8} {'mrlease':>8} | "
              f"{'mrlease/plain':>24} {'mrlease/cacheoff':>24} | {'regs/msg p c m':>16} | "
              f"{'cpu us/msg p c m':>22} | wrong p c m")
        for key in keys:
            st = points[key]
            med = {s: spread([v["bw"] for v in st[s].values()], True) for s in STACKS}
            ratios = {}
            for base in ("plain", "cacheoff"):
                ratios[base] = spread([st["mrlease"][r]["bw"] / st[base][r]["bw"]
                                       for r in st["mrlease"] if r in st[base]
                                       and st["mrlease"][r]["bw"] and st[base][r]["bw"]])
            regs = {s: spread([v["regs"] for v in st[s].values()]) for s in STACKS}
            cpu = {s: spread([v["cpu"] for v in st[s].values()]) for s in STACKS}
            wrong = {s: int(sum(v["wrong"] for v in st[s].values())) for s in STACKS}

            def m(d, s, digits):
                return f"{d[s][1]:.{digits}f}" if d.get(s) else "-"
            print(f"{key[2]:>4} {key[3]:>8} | " +
                  " ".join(f"{m(med, s, 2):>8}" for s in STACKS) + " | " +
                  f"{fmt_spread(ratios['plain']):>24} {fmt_spread(ratios['cacheoff']):>24} | " +
                  " ".join(f"{m(regs, s, 2):>5}" for s in STACKS) + " | " +
                  " ".join(f"{m(cpu, s, 0):>7}" for s in STACKS) + " | " +
                  " ".join(str(wrong[s]) for s in STACKS))
            for s in STACKS:
                blank = ("", "", "")
                bw = (med[s][1], med[s][0], med[s][2]) if med[s] else blank
                rp = ratios["plain"] if (s == "mrlease" and ratios["plain"]) else blank
                rc = ratios["cacheoff"] if (s == "mrlease" and ratios["cacheoff"]) else blank
                fields = (kind, test, key[2], key[3], s, *bw,
                          cpu[s][1] if cpu[s] else "", regs[s][1] if regs[s] else "",
                          wrong[s], *rp, *rc)
                summary.write(",".join(f"{x:.4g}" if isinstance(x, float) else str(x)
                                       for x in fields) + "\n")
        plot_bench(out, machine, kind, test, keys, points)
    summary.close()
    if peaks:
        print("\n## most bytes registered at once per rank (reg_counter), against the "
              "rank's buffers")
        for p in peaks:
            print("  " + ", ".join(p[1:]))
    regcost(out, machine)
    pinned(out)
    catchup(out)
    print(f"\nsummary: {out}/bench-rdma-summary.csv; plots: {out}/bench-rdma-*.png")


def plot_bench(out, machine, kind, test, keys, points):
    ns = sorted({k[2] for k in keys})
    fig, axes = plt.subplots(3, len(ns), figsize=(4.2 * len(ns) + 1, 10), squeeze=False)
    for col, n in enumerate(ns):
        sizes = sorted(k[3] for k in keys if k[2] == n)
        used = [False, False, False]
        for s in STACKS:
            xs, ys, lo, hi, bad, cpu = [], [], [], [], [], []
            for size in sizes:
                sp = spread([v["bw"] for v in points[(kind, test, n, size)][s].values()], True)
                if sp is None:
                    continue
                xs.append(size)
                ys.append(sp[1])
                lo.append(sp[1] - sp[0])
                hi.append(sp[2] - sp[1])
                w = sum(v["wrong"] for v in points[(kind, test, n, size)][s].values())
                if w:
                    bad.append((size, sp[1]))
                c = spread([v["cpu"] for v in points[(kind, test, n, size)][s].values()])
                cpu.append(c[1] if c else float("nan"))
            if xs:
                axes[0][col].errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3,
                                      color=COLORS[s], label=LABELS[s])
                used[0] = True
            if bad:
                axes[0][col].scatter([b[0] for b in bad], [b[1] for b in bad], s=150,
                                     marker="x", color="red", zorder=5,
                                     label=f"{s}: wrong bytes" if col == 0 else None)
            if kind == "mpi" and xs:
                axes[2][col].plot(xs, cpu, marker="o", color=COLORS[s])
                used[2] = True
        for base, style in (("plain", "-"), ("cacheoff", "--")):
            xs, med, lo, hi = [], [], [], []
            for size in sizes:
                st = points[(kind, test, n, size)]
                sp = spread([st["mrlease"][r]["bw"] / st[base][r]["bw"] for r in st["mrlease"]
                             if r in st[base] and st["mrlease"][r]["bw"] and st[base][r]["bw"]])
                if sp:
                    xs.append(size)
                    med.append(sp[1])
                    lo.append(sp[1] - sp[0])
                    hi.append(sp[2] - sp[1])
            if xs:
                axes[1][col].errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3,
                                      linestyle=style, color=COLORS[base],
                                      label=f"mrlease / {base}")
                used[1] = True
        axes[1][col].axhline(1.0, color="black", linewidth=0.8)
        axes[0][col].set_title(f"{kind} {test}, " +
                               ("no change" if n == 0 else f"a change every {n} ops"), fontsize=9)
        for row in range(3):
            if used[row]:
                axes[row][col].set_xscale("log", base=2)
                axes[row][col].set_xlabel("message size (bytes)")
        for row in (0, 2):
            if used[row]:
                axes[row][col].set_yscale("log")
        axes[0][col].set_ylabel("MB/s (median, min-max)")
        axes[1][col].set_ylabel("bandwidth ratio, same round")
        axes[2][col].set_ylabel("rank 0 CPU us per message" if kind == "mpi" else "")
        if kind != "mpi":
            axes[2][col].set_axis_off()
            axes[2][col].text(0.5, 0.5, "(no CPU time from ucx_perftest)", ha="center",
                              transform=axes[2][col].transAxes)
    for row in (0, 1):
        if axes[row][0].get_legend_handles_labels()[0]:
            axes[row][0].legend(fontsize=7)
    fig.suptitle(f"bench-rdma {kind} {test}\n" + textwrap.fill(machine, 110), fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, f"bench-rdma-{kind}-{test}.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def regcost(out, machine):
    data = defaultdict(dict)
    for name in ("bench-regcost-guest.csv", "bench-regcost-host.csv"):
        path = os.path.join(out, name)
        if not os.path.exists(path):
            print(f"(no {path})")
            continue
        with open(path) as f:
            for line in f:
                if line.startswith("regcost,"):
                    _, what, size, us, per_mib = line.strip().split(",")
                    where = "guest" if "guest" in name else "host"
                    data[f"{what} ({where})"][int(size)] = (float(us), float(per_mib))
    if not data:
        return
    fig, ax = plt.subplots(figsize=(9, 5))
    for what in sorted(data):
        sizes = sorted(data[what])
        ax.plot(sizes, [data[what][s][1] for s in sizes], marker="o", label=what)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("bytes")
    ax.set_ylabel("us per MiB (median)")
    ax.legend(fontsize=7)
    ax.set_title("registration cost per MiB\n" + textwrap.fill(machine, 110), fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "bench-regcost.png"), dpi=80)
    plt.close(fig)
    # what the cache-off workaround costs on a real link: host pinning and
    # unpinning (io_uring, the same pin_user_pages(FOLL_LONGTERM) path, 4 KiB
    # pages) against the time the message takes on the wire. A lower bound:
    # the NIC's own translation-table update comes on top.
    pin, unpin = data.get("io_uring_register (host)"), data.get("io_uring_unregister (host)")
    if pin and unpin:
        print("\n## cache off on a real NIC: pin + unpin per message (host, 4 KiB pages) "
              "as a share of the wire time (lower bound)")
        print(f"{'size':>9} {'pin+unpin us':>13} " +
              " ".join(f"{name:>13}" for name, _ in LINKS))
        for size in sorted(pin):
            cost = pin[size][0] + unpin[size][0]
            print(f"{size:>9} {cost:>13.1f} " + " ".join(
                f"{100 * cost / (1e6 * size / rate):>12.0f}%" for _, rate in LINKS))


def csv_rows(path, kind):
    if not os.path.exists(path):
        print(f"(no {path})")
        return []
    with open(path) as f:
        return [r for r in csv.reader(f) if r and r[0] == kind]


def pinned(out):
    """peak bytes registered during one restore, over R (goal: <= R + A)"""
    rows = csv_rows(os.path.join(out, "bench-pinned-guest.csv"), "pinned")
    if not rows:
        return 0
    by, before, after, vmpin = defaultdict(list), defaultdict(list), defaultdict(list), {}
    for _, case, r, a, rnd, peak, over, bef, aft, pin_reg, pin_peak in rows:
        key = (case, int(r), int(a))
        by[key].append(number(over))
        before[key].append(number(bef))
        after[key].append(number(aft))
        vmpin[key] = (int(pin_reg), int(r) // 1024)
    print("\n## bytes registered (pinned) for a range R during one restore of A of it, "
          "over R (median [min..max] over rounds; goal: never more than R + A)")
    print(f"{'case':>8} {'R KiB':>8} {'A KiB':>7} | {'before':>6} {'peak':>22} {'after':>6} "
          f"| {'(R+A)/R':>8} {'met':>4} | VmPin at registering R")
    for key in sorted(by):
        case, r, a = key
        s = spread(by[key])
        goal = (r + a) / r
        met = "yes" if s and s[2] <= goal + 1e-9 else "no"
        pin_reg, r_kib = vmpin[key]
        print(f"{case:>8} {r >> 10:>8} {a >> 10:>7} | {spread(before[key])[1]:>6.2f} "
              f"{fmt_spread(s, 3):>22} {spread(after[key])[1]:>6.2f} | {goal:>8.3f} "
              f"{met:>4} | +{pin_reg} KiB for {r_kib} KiB")
    return len(rows)


def catchup(out):
    """ns per ucp_worker_progress() while a window waits for its memory"""
    rows = csv_rows(os.path.join(out, "bench-catchup-guest.csv"), "catchup")
    if not rows:
        return 0
    by = defaultdict(list)
    for _, phase, rnd, ns in rows:
        by[phase].append(number(ns))
    print("\n## ns per ucp_worker_progress() while a lease is broken (a window "
          "waits for its memory; median [min..max] over rounds)")
    idle = spread(by.get("idle", []))
    for phase in ("idle", "broken", "deregistered"):
        s = spread(by.get(phase, []))
        ratio = f"  ratio to idle {s[1] / idle[1]:.2f}" if s and idle else ""
        print(f"  {phase:>13}: {fmt_spread(s, 1)} ns{ratio}")
    return len(rows)


if __name__ == "__main__":
    main()
