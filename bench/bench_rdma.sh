#!/bin/bash
# RDMA benchmark, inside the soft-RoCE guest (make bench-rdma runs it there):
# three stacks in the same guest, rounds interleaved (the order of the stacks
# rotates from round to round):
#   plain     UCX 1.13 as shipped: registration cache on, not coherent
#   cacheoff  UCX with its cache off (UCX_IB_REG_METHODS=direct): coherent,
#             registers and deregisters per transfer (the users' workaround)
#   mrlease   UCX with libuct_ib_lease preloaded and on: coherent, cached
#
#   bench_rdma.sh BUILD_DIR OUT_DIR
# Writes OUT_DIR/bench-rdma.csv (raw rows, one per run) and
# OUT_DIR/bench-regcost-guest.csv; bench/plot_rdma.py OUT_DIR makes the tables
# and plots from them. Environment (docs/benchmarks.md):
#   MRL_BENCH_ROUNDS  rounds (default 3)
#   MRL_BENCH_SIZES   message sizes (default 8 64 512 4096 32768 262144 1048576 4194304)
#   MRL_BENCH_CHURN   N values for the MPI runs, 0 = no change (default 0 100 10 1)
#   MRL_BENCH_MIB     MiB per point (default 16)
#   MRL_BENCH_PARTS   which parts to run (default "regcost engine pinned catchup
#                     perftest mpi")
#   MRL_BENCH_PINNED  R:A pairs in KiB for the pinned part (default 16384:64 16384:1024)
set -uo pipefail
build=${1:?usage: bench_rdma.sh BUILD_DIR OUT_DIR}
out=${2:?usage: bench_rdma.sh BUILD_DIR OUT_DIR}
lib=$build/src/uct_ib_lease/.libs/libuct_ib_lease.so
counter=$build/bench/.libs/libmrl_reg_counter.so
rounds=${MRL_BENCH_ROUNDS:-3}
sizes=${MRL_BENCH_SIZES:-8 64 512 4096 32768 262144 1048576 4194304}
mib=${MRL_BENCH_MIB:-16}
export MRL_BENCH_SIZES="$sizes" MRL_BENCH_MIB="$mib" MRL_BENCH_CHURN=${MRL_BENCH_CHURN:-0 100 10 1}
export UCX_IB_GID_INDEX=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
csv=$out/bench-rdma.csv
stacks=(plain cacheoff mrlease)
parts=" ${MRL_BENCH_PARTS:-regcost engine pinned catchup perftest mpi} "
part() { [ "${parts#* $1 }" != "$parts" ]; }
port=23000

for f in "$lib" "$counter" "$build/bench/bench_mpi" "$build/bench/bench_regcost" \
         "$build/bench/bench_pinned" "$build/test/rdma/ucp_lifetime"; do
    [ -e "$f" ] || { echo "bench_rdma: $f missing (make bench-rdma builds it)" >&2; exit 2; }
done

# the environment of a stack, as NAME=VALUE words
stack_env() {
    case "$1" in
    plain)    echo "UCX_IB_LEASE_SUMMARY=n" ;;
    cacheoff) echo "UCX_IB_REG_METHODS=direct" ;;
    mrlease)  echo "LD_PRELOAD=$lib UCX_IB_LEASE_ENABLE=y UCX_IB_LEASE_SUMMARY=n" ;;
    esac
}

# the rounds' stack order: rotated each round, so none always goes first
order() { local r=$1 i; for i in 0 1 2; do echo "${stacks[$(((i + r) % 3))]}"; done; }

ops_for() { # SIZE -> operations for MRL_BENCH_MIB MiB, 20..1000
    local n=$((mib * 1048576 / $1))
    [ $n -lt 20 ] && n=20
    [ $n -gt 1000 ] && n=1000
    echo $n
}

# perftest STACK TEST SIZE ROUND: UCT rc_verbs zcopy, rxe1 -> rxe0; one CSV row
perftest() {
    local stack=$1 test=$2 size=$3 round=$4 n bw= try spid
    n=$(ops_for "$size")
    # under load the server may not listen yet: the client retries, and a
    # server that never got its client is killed
    for try in 1 2 3; do
        port=$((port + 1))
        env $(stack_env "$stack") timeout 300 ucx_perftest -d rxe0:1 -x rc_verbs -t "$test" \
            -D zcopy -s "$size" -n "$n" -w 10 -p $port > /dev/null 2>&1 &
        spid=$!
        sleep $((try * 2))
        bw=$(env $(stack_env "$stack") timeout 300 ucx_perftest 127.0.0.1 -d rxe1:1 \
            -x rc_verbs -t "$test" -D zcopy -s "$size" -n "$n" -w 10 -p $port 2>/dev/null |
            awk '/Final:/ {print $7}')
        kill $spid 2> /dev/null
        wait $spid 2> /dev/null
        [ -n "$bw" ] && break
    done
    # columns: kind,test,stack,round,n,size,ops,us_per_op,MB_per_s,cpu,regs,wrong,changes
    # (ucx_perftest's MB/s is MiB/s: converted)
    awk -v t="$test" -v s="$stack" -v r="$round" -v z="$size" -v n="$n" -v bw="${bw:-}" \
        'BEGIN { if (bw !~ /^[0-9.]+$/ || bw == 0) { printf "perftest,%s,%s,%s,0,%s,%s,,,,,,\n", t, s, r, z, n; exit }
                 mb = bw * 1.048576; printf "perftest,%s,%s,%s,0,%s,%s,%.3f,%.3f,,,,\n",
                 t, s, r, z, n, z / mb, mb }' >> "$csv"
}

# mpi STACK ROUND: bench_mpi over every test, N and size; rows to the CSV
mpi() {
    local stack=$1 round=$2 pre=$counter e c=()
    for e in $(stack_env "$stack"); do
        case "$e" in
        LD_PRELOAD=*) pre="${e#LD_PRELOAD=}:$counter" ;;
        *) c+=(-x "$e") ;;
        esac
    done
    c+=(-x UCX_IB_GID_INDEX=0 -x UCX_TLS=rc_verbs,ud_verbs,self -x "LD_PRELOAD=$pre"
        -x MRL_BENCH_SIZES -x MRL_BENCH_CHURN -x MRL_BENCH_MIB)
    timeout 1800 mpirun --mca pml ucx --mca osc ucx --mca btl ^openib,uct,vader \
        -np 1 "${c[@]}" -x UCX_NET_DEVICES=rxe0:1 "$build/bench/bench_mpi" "$stack" "$round" : \
        -np 1 "${c[@]}" -x UCX_NET_DEVICES=rxe1:1 "$build/bench/bench_mpi" "$stack" "$round" \
        2> "$out/mpi-$stack-$round.err" | grep --line-buffered -E '^(mpi,|# peak_registered,)' | tee -a "$csv" |
        awk -F, '/^# peak/ {print "  " $0} /^mpi,/ {printf "  %-8s %-8s N=%-3s %8s B %10.1f us %9.2f MB/s %10.1f us cpu %6s regs %s wrong\n",
                  $2, $3, $5, $6, $8, $9, $10, $11, $12}'
    [ "${PIPESTATUS[0]}" = 0 ] || echo "bench_rdma: bench_mpi on $stack, round $round failed" \
                                       "(see $out/mpi-$stack-$round.err)" >&2
}

# the machine: the host's CPU comes from the host (make bench-rdma passes it),
# the guest sees only QEMU's virtual one
host_cpu=${MRL_BENCH_HOST_CPU:-unknown host CPU}
mtu=$(cat /sys/class/net/veth0/mtu 2>/dev/null || echo '?')
amtu=$(ibv_devinfo -d rxe0 2>/dev/null | awk '/active_mtu/ {print $2; exit}')
machine="$host_cpu host; QEMU TCG guest (soft-RoCE rxe; veth MTU $mtu; rxe active_mtu ${amtu:-?}),$(nproc) guest CPUs,guest Linux $(uname -r),UCX $(ucx_info -v | awk 'NR == 1 {print $NF}'),$(mpirun --version | head -1)"
echo "# machine,$machine" > "$csv"
echo "kind,test,stack,round,n,size,ops,us_per_op,MB_per_s,cpu_us_per_op,regs_per_op,wrong_bytes,changes" >> "$csv"
echo "# machine: $machine"
echo "# $rounds rounds; sizes: $sizes; churn N: $MRL_BENCH_CHURN; $mib MiB per point"

# 1. registration cost, measured directly
if part regcost; then
    echo "# machine,$machine" > "$out/bench-regcost-guest.csv"
    echo "== ibv_reg_mr / ibv_dereg_mr / restore in the guest (rxe) =="
    "$build/bench/bench_regcost" verbs "$out/bench-regcost-guest.csv" ||
        echo "bench_rdma: bench_regcost verbs failed" >&2
fi

# 2. the engine's latencies where only the guest has them: the kernel module
#    (kmod), next to uffd and ucm on the guest's kernel
if part engine; then
    echo "# machine,$machine" > "$out/bench-engine-guest.csv"
    echo "bench,variant,n,value,unit" >> "$out/bench-engine-guest.csv"
    if [ -e "$build/kernel/mrlease.ko" ] && { [ -e /dev/mrlease ] || insmod "$build/kernel/mrlease.ko"; }; then
        guest_monitors="uffd ucm kmod"
    else
        echo "bench_rdma: mrlease.ko NOT loaded ($build/kernel/mrlease.ko: make kmod): no kmod rows" >&2
        guest_monitors="uffd ucm"
    fi
    for m in $guest_monitors; do
        "$build/bench/bench_engine" "$out/bench-engine-guest.csv" "$m" 2>/dev/null ||
            echo "bench_rdma: bench_engine $m failed" >&2
    done
fi

# 2b. peak bytes registered (pinned) during one restore: a registration cache
#     region, and a registration whose key a peer holds (a memory window)
if part pinned; then
    pcsv=$out/bench-pinned-guest.csv
    echo "# machine,$machine" > "$pcsv"
    echo "kind,case,R,A,round,peak_bytes,peak_over_R,before_over_R,after_over_R,vmpin_kib_at_reg,vmpin_peak_kib" >> "$pcsv"
    echo "== peak pinned bytes during one restore (R registered, A of it replaced) =="
    for round in $(seq "$rounds"); do
        for ra in ${MRL_BENCH_PINNED:-16384:64 16384:1024}; do
            env UCX_TLS=rc_verbs,ud_verbs,self UCX_NET_DEVICES=rxe0:1 \
                LD_PRELOAD="$lib:$counter" UCX_IB_LEASE_ENABLE=y UCX_IB_LEASE_SUMMARY=n \
                timeout 300 "$build/bench/bench_pinned" "$pcsv" "${ra%%:*}" "${ra##*:}" "$round" ||
                echo "bench_rdma: bench_pinned $ra failed" >&2
        done
    done
fi

# 2c. each UCP call while a lease is broken: ucp_worker_progress() with nothing
#     pending, while a memory window waits for memory gone for good (the
#     catch-up path: one load between back-off retries), and after
if part catchup; then
    ccsv=$out/bench-catchup-guest.csv
    echo "# machine,$machine" > "$ccsv"
    echo "kind,phase,round,ns_per_call" >> "$ccsv"
    echo "== ns per ucp_worker_progress() while a window waits for its memory =="
    for round in $(seq "$rounds"); do
        line=$(env UCX_TLS=rc_verbs,ud_verbs UCX_NET_DEVICES=rxe0:1 LD_PRELOAD="$lib" \
            UCX_IB_LEASE_ENABLE=y UCX_IB_LEASE_SUMMARY=n timeout 300 \
            "$build/test/rdma/ucp_lifetime" unbacked 2 2>/dev/null | grep "ns per call")
        echo "  round $round: ${line#ucp_lifetime: }"
        echo "$line" | sed -E 's/.*: ([0-9.]+) ns per call idle, ([0-9.]+) ns while.*, ([0-9.]+) ns once.*/\1 \2 \3/' |
            awk -v r="$round" 'NF == 3 {printf "catchup,idle,%s,%s\ncatchup,broken,%s,%s\ncatchup,deregistered,%s,%s\n", r, $1, r, $2, r, $3}' >> "$ccsv"
    done
fi

# 3. ucx_perftest, UCT rc_verbs zcopy: no churn possible (the perftest
#    registers its buffers once, itself)
for round in $(seq "$rounds"); do
    part perftest || break
    echo "== ucx_perftest rc_verbs put_bw/get zcopy, round $round =="
    for size in $sizes; do
        for test in put_bw get; do
            for stack in $(order "$round"); do
                perftest "$stack" "$test" "$size" "$round"
            done
        done
        grep "^perftest,[a-z_]*,[a-z]*,$round,0,$size," "$csv" |
            awk -F, '{printf "  %-7s %-8s %8s B %9s MB/s\n", $2, $3, $6, $9}'
    done
done

# 4. MPI ping-pong, MPI_Put, MPI_Get with churn every N operations; the
#    mrlease stack uses mrlease.ko when it is loaded (the engine part loads it)
if part mpi; then
    if [ -e /dev/mrlease ]; then kmod_state="loaded (mrlease prefers kmod)"; else kmod_state="not loaded (uffd, ucm, flease)"; fi
    echo "# mrlease.ko,$kmod_state" >> "$csv"
    echo "# mrlease.ko for the MPI runs: $kmod_state"
fi
for round in $(seq "$rounds"); do
    part mpi || break
    for stack in $(order "$round"); do
        echo "== MPI ($stack), round $round =="
        mpi "$stack" "$round"
    done
done
echo "CSV: $csv"
