#!/usr/bin/env python3
"""Instructions per proxied request under callgrind, with the JSON access log off and on (issue 14;
see BENCHMARKS.md, "Access log"). Unlike req/s on this noisy VM, the count is the same from run to
run for the same binary and load, so a change of 1% shows.

Each mode starts the release build under `valgrind --tool=callgrind` on a data set of 1,000 domains,
sends 200 keep-alive requests to warm up, zeroes the counters, sends N requests (random Host, one
connection), waits for the log writer's tick and dumps. Prints instructions per request per mode, the
ratio, and the functions whose own instructions differ most between the first mode and the others.

Usage: python3 benches/instructions.py [--requests 3000] [--modes off,json] (after
`cargo build --release --bin edgeward --example gen_certs --example bench_upstream`)
"""
import argparse
import glob
import os
import random
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib.common import BIN, HTTP, TOOLS_CPU, UP_ADDR, host, use_binaries  # noqa: E402
from benchlib.measure import gen  # noqa: E402
from benchlib.proxies import Edgeward  # noqa: E402

DOMAINS = 1000


def requests(n, seed=1):
    """n GETs on one keep-alive connection, each answer read to its end and checked."""
    s = socket.create_connection(("127.0.0.1", HTTP))
    rnd = random.Random(seed)
    buf = b""
    for _ in range(n):
        s.sendall(f"GET /x HTTP/1.1\r\nHost: {host(rnd.randrange(DOMAINS))}\r\n\r\n".encode())
        while True:
            j = buf.find(b"\r\n\r\n")
            if j >= 0:
                head = buf[:j].decode()
                m = re.search(r"(?im)^content-length:\s*(\d+)", head)
                if m and len(buf) >= j + 4 + int(m.group(1)):
                    if not head.startswith("HTTP/1.1 200"):
                        raise RuntimeError(head)
                    buf = buf[j + 4 + int(m.group(1)):]
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            buf += chunk
    s.close()


def own_costs(path):
    """Self instructions per function from a callgrind dump."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            costs[m.group(2).strip()] = costs.get(m.group(2).strip(), 0) + int(m.group(1).replace(",", ""))
    return costs


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--modes", default="off,json")
    ap.add_argument("--work", default="/tmp/edgeward-instructions")
    a = ap.parse_args()
    use_binaries(a.work)
    real = BIN["EDGEWARD"]
    wrap = os.path.join(a.work, "callgrind-edgeward")
    up = subprocess.Popen(["taskset", "-c", TOOLS_CPU, BIN["UPSTREAM"], UP_ADDR], stderr=subprocess.DEVNULL)
    per, dumps = {}, {}
    try:
        data = gen(a.work, f"http{DOMAINS}", DOMAINS, "--upstream", UP_ADDR, "--no-certs")
        for mode in a.modes.split(","):
            out = os.path.join(a.work, f"callgrind.{mode}")
            for f in glob.glob(out + "*"):
                os.remove(f)
            with open(wrap, "w") as f:
                f.write(f'#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={out} {real} "$@"\n')
            os.chmod(wrap, 0o755)
            BIN["EDGEWARD"] = wrap
            p = Edgeward(a.work)
            if mode == "json":
                p.json_log()
            p.start(data, tls=False)
            try:
                requests(200)
                subprocess.run(["callgrind_control", "-z"], check=True, capture_output=True)
                requests(a.requests)
                time.sleep(0.5)  # the log writer's tick (100 ms): its write is part of the cost
                subprocess.run(["callgrind_control", "-d"], check=True, capture_output=True)
            finally:
                p.stop()
            dump = max(glob.glob(out + ".*"), key=os.path.getmtime)
            with open(dump) as f:
                total = next(int(line.split()[1]) for line in f if line.startswith("summary:"))
            per[mode], dumps[mode] = total / a.requests, dump
            print(f"{mode}: {per[mode]:,.0f} instructions per request", flush=True)
    finally:
        up.kill()
    modes = list(per)
    base = own_costs(dumps[modes[0]])
    for m in modes[1:]:
        print(f"\n{m}/{modes[0]}: {per[m] / per[modes[0]]:.4f} ({per[m] - per[modes[0]]:+,.0f} per request); "
              "own instructions per request that differ most:")
        costs = own_costs(dumps[m])
        diff = sorted(((costs.get(k, 0) - base.get(k, 0)) / a.requests, k) for k in set(costs) | set(base))
        # Inclusive-looking entries (thread start, the runtime) carry the whole difference: skipped.
        shown = [d for d in diff[::-1] if not re.search(r"clone|start_thread|thread_start|call_once|"
                                                        r"begin_short_backtrace|block_on|enter_runtime", d[1])]
        for v, k in shown[:25]:
            print(f"  {v:8.1f}  {k[:150]}")


if __name__ == "__main__":
    main()
