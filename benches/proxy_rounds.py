#!/usr/bin/env python3
"""Proxied keep-alive maximum, HAProxy, nginx and edgeward (or two edgeward binaries) in interleaved
rounds, medians (see BENCHMARKS.md, issue 17). Run through benches/proxy_rounds.sh.

Each round runs every proxy once, in an order that rotates from round to round, with the same wrk
load as benches/compare.sh's row 2 (random Host of N domains, keep-alive, one pinned proxy CPU).
`--only` may add `floor` (examples/proxy_floor.rs) and `bare` (examples/bare_pingora.rs). `--edgeward NAME=BINARY` (repeatable) compares edgeward builds; `--perf NAME` records a `perf record -g`
profile of the proxy CPU during that proxy's last round (`perf.data` in its work directory).
`--access-log NAME` (repeatable) runs that edgeward build with the JSON access log on (issue 14's cost,
profiled the same way).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib.common import BIN, HTTP, PROXY_CPU, REL, TOOLS_CPU, UP_ADDR, log, use_binaries  # noqa: E402
from benchlib.measure import gen, wrk  # noqa: E402
from benchlib.proxies import Edgeward, HAProxy, Nginx, Proxy  # noqa: E402

FLOOR = os.path.join(REL, "examples", "proxy_floor")


class Floor(Proxy):
    """examples/proxy_floor.rs: the least a proxied request costs on tokio (`--only ...,floor`)."""
    name = "floor"

    def command(self):
        return [FLOOR, f"127.0.0.1:{HTTP}", UP_ADDR, os.path.join(self.data, "hosts.map")]


class Bare(Proxy):
    """examples/bare_pingora.rs: Pingora with no edgeward code, every request proxied (`--only ...,bare`)."""
    name = "bare"

    def command(self):
        return [os.path.join(REL, "examples", "bare_pingora"), "proxy", f"127.0.0.1:{HTTP}", UP_ADDR]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--domains", type=int, default=100_000)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="haproxy,nginx,edgeward")
    ap.add_argument("--edgeward", action="append", default=[], metavar="NAME=BINARY",
                    help="an edgeward build to include (default: target/release/edgeward)")
    ap.add_argument("--perf", default=None, metavar="NAME")
    ap.add_argument("--access-log", action="append", default=[], metavar="NAME",
                    help="an edgeward build (by its --edgeward NAME) run with the JSON access log")
    ap.add_argument("--work", default="/tmp/edgeward-compare")
    a = ap.parse_args()
    n, dur = a.domains, a.duration
    use_binaries(a.work)
    builds = {}
    for spec in a.edgeward:
        name, path = spec.split("=", 1)
        builds[name] = shutil.copy(path, os.path.join(a.work, "bin", f"edgeward-{name}"))
    upstream = subprocess.Popen(["taskset", "-c", TOOLS_CPU, BIN["UPSTREAM"], UP_ADDR],
                                stderr=subprocess.DEVNULL)
    proxies = []
    for name in a.only.split(","):
        if name == "edgeward" and builds:
            proxies += [(f"edgeward-{b}", b) for b in builds]
        else:
            proxies.append((name, None))
    results = {name: [] for name, _ in proxies}
    try:
        data = gen(a.work, f"http{n}", n, "--upstream", UP_ADDR, "--challenges", "--no-certs")
        for r in range(a.rounds):
            k = r % len(proxies)
            for name, build in proxies[k:] + proxies[:k]:
                cls = {"haproxy": HAProxy, "nginx": Nginx, "floor": Floor, "bare": Bare}.get(name, Edgeward)
                p = cls(a.work)
                if build:
                    BIN["EDGEWARD"] = builds[build]
                if build in a.access_log:
                    p.json_log()
                p.start(data, tls=False)
                perf = None
                try:
                    if a.perf == name and r == a.rounds - 1:
                        out = os.path.join(p.work, "perf.data")
                        perf = subprocess.Popen(["perf", "record", "-F", "1999", "-g", "-o", out,
                                                 "-C", PROXY_CPU], stderr=subprocess.DEVNULL)
                    m = wrk(p, "proxy", n, dur)
                    results[name].append(m)
                    log(f"round {r + 1} {name}: {m['value']:,.0f} req/s ({m['cpu']:.2f} CPU), "
                        f"{m['errors']} errors")
                finally:
                    if perf:
                        perf.send_signal(2)
                        perf.wait()
                    p.stop()
    finally:
        upstream.kill()
    print(f"\n{n:,} domains, {a.rounds} interleaved rounds of {dur} s, medians")
    print("| proxy | keep-alive max req/s | proxy CPU | req/s per CPU-second | errors | rounds |")
    print("|---|---:|---:|---:|---:|---|")
    med = {}
    for name, rs in results.items():
        rps = statistics.median(x["value"] for x in rs)
        cpu = statistics.median(x["cpu"] for x in rs)
        per = statistics.median(x["value"] / max(x["cpu"], 1e-9) for x in rs)
        med[name] = rps
        print(f"| {name} | {rps:,.0f} | {cpu:.2f} | {per:,.0f} | {sum(x['errors'] for x in rs)} | "
              + ", ".join(f"{x['value'] / 1000:.1f}k" for x in rs) + " |")
    for name in med:
        if name.startswith("edgeward"):
            print(f"{name}: " + ", ".join(f"{med[name] / med[o]:.2f}x {o}" for o in med if o != name))


if __name__ == "__main__":
    main()
