#!/usr/bin/env python3
"""What the access log costs: edgeward proxying with the JSON access log off and on, interleaved
rounds, medians (see BENCHMARKS.md). Run through benches/access_log.sh.

Per round and mode: the keep-alive maximum with wrk (random Host of N domains), then p50/p99 with the
load tool at a fixed rate (half the first round's maximum with the log off). `--modes` adds the log
to /dev/shm (no disk) and to /dev/null (formatting and the writer's syscalls only), which split the
cost between our code and the kernel's file writes. `nginx-off` and `nginx-json` run nginx the same way
(its JSON log with the same fields to the same disk, `buffer=64k flush=1s`): what the same log costs
nginx on this machine, in the same rounds.
"""
import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib.common import BIN, HTTP, TOOLS_CPU, UP_ADDR, log, use_binaries  # noqa: E402
from benchlib.measure import gen, loadgen, wrk  # noqa: E402
from benchlib.proxies import Edgeward, Nginx  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--domains", type=int, default=100_000)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/edgeward-access-log")
    ap.add_argument("--modes", default="off,json",
                    help="comma-separated: off, json (file in the work directory), shm (file in /dev/shm: "
                         "no disk), null (/dev/null: formatting and the writer's syscall only), nginx-off, nginx-json "
                         "(nginx without and with the same log in its work directory)")
    a = ap.parse_args()
    modes = a.modes.split(",")
    n, dur = a.domains, a.duration
    use_binaries(a.work)
    upstream = subprocess.Popen(["taskset", "-c", TOOLS_CPU, BIN["UPSTREAM"], UP_ADDR],
                                stderr=subprocess.DEVNULL)
    results = {m: [] for m in modes}
    rate = None
    try:
        data = gen(a.work, f"http{n}", n, "--upstream", UP_ADDR, "--no-certs")
        for r in range(a.rounds):
            # Alternate which mode goes first, so a drift of the machine within a round is shared.
            for mode in (modes if r % 2 == 0 else modes[::-1]):
                p = Nginx(a.work) if mode.startswith("nginx-") else Edgeward(a.work)
                logfile = {"json": os.path.join(p.work, "access.log"), "shm": "/dev/shm/edgeward-access.log",
                           "null": "/dev/null", "nginx-json": os.path.join(p.work, "access.log")}.get(mode)
                if logfile and logfile != "/dev/null" and os.path.exists(logfile):
                    os.remove(logfile)
                if isinstance(p, Nginx):
                    p.access_log = logfile
                else:
                    p.extra = f'  access_log: {{path: "{logfile}", format: json}}\n' if logfile else ""
                p.start(data, tls=False)
                try:
                    m = wrk(p, "proxy", n, dur)
                    rate = rate or round(m["value"] / 2)  # the first measurement's half
                    g = loadgen(p, "http", "--addr", f"127.0.0.1:{HTTP}", "--hosts", str(n), "--rate",
                                str(rate), duration=dur)
                    lines = sum(1 for _ in open(logfile)) if logfile and logfile != "/dev/null" else 0
                    results[mode].append({"rps": m["value"], "cpu": m["cpu"],
                                          "per_core": m["value"] / max(m["cpu"], 1e-9),
                                          "errors": m["errors"] + g["errors"],
                                          "p50": g["p50_ms"], "p99": g["p99_ms"], "lines": lines})
                    log(f"round {r + 1} {mode}: {m['value']:,.0f} req/s ({m['cpu']:.2f} CPU), at {rate:,}/s p50 "
                        f"{g['p50_ms']} ms p99 {g['p99_ms']} ms, {lines:,} log lines")
                finally:
                    p.stop()
                    if mode == "shm" and os.path.exists(logfile):
                        os.remove(logfile)  # 100 MB of memory, not disk
    finally:
        upstream.kill()
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("rps", "cpu", "per_core", "p50", "p99")}
           for k, v in results.items()}
    print(f"\n{n:,} domains, {a.rounds} interleaved rounds of {dur} s, medians; fixed rate {rate:,} req/s")
    print("| access log | keep-alive max req/s | proxy CPU | req/s per CPU-second | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for k in modes:
        errs = sum(x["errors"] for x in results[k])
        print(f"| {k} | {med[k]['rps']:,.0f} | {med[k]['cpu']:.2f} | {med[k]['per_core']:,.0f} | {med[k]['p50']:.3f} "
              f"| {med[k]['p99']:.3f} | {errs} |")
    print()
    for k in modes:
        # Each mode against the first mode of the same proxy.
        base = next(b for b in modes if b.startswith("nginx-") == k.startswith("nginx-"))
        if k == base:
            continue
        ratios = [x["rps"] / o["rps"] for x, o in zip(results[k], results[base])]
        print(f"{k}/{base} throughput: {med[k]['rps'] / med[base]['rps']:.3f} (median of the rounds' "
              f"ratios {statistics.median(ratios):.3f}), per CPU-second: "
              f"{med[k]['per_core'] / med[base]['per_core']:.3f}, p99: {med[k]['p99'] / med[base]['p99']:.2f}x")


if __name__ == "__main__":
    main()
