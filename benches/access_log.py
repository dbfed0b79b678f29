#!/usr/bin/env python3
"""What the access log costs: edgeward proxying with the JSON access log off and on, interleaved
rounds, medians (see BENCHMARKS.md). Run through benches/access_log.sh.

Per round and mode: the keep-alive maximum with wrk (random Host of N domains), then p50/p99 with the
load tool at a fixed rate (half the first round's maximum with the log off).
"""
import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib.common import BIN, HTTP, TOOLS_CPU, UP_ADDR, log, use_binaries  # noqa: E402
from benchlib.measure import gen, loadgen, wrk  # noqa: E402
from benchlib.proxies import Edgeward  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--domains", type=int, default=100_000)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/edgeward-access-log")
    a = ap.parse_args()
    n, dur = a.domains, a.duration
    use_binaries(a.work)
    upstream = subprocess.Popen(["taskset", "-c", TOOLS_CPU, BIN["UPSTREAM"], UP_ADDR],
                                stderr=subprocess.DEVNULL)
    results = {"off": [], "json": []}
    rate = None
    try:
        data = gen(a.work, f"http{n}", n, "--upstream", UP_ADDR, "--no-certs")
        for r in range(a.rounds):
            # Alternate which mode goes first, so a drift of the machine within a round is shared.
            for mode in (("off", "json") if r % 2 == 0 else ("json", "off")):
                p = Edgeward(a.work)
                logfile = os.path.join(p.work, "access.log")
                if os.path.exists(logfile):
                    os.remove(logfile)
                p.extra = f'  access_log: {{path: "{logfile}", format: json}}\n' if mode == "json" else ""
                p.start(data, tls=False)
                try:
                    m = wrk(p, "proxy", n, dur)
                    rate = rate or round(m["value"] / 2)  # the first measurement's half
                    g = loadgen(p, "http", "--addr", f"127.0.0.1:{HTTP}", "--hosts", str(n), "--rate",
                                str(rate), duration=dur)
                    lines = sum(1 for _ in open(logfile)) if mode == "json" else 0
                    results[mode].append({"rps": m["value"], "cpu": m["cpu"],
                                          "per_core": m["value"] / max(m["cpu"], 1e-9),
                                          "errors": m["errors"] + g["errors"],
                                          "p50": g["p50_ms"], "p99": g["p99_ms"], "lines": lines})
                    log(f"round {r + 1} {mode}: {m['value']:,.0f} req/s ({m['cpu']:.2f} CPU), at {rate:,}/s p50 "
                        f"{g['p50_ms']} ms p99 {g['p99_ms']} ms, {lines:,} log lines")
                finally:
                    p.stop()
    finally:
        upstream.kill()
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("rps", "cpu", "per_core", "p50", "p99")}
           for k, v in results.items()}
    print(f"\n{n:,} domains, {a.rounds} interleaved rounds of {dur} s, medians; fixed rate {rate:,} req/s")
    print("| access log | keep-alive max req/s | proxy CPU | req/s per CPU-second | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for k in ("off", "json"):
        errs = sum(x["errors"] for x in results[k])
        print(f"| {k} | {med[k]['rps']:,.0f} | {med[k]['cpu']:.2f} | {med[k]['per_core']:,.0f} | {med[k]['p50']} "
              f"| {med[k]['p99']} | {errs} |")
    print(f"\njson/off throughput: {med['json']['rps'] / med['off']['rps']:.3f}, per CPU-second: "
          f"{med['json']['per_core'] / med['off']['per_core']:.3f}")


if __name__ == "__main__":
    main()
