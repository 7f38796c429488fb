#!/usr/bin/python3
"""Reads a trace of contrib/kmod-wake-trace/run: for every 1 MiB munmap of
the changer thread of test_kmod.munmap_cost_with_dispatcher (unleased,
leased, unleased, leased, ...), its duration, the time the changer spent
off CPU, how often it was switched out, the TLB flushes for which it sent
IPIs, and the function-call IPIs the other CPUs took meanwhile.

    contrib/kmod-wake-trace/analyse.py OUT/trace-LABEL.txt
"""
import re
import statistics as st
import sys

EVENT = re.compile(r'^\s*(.+)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\w+)(?:: |\(| )(.*)$')
SWITCH = re.compile(r'prev_pid=(\d+).*prev_state=(\S+) ==> .* next_pid=(\d+)')
MUNMAP_1M = 'len: 100000'


def main(path):
    events = []
    with open(path) as f:
        for line in f:
            m = EVENT.match(line)
            if m:
                _, pid, cpu, ts, name, rest = m.groups()
                events.append((float(ts), int(pid), int(cpu), name, rest))
    changer = next((pid for _, pid, _, name, rest in events
                    if name == 'sys_munmap' and MUNMAP_1M in rest), None)
    if changer is None:
        sys.exit('%s: no munmap of 1 MiB traced' % path)
    wins, cur = [], None
    for ts, pid, cpu, name, rest in events:
        if pid == changer and name == 'sys_munmap' and MUNMAP_1M in rest:
            cur = {'t0': ts, 'cpu': cpu, 'out': None, 'off': 0.0, 'preempted': 0,
                   'slept': 0, 'ipi_sent': 0, 'ipi_other': 0}
        elif cur is None:
            continue
        elif pid == changer and name == 'sys_munmap' and rest.startswith('->'):
            cur['t1'] = ts
            wins.append(cur)
            cur = None
        elif name == 'sched_switch':
            prev, state, nxt = SWITCH.search(rest).groups()
            if int(prev) == changer:
                cur['out'] = ts
                cur['preempted' if state.startswith('R') else 'slept'] += 1
            if int(nxt) == changer and cur['out'] is not None:
                cur['off'] += ts - cur['out']
                cur['out'] = None
        elif name == 'tlb_flush' and pid == changer and 'send' in rest:
            cur['ipi_sent'] += 1
        elif name.startswith('call_function') and cpu != cur['cpu']:
            cur['ipi_other'] += 1
    for kind, sel in (('unleased', wins[0::2]), ('leased', wins[1::2])):
        if not sel:
            continue
        d = [(w['t1'] - w['t0']) * 1e6 for w in sel]
        print('%-8s n=%d  munmap mean %.0f us, median %.0f us; changer off CPU mean '
              '%.0f us; preempted %d, slept %d; TLB flushes sending IPIs %d; '
              'function-call IPIs taken by the other CPUs %d'
              % (kind, len(sel), st.mean(d), st.median(d),
                 st.mean(w['off'] * 1e6 for w in sel),
                 sum(w['preempted'] for w in sel), sum(w['slept'] for w in sel),
                 sum(w['ipi_sent'] for w in sel), sum(w['ipi_other'] for w in sel)))


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
