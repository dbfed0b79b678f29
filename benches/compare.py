#!/usr/bin/env python3
"""edgeward, HAProxy and nginx side by side, one after another on this machine (see BENCHMARKS.md).

Run through benches/compare.sh, which installs the tools and builds the binaries. Each proxy runs one
worker thread pinned to the last CPU; the load tools and the upstream share the other CPUs. Prints a table
of absolute figures and the ratios edgeward/HAProxy and edgeward/nginx, and writes it as JSON too.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib.common import (ADMIN, BIN, HTTP, HTTPS, NCPU, PROXY_CPU, ROOT, TOKEN, TOOLS_CPU,  # noqa: E402
                             UP_ADDR, first_cert_der, host, http_status, log, pss_kib, tls_peer_cert,
                             use_binaries)
from benchlib.measure import gen, loadgen, median_time, paced, wrk  # noqa: E402
from benchlib.proxies import Cli, Edgeward, HAProxy, Nginx  # noqa: E402

# ---------------------------------------------------------------- the run

ROWS = []  # (key, label, unit, better)
RESULTS = {}  # key -> {proxy: {"value": v, ...}}


def record(key, label, unit, better, proxy, value, **extra):
    if key not in RESULTS:
        ROWS.append((key, label, unit, better))
        RESULTS[key] = {}
    RESULTS[key][proxy] = {"value": value, **extra}
    log(f"  {proxy:8} {label}: {value:,.2f} {unit} {json.dumps(extra) if extra else ''}")


def http_phase(p, data, n, dur, shared):
    p.start(data, tls=False)
    try:
        r = wrk(p, "challenge", n, dur)
        record("1ka", f"ACME challenge, {n:,} tokens, keep-alive", "req/s", "higher", p.name, **r)
        r = wrk(p, "challenge", n, dur, close=True)
        record("1nc", f"ACME challenge, {n:,} tokens, new connection per request", "req/s", "higher",
               p.name, **r)
        r = wrk(p, "proxy", n, dur)
        record("2max", f"proxied, random Host of {n:,}, keep-alive, maximum", "req/s", "higher",
               p.name, **r)
        rate = shared.setdefault("http_rate", round(r["value"] / 2))
        own = ["http", "--addr", f"127.0.0.1:{HTTP}", "--hosts", str(n), "--rate",
               str(round(r["value"] / 2))]
        fixed = ["http", "--addr", f"127.0.0.1:{HTTP}", "--hosts", str(n), "--rate", str(rate)]
        if "floor" not in shared:  # the load tool straight to the upstream, same rate: the floor
            shared["floor"] = loadgen(None, *fixed[:2], UP_ADDR, *fixed[3:], duration=dur)
        g = loadgen(p, *fixed, duration=dur)
        record("2p50", f"proxied at {rate:,} req/s (half HAProxy's maximum), p50", "ms", "lower",
               p.name, g["p50_ms"], errors=g["errors"], cpu=g["cpu"])
        record("2p99", f"proxied at {rate:,} req/s, p99", "ms", "lower", p.name, g["p99_ms"],
               errors=g["errors"], p999=g["p999_ms"])

        served = lambda name: lambda k: http_status(HTTP, f"{name}{k}.bench.test") == 200  # noqa: E731
        if isinstance(p, (Edgeward, HAProxy)):
            t = median_time(lambda k: p.add_domain(f"api{k}.bench.test"), served("api"))
            record("5api", f"one route change at {n:,} domains, time until served (admin/runtime API)",
                   "ms", "lower", p.name, t)
        if isinstance(p, (HAProxy, Nginx)):
            t = median_time(lambda k: p.add_domain_by_reload(f"rl{k}.bench.test"), served("rl"))
            record(f"5reload-{p.name}", f"one route change at {n:,} domains by {p.name} reload, "
                   "time until served", "ms", "lower", p.name, t)

        # Traffic at the fixed rate, then at half the proxy's own maximum, while changes go on.
        loads = [("5load", f"proxied at {rate:,} req/s during changes, p99", fixed),
                 ("5load-own", "proxied at half the proxy's own maximum during changes, p99", own)]
        if isinstance(p, Edgeward):
            for key, label, load in loads:
                g, c = api_changes_during(p, load, dur)
                record(key, label, "ms", "lower", p.name, g["p99_ms"], errors=g["errors"],
                       p50=g["p50_ms"], rate=load[-1],
                       changes=f"{c['per_second']:,.0f} API changes/s, {c['errors']} failed, "
                               f"change p99 {c['p99_ms']} ms")
        if isinstance(p, HAProxy):
            cli = Cli(p.sock)

            def add_map(j):
                answer = cli.send(f"add map {p.hosts_map} rt{j}.bench.test be_up")
                if answer.strip():
                    raise RuntimeError(answer)
            g, st = paced_during(p, fixed, dur, 1000, add_map)
            cli.s.close()
            record("5load-rt", f"proxied at {rate:,} req/s during 1000 runtime API changes/s, p99", "ms",
                   "lower", p.name, g["p99_ms"], errors=g["errors"], p50=g["p50_ms"],
                   changes=f"{st['per_second']:,.0f} runtime API changes/s")
        if isinstance(p, (HAProxy, Nginx)):
            for (key, label, load), prefix in zip(loads, ("rr", "ro")):
                g, st = paced_during(p, load, dur, 1,
                                     lambda j, prefix=prefix: p.add_domain_by_reload(f"{prefix}{j}.bench.test"))
                record(key, label, "ms", "lower", p.name, g["p99_ms"], errors=g["errors"],
                       p50=g["p50_ms"], rate=load[-1],
                       changes=f"{st['done']} reloads, one per second")
    finally:
        p.stop()


def api_changes_during(p, load, dur):
    """Run `load` while loadgen sends 1000 admin API changes/s; (load result, changes result)."""
    changes = subprocess.Popen(["taskset", "-c", TOOLS_CPU, BIN["LOADGEN"], "changes", "--addr",
                                f"127.0.0.1:{ADMIN}", "--token", TOKEN, "--upstream", UP_ADDR,
                                "--rate", "1000", "--conns", "16", "--duration", str(dur)],
                               stdout=subprocess.PIPE, text=True)
    g = loadgen(p, *load, duration=dur)
    return g, json.loads(changes.communicate()[0])


def paced_during(p, load, dur, rate, change):
    """Run `load` while change(j) is called `rate` times a second; (load result, change stats)."""
    t, st = paced(rate, dur, change)
    g = loadgen(p, *load, duration=dur)
    t.join()
    return g, st


def tls_phase(p, sets, swap, dur, shared):
    sizes = sorted(sets)
    base = None
    for n in sizes:
        t = p.start(sets[n], tls=True)
        try:
            pss = pss_kib(p.pid())
            if n == 1:
                base = pss
            else:
                record(f"4start{n}", f"cold start to first HTTPS request, {n:,} domains + certificates",
                       "s", "lower", p.name, t, pss_mib=round(pss / 1024))
            g = loadgen(p, "tls", "--addr", f"127.0.0.1:{HTTPS}", "--hosts", str(n), "--conns", "32",
                        duration=dur)
            record(f"3hs{n}", f"full TLS handshakes, {n:,} ECDSA certificates, random SNI", "hs/s",
                   "higher", p.name, g["per_second"], cpu=g["cpu"], errors=g["errors"],
                   first_error=g["first_error"])
            if n != sizes[-1]:
                continue
            record("4mem", "memory per additional certificate (PSS)", "bytes", "lower", p.name,
                   (pss - base) * 1024 / (n - 1))
            swap_pem = lambda k: os.path.join(swap, "pem", f"{host(k)}.pem")  # noqa: E731
            t = median_time(lambda k: p.set_cert(host(k), swap_pem(k)),
                            lambda k: tls_peer_cert(HTTPS, host(k)) == first_cert_der(swap_pem(k)))
            how = {"edgeward": "admin API", "haproxy": "set + commit ssl cert",
                   "nginx": "file rename, read per handshake"}[p.name]
            record("5cert", f"one certificate change at {n:,}, time until served", "ms", "lower",
                   p.name, t, how=how)

            rate = shared.setdefault("tls_rate", round(g["per_second"] * 0.4))
            fixed = ["tls", "--addr", f"127.0.0.1:{HTTPS}", "--hosts", "100", "--request", "--rate",
                     str(rate)]
            g = loadgen(p, *fixed, duration=dur)
            record("6base", f"HTTPS, new connection + request at {rate}/s, 100 hosts, p99", "ms",
                   "lower", p.name, g["p99_ms"], errors=g["errors"], p50=g["p50_ms"],
                   first_error=g["first_error"])
            t, st = paced(10, dur, lambda j: p.set_cert(host(j % 100), swap_pem(j % 100)))
            g = loadgen(p, *fixed, duration=dur)
            t.join()
            record("6swap", "the same during 10 certificate swaps/s, p99", "ms", "lower", p.name,
                   g["p99_ms"], errors=g["errors"], p50=g["p50_ms"], first_error=g["first_error"],
                   swaps=f"{st['done']} swaps, {st['errors']} failed")
        finally:
            p.stop()
            if isinstance(p, Nginx):
                p.restore_certs()


def factor(row, other):
    _, _, _, better = row
    vals = RESULTS[row[0]]
    if "edgeward" not in vals or other not in vals:
        return ""
    e, o = vals["edgeward"]["value"], vals[other]["value"]
    if e <= 0 or o <= 0:
        return ""
    return f"{(e / o if better == 'higher' else o / e):.2f}x"


def table():
    lines = ["| # | measurement | unit | HAProxy | nginx | edgeward | edgeward vs HAProxy | "
             "edgeward vs nginx |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in ROWS:
        key, label, unit, better = row
        cells = []
        for name in ("haproxy", "nginx", "edgeward"):
            v = RESULTS[key].get(name)
            if v is None:
                cells.append("")
                continue
            cell = f"{v['value']:,.1f}" if v["value"] < 100 else f"{v['value']:,.0f}"
            if v.get("cpu") is not None and better == "higher":
                cell += f" ({v['cpu']:.0%} CPU)"
            if v.get("errors"):
                cell += f", {v['errors']} errors"
            cells.append(cell)
        lines.append(f"| {key[0]} | {label} | {unit} ({better} is better) | " + " | ".join(cells)
                     + f" | {factor(row, 'haproxy')} | {factor(row, 'nginx')} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--domains", type=int, default=100_000)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    ap.add_argument("--work", default="/tmp/edgeward-compare", help="data sets are kept here")
    ap.add_argument("--only", default="haproxy,nginx,edgeward")
    ap.add_argument("--phases", default="http,tls")
    a = ap.parse_args()
    n, dur = a.domains, a.duration
    use_binaries(a.work)
    upstream = subprocess.Popen(["taskset", "-c", TOOLS_CPU, BIN["UPSTREAM"], UP_ADDR],
                                stderr=subprocess.DEVNULL)
    try:
        log(f"data sets in {a.work} (kept between runs)")
        http_data = gen(a.work, f"http{n}", n, "--upstream", UP_ADDR, "--challenges", "--no-certs")
        sets = {k: gen(a.work, f"tls{k}", k, "--upstream", UP_ADDR) for k in (1, n // 10, n)}
        swap = gen(a.work, "swap", 100)
        shared = {}
        classes = {"haproxy": HAProxy, "nginx": Nginx, "edgeward": Edgeward}
        for name in a.only.split(","):
            p = classes[name](a.work)
            log(f"== {name}")
            if "http" in a.phases:
                http_phase(p, http_data, n, dur, shared)
            if "tls" in a.phases:
                tls_phase(p, sets, swap, dur, shared)
    finally:
        upstream.kill()
    cpu = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", cpu).group(1)
    print(f"\nmachine: {NCPU} CPUs ({model}), proxies pinned to CPU {PROXY_CPU}, tools on {TOOLS_CPU}; "
          f"{dur} s per measurement; {time.strftime('%Y-%m-%d')}")
    print(f"versions: {version('haproxy')}; {version('nginx')}; edgeward {git_rev()}")
    if "floor" in shared:
        f = shared["floor"]
        print(f"load tool floor (straight to the upstream at {f['target_rate']:,.0f} req/s): "
              f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms")
    print()
    print(table())
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump({"rows": ROWS, "results": RESULTS}, f, indent=1)
    log(f"\nraw results (CPU use, errors, notes): {a.work}/results.json")


def version(cmd):
    out = subprocess.run([cmd, "-v"], capture_output=True, text=True)
    return (out.stdout + out.stderr).splitlines()[0]


def git_rev():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


if __name__ == "__main__":
    main()

