#!/bin/bash
# Instructions per operation, plain UCX against UCX with mrlease
# (libuct_ib_lease preloaded, UCX_IB_LEASE_ENABLE=y): counted by valgrind's
# callgrind on ucx_perftest, so neither load nor software emulation blurs them.
#
#   bench_insn.sh BUILD_DIR OUT_DIR [native|guest]
#
# native (the default without rxe devices): UCP over shared memory and self
#   on this machine, tag_lat, ucp_put_lat, ucp_am_lat, tag_bw, in loopback
#   (-l: one process, so every count is the same from run to run).
# guest (the default with rxe0): in the soft-RoCE guest, UCT rc_verbs put_bw,
#   get, am_bw and UCP tag_lat/tag_bw over rc_verbs, in loopback on rxe1 and,
#   with MRL_INSN_PAIR=y, also as a server on rxe0 with the counted client on
#   rxe1 (twice as long; under TCG each counted run takes a minute or two; the
#   client's polling and start-up then differ between the N and 2N runs by
#   more than an operation costs: for looking at callgrind's files only).
#
# Each case runs N and 2N iterations (MRL_INSN_ITERS, default 2000 native and
# 500 in the guest, where start-up under valgrind and TCG dominates; warm-up
# 10 in both) and takes the difference, which cancels start-up and tear-down:
# what is left is N operations. Per operation it reports
#   plain, mrlease  instructions in UCX (libucp, libuct, transports) and the
#                   verbs libraries, for mrlease plus what it added;
#   added           what mrlease itself executed (bench/insn_count.py: calls
#                   into the plugin less what they forwarded to UCX), exact;
#   calls           calls into mrlease per operation, and added per call.
# The whole process's counts go to the CSV only: they also hold libucs's
# timer thread and the benchmark's reporting, which follow the clock. Between
# two processes the client polls while it waits, so the totals (and the calls
# into mrlease's progress wrapper) depend on timing; added per call does not.
# Writes OUT_DIR/insn.csv and keeps callgrind's files in OUT_DIR.
set -uo pipefail
build=${1:?usage: bench_insn.sh BUILD_DIR OUT_DIR [native|guest]}
out=${2:?usage: bench_insn.sh BUILD_DIR OUT_DIR [native|guest]}
set_=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
lib=$build/src/uct_ib_lease/.libs/libuct_ib_lease.so
py=/usr/bin/python3
port=$((26000 + $$ % 4000))

die() { echo "bench_insn: $*" >&2; exit 1; }
[ -f "$lib" ] || die "no $lib (build first)"
command -v valgrind > /dev/null || die "valgrind is not installed (contrib/install-deps installs it)"
command -v ucx_perftest > /dev/null || die "no ucx_perftest (ucx-utils)"
if [ -z "$set_" ]; then
    if [ -e /sys/class/infiniband/rxe0 ]; then set_=guest; else set_=native; fi
fi
n=${MRL_INSN_ITERS:-$([ "$set_" = guest ] && echo 500 || echo 2000)}
mkdir -p "$out" || die "cannot create $out"
csv=$out/insn.csv
export UCX_IB_GID_INDEX=0

# count TAG VARIANT ITERS MODE ENV... -- PERFTEST_ARGS... -> "total added calls"
count() {
    local tag=$1 variant=$2 iters=$3 mode=$4; shift 4
    local envs=() file=$out/cg.$tag.$variant.$iters
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    [ "$variant" = mrlease ] &&
        envs+=(LD_PRELOAD="$lib" UCX_IB_LEASE_ENABLE=y UCX_IB_LEASE_SUMMARY=n)
    # no address randomization: start-up (ld.so, /proc/self/maps) then costs
    # the same every run, and the difference of two runs is the operations
    local vg=(setarch -R valgrind --tool=callgrind --callgrind-out-file="$file")
    rm -f "$file"
    if [ "$mode" = loop ]; then
        env "${envs[@]}" timeout 900 "${vg[@]}" ucx_perftest -l "$@" -n "$iters" -w 10 \
            > "$file.log" 2>&1 || { echo "FAILED $file.log"; return; }
    else
        port=$((port + 1))
        local senv=() e
        for e in "${envs[@]}"; do senv+=("${e/rxe1:1/rxe0:1}"); done
        env "${senv[@]}" timeout 900 ucx_perftest "${@/rxe1:1/rxe0:1}" -n "$iters" -w 10 \
            -p $port > "$file.server.log" 2>&1 &
        local spid=$!
        sleep 1
        env "${envs[@]}" timeout 900 "${vg[@]}" ucx_perftest 127.0.0.1 "$@" -n "$iters" \
            -w 10 -p $port > "$file.log" 2>&1 || { wait $spid; echo "FAILED $file.log"; return; }
        wait $spid || { echo "FAILED $file.server.log"; return; }
    fi
    "$py" "$here/insn_count.py" "$file" | awk '{print $2, $4, $6, $8}'
}

# one NAME MODE ENV... -- ARGS...: N and 2N, plain and mrlease; prints a row
one() {
    local name=$1 mode=$2; shift 2
    local tag=${name//[^a-zA-Z0-9_]/_}.$mode v r res=()
    for v in plain mrlease; do
        for r in $n $((2 * n)); do
            local c
            c=$(count "$tag" $v $r $mode "$@")
            case "$c" in
            FAILED*) echo "bench_insn: $name ($mode, $v, $r iterations): ${c#FAILED }:" >&2
                     tail -n 5 "${c#FAILED }" >&2; status=1; return ;;
            esac
            res+=($c)
        done
    done
    # res: plain(N) total added calls ucx, plain(2N) ..., mrlease(N) ..., mrlease(2N) ...
    awk -v n="$n" -v name="$name" -v mode="$mode" -v csv="$csv" -v r="${res[*]}" 'BEGIN {
        split(r, x, " ")
        pt = (x[5] - x[1]) / n; mt = (x[13] - x[9]) / n     # whole process
        pu = (x[8] - x[4]) / n; mu = (x[16] - x[12]) / n    # UCX and verbs
        a = (x[14] - x[10]) / n; c = (x[15] - x[11]) / n    # mrlease
        pc = (pu > 0) ? 100 * a / pu : 0; apc = (c > 0) ? a / c : 0
        printf "%-26s %-4s %8.1f %8.1f %7.1f %6.2f%% %5.2f %6.1f\n",
               name, mode, pu, mu + a, a, pc, c, apc
        printf "\"%s\",%s,%d,%.2f,%.2f,%.2f,%.3f,%.3f,%.2f,%.2f,%.2f\n",
               name, mode, n, pu, mu + a, a, pc, c, apc, pt, mt >> csv
    }'
}

{
    if [ "$set_" = guest ]; then
        echo "# machine,QEMU TCG guest (soft-RoCE rxe) on ${MRL_BENCH_HOST_CPU:-an unnamed host},$(nproc) guest CPUs,Linux $(uname -r),UCX $(ucx_info -v | awk 'NR == 1 {print $NF}'),$(valgrind --version)"
    else
        echo "# machine,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),$(nproc) cores,Linux $(uname -r),UCX $(ucx_info -v | awk 'NR == 1 {print $NF}'),$(valgrind --version)"
    fi
    echo "bench,mode,iters,plain_insn_per_op,mrlease_insn_per_op,added_per_op,added_pct,calls_per_op,added_per_call,plain_process_per_op,mrlease_process_per_op"
} > "$csv"
printf '%-26s %-4s %8s %8s %7s %7s %5s %6s\n' "instructions per op" mode \
    plain mrlease added "added%" calls "/call"
status=0
if [ "$set_" = guest ]; then
    [ -e /sys/class/infiniband/rxe0 ] && [ -e /sys/class/infiniband/rxe1 ] ||
        die "guest set: no rxe0/rxe1 (run it through contrib/guest-run)"
    uct=(-d rxe1:1 -x rc_verbs)
    ucp=(UCX_TLS=rc_verbs,ud_verbs UCX_NET_DEVICES=rxe1:1)
    modes=loop
    [ "${MRL_INSN_PAIR:-n}" = y ] && modes="loop pair"
    for mode in $modes; do
        # loopback runs on one device: rxe1 stands for both ends
        one "rc_verbs put_bw short 8 B" $mode -- "${uct[@]}" -t put_bw -D short -s 8
        # rc_verbs has no zero-copy get below 65 bytes
        one "rc_verbs get zcopy 4 KiB" $mode -- "${uct[@]}" -t get -D zcopy -s 4096
        one "rc_verbs am_bw short 8 B" $mode -- "${uct[@]}" -t am_bw -D short -s 8
        one "UCP tag_lat 8 B" $mode "${ucp[@]}" -- -t tag_lat -s 8
        one "UCP tag_bw 8 B" $mode "${ucp[@]}" -- -t tag_bw -s 8
    done
else
    shm=(UCX_TLS=${MRL_INSN_TLS:-posix,self})
    one "UCP tag_lat 8 B" loop "${shm[@]}" -- -t tag_lat -s 8
    one "UCP put_lat 8 B" loop "${shm[@]}" -- -t ucp_put_lat -s 8
    one "UCP am_lat 8 B" loop "${shm[@]}" -- -t ucp_am_lat -s 8
    one "UCP tag_bw 8 B" loop "${shm[@]}" -- -t tag_bw -s 8
fi
echo "(per operation, from $n and $((2 * n)) iterations. plain, mrlease: in UCX's libucp, libuct"
echo " and transports and in the verbs libraries, within 2% from run to run in loopback; added:"
echo " executed by mrlease (calls into it less what they forwarded), within 1 instruction; calls:"
echo " into mrlease, and added per call. The CSV also has the whole process's counts, which hold"
echo " libucs's timer thread, clock calibration and the benchmark's reporting: no measure of cost)"
echo "CSV: $csv"
exit $status
