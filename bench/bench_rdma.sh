#!/bin/bash
# RDMA benchmark, inside the soft-RoCE guest (make bench-rdma runs it there):
# plain UCX against UCX with mrlease (libuct_ib_lease preloaded and enabled),
# same guest, alternating rounds, best of each. Prints ratios and writes CSV.
#   bench_rdma.sh BUILD_DIR CSV_OUT
set -uo pipefail
build=${1:?usage: bench_rdma.sh BUILD_DIR CSV_OUT}
csv=${2:?usage: bench_rdma.sh BUILD_DIR CSV_OUT}
lib=$build/src/uct_ib_lease/.libs/libuct_ib_lease.so
rounds=${MRL_BENCH_ROUNDS:-3}
export UCX_IB_GID_INDEX=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export MRL_FILE_CHANGER=$build/test/helpers/file_changer
port=23000

# perftest VARIANT TEST LAYOUT SIZE ITERS FIELD -> prints one number
perftest() {
    local variant=$1 test=$2 layout=$3 size=$4 iters=$5 field=$6 pre=()
    [ "$variant" = mrlease ] && pre=(env LD_PRELOAD="$lib" UCX_IB_LEASE_ENABLE=y UCX_IB_LEASE_SUMMARY=n)
    port=$((port + 1))
    "${pre[@]}" ucx_perftest -d rxe0:1 -x rc_verbs -t "$test" -D "$layout" -s "$size" \
        -n "$iters" -w 20 -p $port > /dev/null 2>&1 &
    local spid=$!
    sleep 0.5
    "${pre[@]}" ucx_perftest 127.0.0.1 -d rxe1:1 -x rc_verbs -t "$test" -D "$layout" \
        -s "$size" -n "$iters" -w 20 -p $port 2>/dev/null | awk -v f="$field" '/Final:/ {print $f}'
    wait $spid
}

# ucp_perftest VARIANT TEST SIZE ITERS FIELD -> one number; through UCP, so the
# catch-up on ucp_worker_progress and the sends is on the measured path
ucp_perftest() {
    local variant=$1 test=$2 size=$3 iters=$4 field=$5 pre=(env UCX_TLS=rc_verbs,ud_verbs,self)
    [ "$variant" = mrlease ] && pre+=(LD_PRELOAD="$lib" UCX_IB_LEASE_ENABLE=y UCX_IB_LEASE_SUMMARY=n)
    port=$((port + 1))
    "${pre[@]}" UCX_NET_DEVICES=rxe0:1 ucx_perftest -t "$test" -s "$size" -n "$iters" \
        -w 50 -p $port > /dev/null 2>&1 &
    local spid=$!
    sleep 0.5
    "${pre[@]}" UCX_NET_DEVICES=rxe1:1 ucx_perftest 127.0.0.1 -t "$test" -s "$size" \
        -n "$iters" -w 50 -p $port 2>/dev/null | awk -v f="$field" '/Final:/ {print $f}'
    wait $spid
}

# mpi VARIANT MODE -> seconds of the timed loop
mpi() {
    local variant=$1 mode=$2 runner=mpirun
    [ "$variant" = mrlease ] && runner=$(dirname "$0")/../contrib/mpirun-mrlease
    local c=(-x UCX_IB_GID_INDEX=0 -x UCX_TLS=rc_verbs,ud_verbs,self -x MRL_FILE_CHANGER
             -x UCX_IB_LEASE_SUMMARY=n)
    MRL_LIB=$lib $runner --mca pml ucx --mca btl ^openib,uct,vader \
        -np 1 "${c[@]}" -x UCX_NET_DEVICES=rxe0:1 "$build/test/mpi/mpi_remap" 20 "$mode" both : \
        -np 1 "${c[@]}" -x UCX_NET_DEVICES=rxe1:1 "$build/test/mpi/mpi_remap" 20 "$mode" both \
        2>/dev/null | awk '/wrong bytes/ {for (i = 1; i <= NF; ++i) if ($i == "s") print $(i-1)}
                          /wrong bytes/ {for (i = 1; i <= NF; ++i) if ($(i+1) == "wrong") w = $i}
                          END {if (w != 0) print "WRONG"}' | tr '\n' ' '
}

best() { sort -g | head -1 | tr -d ' '; }    # smallest (latency, time)
bestbw() { sort -g | tail -1 | tr -d ' '; }  # largest (bandwidth)

# the host's CPU comes from the host (make bench-rdma passes it): the guest
# only sees QEMU's virtual one
host_cpu=${MRL_BENCH_HOST_CPU:-unknown host CPU}
echo "# machine,$host_cpu host; QEMU TCG guest (soft-RoCE rxe),$(nproc) guest CPUs,Linux $(uname -r),UCX $(ucx_info -v | awk 'NR == 1 {print $NF}')" > "$csv"
echo "bench,variant,value,unit" >> "$csv"
printf '%-40s %14s %14s %8s\n' "benchmark ($rounds alternating rounds, best)" plain mrlease ratio

row() { # name unit plain mrlease higher_is_better
    local ratio
    ratio=$(awk -v p="$3" -v m="$4" 'BEGIN { if (p ~ /^[0-9.]+$/ && m ~ /^[0-9.]+$/ && p > 0)
                                                 printf "%.3f", m / p; else print "n/a" }')
    printf '%-40s %14s %14s %8s\n' "$1 ($2)" "$3" "$4" "$ratio"
    echo "\"$1\",plain,$3,$2" >> "$csv"   # names may hold commas
    echo "\"$1\",mrlease,$4,$2" >> "$csv"
}

for spec in "put_bw zcopy 65536 300 bw" "get zcopy 65536 300 bw" "am_lat short 8 2000 lat"; do
    set -- $spec
    p=(); m=()
    for r in $(seq "$rounds"); do
        if [ "$5" = bw ]; then
            p+=("$(perftest plain "$1" "$2" "$3" "$4" 6)")
            m+=("$(perftest mrlease "$1" "$2" "$3" "$4" 6)")
        else
            p+=("$(perftest plain "$1" "$2" "$3" "$4" 4)")
            m+=("$(perftest mrlease "$1" "$2" "$3" "$4" 4)")
        fi
    done
    if [ "$5" = bw ]; then
        row "ucx_perftest rc $1 $2 $3 B" MB/s "$(printf '%s\n' "${p[@]}" | bestbw)" \
            "$(printf '%s\n' "${m[@]}" | bestbw)"
    else
        row "ucx_perftest rc $1 $3 B" us "$(printf '%s\n' "${p[@]}" | best)" \
            "$(printf '%s\n' "${m[@]}" | best)"
    fi
done

p=(); m=()
for r in $(seq "$rounds"); do
    p+=("$(ucp_perftest plain tag_lat 8 2000 4)")
    m+=("$(ucp_perftest mrlease tag_lat 8 2000 4)")
done
row "ucx_perftest UCP tag_lat 8 B" us "$(printf '%s\n' "${p[@]}" | best)" \
    "$(printf '%s\n' "${m[@]}" | best)"

for mode in none remap; do
    p=(); m=()
    for r in $(seq "$rounds"); do
        p+=("$(mpi plain $mode)")
        m+=("$(mpi mrlease $mode)")
    done
    pv=$(printf '%s\n' "${p[@]}" | grep -v WRONG | best)
    mv=$(printf '%s\n' "${m[@]}" | grep -v WRONG | best)
    row "MPI 20 x 1 MiB send/recv, churn=$mode" s "${pv:-wrong}" "${mv:-wrong}"
done
echo "(plain UCX with churn=remap gets wrong bytes: no valid time)"
echo "CSV: $csv"
