#!/bin/bash
# Regression guard (make check-insn; contrib/run-tests runs it): counts the
# instructions mrlease adds to each UCP operation on this machine, plain UCX
# and mrlease in the same run (bench/bench_insn.sh native: UCP tag_lat,
# put_lat, am_lat, tag_bw over shared memory and self, in loopback), and FAILS
# if any operation gets more than MRL_INSN_BOUND instructions (default 12)
# added by mrlease, or if the plugin did not interpose at all. Instruction
# counts, not time: the machine's load does not change the verdict.
#
# Why 12: the catch-up wrapper's fast path has no stack frame: two loads, two
# tests and a tail jump, 6-9 instructions per operation as counted (valgrind
# 3.19, gcc 12, UCX 1.13.1, Debian 12; docs/overhead.md). A change that makes
# the catch-up do real work when nothing is pending (a frame, a lock, a clock
# read, a second check) costs more than the 3-6 instructions of slack.
#
#   insn_guard.sh BUILD_DIR [OUT_DIR]
set -uo pipefail
build=${1:?usage: insn_guard.sh BUILD_DIR [OUT_DIR]}
out=${2:-$build/insn-guard}
bound=${MRL_INSN_BOUND:-12}
here=$(cd "$(dirname "$0")" && pwd)

rm -rf "$out"
MRL_INSN_ITERS=${MRL_INSN_ITERS:-1000} "$here/bench_insn.sh" "$build" "$out" native ||
    { echo "insn_guard: FAILED: the measurement itself failed (above)" >&2; exit 1; }
awk -F, -v bound="$bound" '
    /^#/ || /^bench,/ { next }
    {
        ++rows
        name = $1; added = $6; calls = $8
        # one call per operation (start-up and tear-down polls make it
        # 0.99-1.01); none at all means the preload did not take
        if (calls < 0.5) {
            printf "insn_guard: FAILED: %s: %.2f calls into mrlease per operation: the plugin did not interpose UCP\n", name, calls
            bad = 1
        } else if (added > bound) {
            printf "insn_guard: FAILED: %s: mrlease adds %.1f instructions per operation, more than the bound of %d\n", name, added, bound
            bad = 1
        } else {
            printf "insn_guard: ok: %s: mrlease adds %.1f instructions per operation (bound %d)\n", name, added, bound
        }
    }
    END {
        if (rows < 4) { printf "insn_guard: FAILED: %d of 4 measurements\n", rows; exit 1 }
        exit bad
    }' "$out/insn.csv"
