#!/usr/bin/python3
"""mpi4py_remap: a Python client (mpi4py + NumPy) whose buffers change under
UCX's registrations between transfers; every byte is checked by this script.

    mpirun ... /usr/bin/python3 mpi4py_remap.py ITERATIONS FILE_PREFIX [CASE...]

Two ranks. CASE (all of them by default):
  p2p-remap    1 MiB MPI Send/Recv between NumPy arrays over anonymous
               mmap memory that both ranks remap (raw munmap + mmap MAP_FIXED
               syscalls through ctypes) on every odd iteration
  p2p-regrow   the same between np.memmap arrays of FILE_PREFIX.p2p.<rank> in
               /dev/shm, which another program (test/helpers/file_changer,
               $MRL_FILE_CHANGER, started with os.posix_spawn) truncates to 0
               and regrows
  win-remap    MPI.Win.Create on rank 1's NumPy array (anonymous mmap memory);
               rank 1 remaps it between epochs, rank 0 Puts 512 KiB and Gets
               the whole 1 MiB, both checked
  win-regrow   the same window over an np.memmap of FILE_PREFIX.win, regrown
               by another program between epochs
Rank 0 prints one line per case, "mpi4py_remap: CASE: N wrong bytes in K
iterations, C changes", then "mpi4py_remap: ok" or "mpi4py_remap: FAILED";
exits 1 on a wrong byte.
"""
import ctypes
import mmap
import os
import platform
import sys
import time

import numpy as np
from mpi4py import MPI

LEN = 1 << 20
PUT_LEN = LEN // 2
CASES = ("p2p-remap", "p2p-regrow", "win-remap", "win-regrow")

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def die(msg):
    sys.stderr.write("mpi4py_remap: rank %d: %s\n" % (rank, msg))
    sys.stderr.flush()
    comm.Abort(2)


def pattern(it, salt, n=LEN):
    return ((np.arange(n, dtype=np.uint32) * 13 + it * 29 + salt) & 0xFF).astype(np.uint8)


def raw_remap(arr):
    """munmap + mmap(MAP_FIXED) of the array's pages by raw syscalls: UCX's
    memory hooks see nothing; the array now shows new, zeroed pages"""
    if platform.machine() != "x86_64":
        die("raw_remap knows the syscall numbers of x86_64 only, not %s" % platform.machine())
    sys_mmap, sys_munmap = 9, 11
    addr = arr.ctypes.data
    if addr % mmap.PAGESIZE or arr.nbytes % mmap.PAGESIZE:
        die("the array is not page-aligned")
    c_long = ctypes.c_long
    libc.syscall(c_long(sys_munmap), c_long(addr), c_long(arr.nbytes))
    got = libc.syscall(c_long(sys_mmap), c_long(addr), c_long(arr.nbytes),
                       c_long(mmap.PROT_READ | mmap.PROT_WRITE),
                       c_long(mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x10),  # MAP_FIXED
                       c_long(-1), c_long(0))
    if got != addr:
        die("raw mmap(MAP_FIXED) failed: %s" % os.strerror(ctypes.get_errno()))


def regrow(path, size):
    """another process truncates PATH to 0 and regrows it (posix_spawn, not
    fork: a fork would purge UCX's registration cache and hide the problem)"""
    changer = os.environ.get("MRL_FILE_CHANGER")
    if not changer:
        die("MRL_FILE_CHANGER (test/helpers/file_changer) is not set")
    pid = os.posix_spawn(changer, [changer, "regrow", path, str(size)], os.environ)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        die("%s regrow %s failed" % (changer, path))


class Buffer:
    """a NumPy array over anonymous mmap memory, or an np.memmap of a file"""

    def __init__(self, path=None, size=LEN, offset=0, create=True):
        self.path = path
        if path is None:
            self.mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            self.arr = np.frombuffer(self.mm, dtype=np.uint8)
        else:
            if create:
                with open(path, "wb") as f:
                    f.truncate(size)
            self.arr = np.memmap(path, dtype=np.uint8, mode="r+", shape=(size,))

    def change(self):
        if self.path is None:
            raw_remap(self.arr)
        else:
            regrow(self.path, self.arr.nbytes)


def case_p2p(iters, buf):
    bad = changes = 0
    for it in range(iters):
        if it % 2:
            buf.change()
            changes += 1
        if rank == 0:
            buf.arr[:] = pattern(it, 1)
            comm.Send([buf.arr, MPI.BYTE], dest=1, tag=it)
        else:
            buf.arr[:] = 0
            comm.Recv([buf.arr, MPI.BYTE], source=0, tag=it)
            bad += int(np.count_nonzero(buf.arr != pattern(it, 1)))
        comm.Barrier()
    return bad, changes


def case_win(iters, buf):
    """rank 1 owns the window and changes its memory between epochs"""
    bad = changes = 0
    win = MPI.Win.Create(buf.arr if rank == 1 else None, 1, comm=comm)
    local = np.zeros(LEN, dtype=np.uint8)
    for it in range(iters):
        if rank == 1:
            if it % 2:
                buf.change()
                changes += 1
            buf.arr[:] = pattern(it, 5)
        win.Fence()
        if rank == 0:
            local[:] = 0
            win.Get([local, MPI.BYTE], 1)
        win.Fence()
        wrong = 0
        if rank == 0:
            wrong += int(np.count_nonzero(local != pattern(it, 5)))
            local[:PUT_LEN] = pattern(it, 9, PUT_LEN)
            win.Put([local[:PUT_LEN], MPI.BYTE], 1)
        win.Fence()
        if rank == 1:
            wrong += int(np.count_nonzero(buf.arr[:PUT_LEN] != pattern(it, 9, PUT_LEN)))
        bad += comm.allreduce(wrong)
    win.Free()
    return bad, changes


def main():
    if len(sys.argv) < 3 or comm.Get_size() != 2:
        die("usage: mpirun -np 2 ... mpi4py_remap.py ITERATIONS FILE_PREFIX [CASE...]")
    iters, prefix = int(sys.argv[1]), sys.argv[2]
    cases = sys.argv[3:] or CASES
    total = 0
    for case in cases:
        if case not in CASES:
            die("unknown case %s (one of %s)" % (case, ", ".join(CASES)))
        kind, mode = case.split("-", 1)
        path = "%s.%s.%d" % (prefix, kind, rank) if mode == "regrow" else None
        buf = Buffer(path)
        comm.Barrier()
        t0 = time.monotonic()
        bad, changes = (case_p2p if kind == "p2p" else case_win)(iters, buf)
        bad = comm.allreduce(bad if kind == "p2p" else (bad if rank == 0 else 0))
        changes = comm.allreduce(changes)
        if rank == 0:
            print("mpi4py_remap: %s: %d wrong bytes in %d iterations, %d changes, %.1f s"
                  % (case, bad, iters, changes, time.monotonic() - t0), flush=True)
        total += bad
        comm.Barrier()
        if path:
            os.unlink(path)
    if rank == 0:
        print("mpi4py_remap: %s" % ("FAILED" if total else "ok"), flush=True)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
