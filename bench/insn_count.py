#!/usr/bin/env python3
"""Instructions of one process, and those mrlease added, from callgrind's output.

    insn_count.py CALLGRIND_OUT [OBJECT_SUBSTRING]

Prints "total <Ir> added <Ir> calls <n> ucx <Ir>":
  total  every instruction the process executed (what callgrind collected);
  added  the instructions spent in calls that entered the object whose file
         name contains OBJECT_SUBSTRING (default libuct_ib_lease: the plugin,
         with the lease engine inside), less what those calls forwarded to the
         functions they interpose (the real ucp_worker_progress behind the
         wrapper of the same name, called from the wrapper or from any other
         function of the plugin, such as its first-call path): the wrapper's
         own instructions and anything it calls besides the real function (a
         catch-up, a lookup, a monitor's callback);
  calls  how many calls entered that object from elsewhere;
  ucx    the instructions executed in UCX's communication libraries (libucp,
         libuct and its transports) and in the verbs libraries (libibverbs and
         its providers): the work of an operation without the timer thread,
         clock calibration and reporting of libucs, libc and the benchmark,
         whose counts change from run to run.
callgrind records a wrapper's tail jump to the real function as a call, so
the forwarded cost is an edge of its own. A call from the plugin to a
function outside it whose name the plugin also defines is such a forward.
"""
import re
import sys

NAME = re.compile(r'^\((\d+)\)(?: (.*))?$')
UCX = re.compile(r'/(libucp|libuct|libibverbs|lib[a-z0-9_]+-rdmav[0-9]+)[^/]*\.so[^/]*$')


def names(table, value):
    """callgrind's name compression: '(id) name' defines, '(id)' refers."""
    m = NAME.match(value)
    if not m:
        return value
    if m.group(2) is not None:
        table[m.group(1)] = m.group(2)
    return table.get(m.group(1), value)


def count(path, substring):
    obs, fns = {}, {}
    ob = fn = cob = cfn = ''
    total = entered = forwarded = calls = ucx = 0
    in_ucx = False
    edge = None             # (inside caller, inside callee, callee, count)
    outward = []            # (callee name, inclusive cost) of calls leaving the object
    defined = set()         # function names the object defines
    summary = None
    with open(path, encoding='utf-8', errors='replace') as f:
        for line in f:
            line = line.rstrip('\n')
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in '+-*':
                parts = line.split()
                ir = int(parts[1]) if len(parts) > 1 else 0
                if edge is None:            # self cost
                    total += ir
                    if in_ucx:
                        ucx += ir
                    continue
                inside_caller, inside_callee, callee, n = edge
                edge = None                 # the call's inclusive cost
                if inside_callee and not inside_caller:
                    entered += ir
                    calls += n
                elif inside_caller and not inside_callee:
                    outward.append((callee, ir))
                continue
            key, _, value = line.partition('=')
            if key == 'ob':
                ob = names(obs, value)
                in_ucx = UCX.search(ob) is not None and substring not in ob
            elif key == 'fn':
                fn = names(fns, value)
                cob = ob
                if substring in ob:
                    defined.add(fn.split("'")[0])
            elif key == 'cob':
                cob = names(obs, value)
            elif key == 'cfn':
                cfn = names(fns, value)
            elif key == 'calls':
                # names may carry a "'2" recursion suffix
                edge = (substring in ob, substring in cob, cfn.split("'")[0],
                        int(value.split()[0]))
                cob = ob
            elif line.startswith('summary:') or line.startswith('totals:'):
                summary = int(line.split()[1])
    if summary is not None and summary != total:
        sys.exit('%s: self costs add up to %d but the file says %d: format not understood'
                 % (path, total, summary))
    forwarded = sum(ir for callee, ir in outward if callee in defined)
    return total, entered - forwarded, calls, ucx


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    total, added, calls, ucx = count(sys.argv[1], sys.argv[2] if len(sys.argv) == 3
                                else 'libuct_ib_lease')
    print('total %d added %d calls %d ucx %d' % (total, added, calls, ucx))


if __name__ == '__main__':
    main()
