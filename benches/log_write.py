#!/usr/bin/env python3
"""The kernel time of writing a log the way the access log's writer does (see BENCHMARKS.md, "Access
log"): appends of CHUNK bytes every TICK seconds to a new file, the process's own system time and the
whole machine's (kworkers included) reported per mode, interleaved rounds.

Modes: `plain` (appends only: every page is a new page-cache page), `dontneed` (each append's pages
advised away at once, most still dirty), `drop` (what src/access_log/writer.rs does: start the
writeback of each append with sync_file_range and drop the previous append's pages a tick later).

Usage: python3 benches/log_write.py [--dir DIR] [--mb 170] [--chunk-kb 1700] [--rounds 3]
"""
import argparse
import os
import statistics
import time


def cpu_all():
    """User + system ticks of the whole machine (kernel threads included), in seconds."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


def run(path, mode, total, chunk, tick):
    data = b"x" * (chunk - 1) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o640)
    t0, a0 = os.times(), cpu_all()
    dropped = started = 0
    written = 0
    while written < total:
        os.write(fd, data)
        written += len(data)
        if mode == "dontneed":
            os.posix_fadvise(fd, 0, written, os.POSIX_FADV_DONTNEED)
        elif mode == "drop":
            if started > dropped:
                os.posix_fadvise(fd, dropped, started - dropped, os.POSIX_FADV_DONTNEED)
            # sync_file_range is not in the os module: libc through ctypes.
            SYNC_FILE_RANGE(fd, started, written - started, 2)  # SYNC_FILE_RANGE_WRITE
            dropped, started = started, written
        time.sleep(tick)
    os.close(fd)
    t1, a1 = os.times(), cpu_all()
    os.remove(path)
    return t1.system - t0.system, (a1 - a0) - (t1.user - t0.user) - (t1.system - t0.system)


def main():
    global SYNC_FILE_RANGE
    import ctypes
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    SYNC_FILE_RANGE = libc.sync_file_range
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--mb", type=int, default=170)
    ap.add_argument("--chunk-kb", type=int, default=1700)
    ap.add_argument("--tick-ms", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default="plain,dontneed,drop")
    a = ap.parse_args()
    modes = a.modes.split(",")
    path = os.path.join(a.dir, f"log-write-{os.getpid()}.log")
    res = {m: [] for m in modes}
    for r in range(a.rounds):
        for m in (modes if r % 2 == 0 else modes[::-1]):
            sys_s, others = run(path, m, a.mb << 20, a.chunk_kb << 10, a.tick_ms / 1000)
            res[m].append((sys_s, others))
            print(f"round {r + 1} {m}: own system {sys_s:.2f} s, other CPU (kworkers, rest of the machine) "
                  f"{others:.2f} s", flush=True)
    print(f"\n{a.mb} MB in {a.chunk_kb} KiB appends every {a.tick_ms} ms, {a.rounds} rounds, medians")
    for m in modes:
        print(f"{m}: own system {statistics.median(x[0] for x in res[m]):.2f} s, other CPU "
              f"{statistics.median(x[1] for x in res[m]):.2f} s")


if __name__ == "__main__":
    main()
