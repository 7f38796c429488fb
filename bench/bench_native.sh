#!/bin/bash
# Native cost of mrlease's catch-up, on the host (make bench-native runs it):
# UCP over shared memory (UCX_TLS=posix,self; MRL_NATIVE_TLS to change),
# server and client on this machine, plain UCX against UCX with
# libuct_ib_lease preloaded and UCX_IB_LEASE_ENABLE=y, in interleaved rounds
# (plain, mrlease, plain, ...). Without an IB device the plugin still turns
# the engine on (UCX's IB component registers) and every UCP call the
# benchmark makes goes through the catch-up; the figure is the time that adds.
#   bench_native.sh BUILD_DIR CSV_OUT
# MRL_NATIVE_ROUNDS (7), MRL_NATIVE_ITERS (200000), MRL_NATIVE_TESTS,
# MRL_NATIVE_TLS change the run; server and client are pinned to CPUs 0 and 1
# (MRL_NATIVE_CPUS="0 1"; empty: not pinned) when there are two.
set -uo pipefail
build=${1:?usage: bench_native.sh BUILD_DIR CSV_OUT}
csv=${2:?usage: bench_native.sh BUILD_DIR CSV_OUT}
lib=$build/src/uct_ib_lease/.libs/libuct_ib_lease.so
rounds=${MRL_NATIVE_ROUNDS:-7}
iters=${MRL_NATIVE_ITERS:-200000}
tls=${MRL_NATIVE_TLS:-posix,self}
tests=${MRL_NATIVE_TESTS:-tag_lat ucp_put_lat ucp_am_lat}
port=$((25000 + $$ % 5000))
cpus=(${MRL_NATIVE_CPUS-0 1})
pin_s=() pin_c=()
if [ ${#cpus[@]} = 2 ] && [ "$(nproc)" -ge 2 ]; then
    pin_s=(-c "${cpus[0]}"); pin_c=(-c "${cpus[1]}")
fi

[ -f "$lib" ] || { echo "bench_native: no $lib (build first)" >&2; exit 1; }
command -v ucx_perftest > /dev/null || { echo "bench_native: no ucx_perftest" >&2; exit 1; }

# one VARIANT TEST -> nanoseconds per operation (perftest's overall latency:
# half a round trip), or nothing if the run failed
one() {
    local variant=$1 test=$2 pre=(env UCX_TLS="$tls")
    [ "$variant" = mrlease ] && pre+=(LD_PRELOAD="$lib" UCX_IB_LEASE_ENABLE=y UCX_IB_LEASE_SUMMARY=n)
    port=$((port + 1))
    "${pre[@]}" timeout 120 ucx_perftest -t "$test" -s 8 -n "$iters" -w 10000 -p $port \
        "${pin_s[@]}" > /dev/null 2>&1 &
    local spid=$!
    sleep 0.3
    "${pre[@]}" timeout 120 ucx_perftest 127.0.0.1 -t "$test" -s 8 -n "$iters" -w 10000 \
        -p $port "${pin_c[@]}" 2>/dev/null | awk '/Final:/ {printf "%.1f\n", $5 * 1000}'
    wait $spid
}

# stats: min median max of the numbers on stdin
stats() { sort -g | awk '{v[NR] = $1} END {if (NR) printf "%.1f %.1f %.1f", v[1],
                          (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[NR]}'; }

{
    echo "# machine,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),$(nproc) cores,Linux $(uname -r),UCX $(ucx_info -v | awk 'NR == 1 {print $NF}'),UCX_TLS=$tls,$iters iterations,pinned to ${pin_s[1]:-no}/${pin_c[1]:-no}"
    echo "bench,round,variant,ns_per_op"
} > "$csv"
printf '%-12s %-24s %-24s %-24s\n' "8 B, $rounds rounds" "plain ns (min/med/max)" \
    "mrlease ns (min/med/max)" "added ns (min/med/max)"
status=0
for test in $tests; do
    p=(); m=(); d=()
    for r in $(seq "$rounds"); do
        # ABAB..., and every other round BA, so neither goes first always
        if [ $((r % 2)) = 1 ]; then a=$(one plain "$test"); b=$(one mrlease "$test")
        else b=$(one mrlease "$test"); a=$(one plain "$test"); fi
        if [ -z "$a" ] || [ -z "$b" ]; then
            echo "bench_native: $test round $r failed (plain '$a', mrlease '$b')" >&2
            status=1; continue
        fi
        p+=("$a"); m+=("$b"); d+=("$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.1f", b - a}')")
        echo "$test,$r,plain,$a" >> "$csv"
        echo "$test,$r,mrlease,$b" >> "$csv"
    done
    [ ${#p[@]} -gt 0 ] || continue
    printf '%-12s %-24s %-24s %-24s\n' "$test" "$(printf '%s\n' "${p[@]}" | stats)" \
        "$(printf '%s\n' "${m[@]}" | stats)" "$(printf '%s\n' "${d[@]}" | stats)"
done
echo "(added = mrlease - plain within a round; perftest's overall latency, half a round trip)"
echo "CSV: $csv"
exit $status
