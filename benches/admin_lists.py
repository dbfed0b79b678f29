#!/usr/bin/env python3
"""How long one page of the admin API's domain list takes at N domains (see BENCHMARKS.md): p50/p99 of
`GET /v1/domains?limit=100&after=RANDOM_HOST` over keep-alive, and of the whole list without `limit`.
Run through benches/admin_lists.sh."""
import argparse
import http.client
import os
import random
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib.common import (ADMIN, BIN, TOKEN, TOOLS_CPU, UP_ADDR, host, log,  # noqa: E402
                             use_binaries)
from benchlib.measure import gen  # noqa: E402
from benchlib.proxies import Edgeward  # noqa: E402


def timed(c, path):
    t0 = time.perf_counter()
    c.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError(f"{path}: {r.status} {body[:200]}")
    return (time.perf_counter() - t0) * 1000, len(body)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--domains", type=int, default=100_000)
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--work", default="/tmp/edgeward-access-log")
    a = ap.parse_args()
    use_binaries(a.work)
    data = gen(a.work, f"http{a.domains}", a.domains, "--upstream", UP_ADDR, "--no-certs")
    # The start-up check proxies a request: the upstream must answer.
    upstream = subprocess.Popen(["taskset", "-c", TOOLS_CPU, BIN["UPSTREAM"], UP_ADDR],
                                stderr=subprocess.DEVNULL)
    p = Edgeward(a.work)
    try:
        p.start(data, tls=False)
        c = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=30)
        rnd = random.Random(7)
        page = [timed(c, f"/v1/domains?limit=100&after={host(rnd.randrange(a.domains))}")[0]
                for _ in range(a.pages)]
        whole = [timed(c, "/v1/domains") for _ in range(5)]
        print(f"\n{a.domains:,} domains; {a.pages} pages of 100 at random cursors, then 5 whole lists")
        print("| request | p50 ms | p99 ms | max ms |")
        print("|---|---|---|---|")
        print(f"| one page of 100 | {statistics.median(page):.2f} | {pct(page, 0.99):.2f} | {max(page):.2f} |")
        w = [t for t, _ in whole]
        print(f"| the whole list ({whole[0][1] / 1e6:.1f} MB) | {statistics.median(w):.0f} | {pct(w, 0.99):.0f} "
              f"| {max(w):.0f} |")
    finally:
        p.stop()
        upstream.kill()
        log("done")


if __name__ == "__main__":
    main()
