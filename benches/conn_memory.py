#!/usr/bin/env python3
"""Memory per client connection and service with slow clients connected: edgeward, HAProxy, nginx.

Run through benches/conn_memory.sh. Each proxy runs one pinned worker on a data set of 1,000 domains.
Per round and proxy, each on a fresh process: PSS growth of the process tree with N idle keep-alive
connections (each served one request first); with N half-sent request heads; the p50/p99 of normal clients at a fixed rate,
without and with S slow clients holding half-sent heads. Rounds are interleaved; medians are printed
with the ratios edgeward/HAProxy and edgeward/nginx.
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib.common import BIN, HTTP, TOOLS_CPU, UP_ADDR, host, log, pss_kib, use_binaries  # noqa: E402
from benchlib.measure import gen, loadgen  # noqa: E402
from benchlib.proxies import Edgeward, HAProxy, Nginx  # noqa: E402

HEAD = f"GET / HTTP/1.1\r\nHost: {host(1)}\r\n\r\n".encode()
HALF = f"GET / HTTP/1.1\r\nHost: {host(1)}\r\nX-Slow: ".encode()


def settle_pss(pid):
    """PSS once it stops moving (the proxy has handled what was sent)."""
    last = pss_kib(pid)
    for _ in range(20):
        time.sleep(0.25)
        now = pss_kib(pid)
        if abs(now - last) < 64:
            return now
        last = now
    return last


def open_conns(n, payload, read_answer):
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", HTTP))
        s.sendall(payload)
        if read_answer:
            s.settimeout(5)
            data = s.recv(65536)
            if not data.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer {data[:40]!r}")
        conns.append(s)
    return conns


def per_conn_kib(p, n, payload, read_answer):
    base = settle_pss(p.pid())
    conns = open_conns(n, payload, read_answer)
    grown = settle_pss(p.pid())
    for s in conns:
        s.close()
    return (grown - base) / n


def latency(p, n_hosts, rate, dur):
    g = loadgen(p, "http", "--addr", f"127.0.0.1:{HTTP}", "--hosts", str(n_hosts), "--rate",
                str(rate), duration=dur)
    return g["p50_ms"], g["p99_ms"], g["errors"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--conns", type=int, default=4000)
    ap.add_argument("--slow", type=int, default=8_000, help="slow clients (HAProxy needs 2 fds each: 10k exceed the 20000-fd hard limit here)")
    ap.add_argument("--rate", type=int, default=5000, help="normal clients' req/s")
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/edgeward-conn-memory")
    ap.add_argument("--only", default="haproxy,nginx,edgeward")
    a = ap.parse_args()
    use_binaries(a.work)
    n_hosts = 1000
    upstream = subprocess.Popen(["taskset", "-c", TOOLS_CPU, BIN["UPSTREAM"], UP_ADDR],
                                stderr=subprocess.DEVNULL)
    res = {}
    try:
        data = gen(a.work, "mem1000", n_hosts, "--upstream", UP_ADDR, "--no-certs")
        classes = {"haproxy": HAProxy, "nginx": Nginx, "edgeward": Edgeward}
        names = a.only.split(",")
        for r in range(a.rounds):
            for name in names:
                out = res.setdefault(name, {})
                # Each measure on a fresh process: memory freed by one phase would be reused by the
                # next and hide its cost.
                p = classes[name](a.work)
                p.start(data, tls=False)
                try:
                    idle = per_conn_kib(p, a.conns, HEAD, True)
                finally:
                    p.stop()
                p.start(data, tls=False)
                try:
                    half = per_conn_kib(p, a.conns, HALF, False)
                finally:
                    p.stop()
                p.start(data, tls=False)
                try:
                    base = latency(p, n_hosts, a.rate, a.duration)
                    slow = open_conns(a.slow, HALF, False)
                    settle_pss(p.pid())  # every slow client accepted and read before measuring
                    loaded = latency(p, n_hosts, a.rate, a.duration)
                    for s in slow:
                        s.close()
                finally:
                    p.stop()
                for k, v in [("idle", idle), ("half", half), ("p50", base[0]), ("p99", base[1]),
                             ("slow_p50", loaded[0]), ("slow_p99", loaded[1]),
                             ("errors", base[2] + loaded[2])]:
                    out.setdefault(k, []).append(v)
                log(f"round {r + 1} {name}: idle {idle:.1f} KiB, half {half:.1f} KiB, "
                    f"p99 {base[1]} ms -> {loaded[1]} ms with {a.slow} slow clients")
    finally:
        upstream.kill()
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in res.items()}
    rows = [("idle", f"PSS per idle keep-alive connection ({a.conns:,})", "KiB"),
            ("half", f"PSS per half-sent request head ({a.conns:,})", "KiB"),
            ("p50", f"normal clients at {a.rate:,} req/s, p50", "ms"),
            ("p99", f"normal clients at {a.rate:,} req/s, p99", "ms"),
            ("slow_p50", f"same, with {a.slow:,} slow clients connected, p50", "ms"),
            ("slow_p99", f"same, with {a.slow:,} slow clients connected, p99", "ms"),
            ("errors", "errors of the normal clients (sum of both runs)", "")]
    print(f"\n{a.rounds} interleaved rounds, medians; {time.strftime('%Y-%m-%d')}")
    print(f"| measure | unit | {' | '.join(med)} | edgeward/HAProxy | edgeward/nginx |")
    print("|---|---|" + "---|" * (len(med) + 2))
    for key, label, unit in rows:
        vals = [f"{med[n][key]:.2f}" for n in med]
        e = med.get("edgeward", {}).get(key)
        ratio = lambda o: f"{e / med[o][key]:.2f}x" if e is not None and o in med and med[o][key] else "-"  # noqa: E731
        print(f"| {label} | {unit} | {' | '.join(vals)} | {ratio('haproxy')} | {ratio('nginx')} |")


if __name__ == "__main__":
    main()
