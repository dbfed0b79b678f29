#!/usr/bin/env python3
"""edgeward, HAProxy and nginx side by side, one after another on this machine (see BENCHMARKS.md).

Run through benches/compare.sh, which installs the tools and builds the binaries. Each proxy runs one
worker thread pinned to the last CPU; the load tools and the upstream share the other CPUs. Prints a table
of absolute figures and the ratios edgeward/HAProxy and edgeward/nginx, and writes it as JSON too.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
# Copied into the work directory at start, so a rebuild during a long run changes nothing.
BUILT = {"EDGEWARD": os.path.join(REL, "edgeward"),
         "LOADGEN": os.path.join(REL, "examples", "loadgen"),
         "GEN": os.path.join(REL, "examples", "gen_certs"),
         "UPSTREAM": os.path.join(REL, "examples", "bench_upstream")}
EDGEWARD = LOADGEN = GEN = UPSTREAM = None

HTTP, HTTPS, ADMIN, UP = 28080, 28443, 29900, 28081
UP_ADDR = f"127.0.0.1:{UP}"
TOKEN = "bench"
NCPU = os.cpu_count()
PROXY_CPU = str(NCPU - 1)
TOOLS_CPU = f"0-{NCPU - 2}" if NCPU > 1 else "0"
DEADLINE = 600  # seconds any proxy may take to start (HAProxy with 100k certificates is slow)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def host(i):
    return f"host{i}.bench.test"


def key_authorization(i):  # as gen_certs writes it
    return f"tok{i}.Thumbprint_0123456789abcdefghijklmnopqrstuv"


def run_tool(args, **kw):
    return subprocess.run(["taskset", "-c", TOOLS_CPU, *args], check=True, capture_output=True,
                          text=True, **kw).stdout


# ---------------------------------------------------------------- data sets


def gen(work, name, n, *flags):
    """A data set of n hosts: edgeward state, PEM files, HAProxy maps and crt-list, nginx map and webroot."""
    d = os.path.join(work, name)
    if os.path.exists(os.path.join(d, "done")):
        return d
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    pem = os.path.join(d, "pem")
    subprocess.run([GEN, os.path.join(d, "state"), str(n), "--pem", pem, *flags], check=True)
    with open(os.path.join(d, "hosts.map"), "w") as hm, open(os.path.join(d, "hosts.conf"), "w") as hc:
        for i in range(n):
            hm.write(f"{host(i)} be_up\n")
            hc.write(f"{host(i)} up;\n")
    if "--no-certs" not in flags:
        with open(os.path.join(d, "crt-list"), "w") as f:
            for i in range(n):
                f.write(f"{pem}/{host(i)}.pem\n")
    if "--challenges" in flags:
        web = os.path.join(d, "webroot", ".well-known", "acme-challenge")
        os.makedirs(web)
        with open(os.path.join(d, "challenges.map"), "w") as f:
            for i in range(n):
                f.write(f"tok{i} {key_authorization(i)}\n")
                with open(os.path.join(web, f"tok{i}"), "w") as t:
                    t.write(key_authorization(i))
    else:
        open(os.path.join(d, "challenges.map"), "w").close()
        os.makedirs(os.path.join(d, "webroot"))
    open(os.path.join(d, "done"), "w").close()
    return d


# ---------------------------------------------------------------- processes


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def cpu_seconds(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def pss_kib(pid):
    """Proportional set size of the process tree: forked workers' shared pages counted once."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += int(re.search(r"^Pss:\s+(\d+)", f.read(), re.M).group(1))
        except (FileNotFoundError, AttributeError):
            pass
    return total


def http_status(port, host_header, path="/", timeout=2):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path, headers={"Host": host_header, "Connection": "close"})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except OSError:
        return None


def tls_peer_cert(port, sni, timeout=2):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            with ctx.wrap_socket(s, server_hostname=sni) as t:
                return t.getpeercert(binary_form=True)
    except OSError:
        return None


def poll(check, deadline=DEADLINE, what="condition"):
    """Poll until check() is truthy; return the seconds it took."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.001)
    return time.monotonic() - t0


class Proxy:
    name = ""
    proc = None

    def __init__(self, work):
        self.work = os.path.join(work, self.name)
        os.makedirs(self.work, exist_ok=True)

    def start(self, data, tls):
        """Start on data set `data` (with an HTTPS listener when tls); return seconds to the first request
        served for the data set's last host (over HTTPS when tls)."""
        self.data, self.tls = data, tls
        argv = self.command()
        self.logf = open(os.path.join(self.work, "log"), "a")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(["taskset", "-c", PROXY_CPU, *argv], stdout=self.logf,
                                     stderr=self.logf, start_new_session=True)
        last = host(self.count() - 1)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.work}/log")
            if tls:
                return tls_peer_cert(HTTPS, last) is not None and https_status(last) == 200
            return http_status(HTTP, last) == 200
        try:
            poll(ready, what=f"{self.name} to serve {last}")
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - t0

    def count(self):
        with open(os.path.join(self.data, "hosts.map")) as f:
            return sum(1 for _ in f)

    def stop(self):
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None
            self.logf.close()

    def pid(self):
        return self.proc.pid


def https_status(sni):
    ctx = ssl._create_unverified_context()
    try:
        c = http.client.HTTPSConnection("127.0.0.1", HTTPS, timeout=2, context=ctx)
        c.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", HTTPS), timeout=2),
                                 server_hostname=sni)
        c.request("GET", "/", headers={"Host": sni, "Connection": "close"})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except OSError:
        return None


class Edgeward(Proxy):
    name = "edgeward"

    def command(self):
        state = os.path.join(self.work, "state")
        shutil.rmtree(state, ignore_errors=True)
        shutil.copytree(os.path.join(self.data, "state"), state, symlinks=True)
        with open(os.path.join(self.work, "token"), "w") as f:
            f.write(TOKEN)
        https = f'\n  https: ["127.0.0.1:{HTTPS}"]' if self.tls else ""
        cfg = os.path.join(self.work, "edgeward.yaml")
        with open(cfg, "w") as f:
            f.write(f"""threads: 1
work_stealing: false
pid_file: {self.work}/edgeward.pid
upgrade_sock: {self.work}/upgrade.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
edgeward:
  http: ["127.0.0.1:{HTTP}"]{https}
  admin: {{listen: "127.0.0.1:{ADMIN}", token_file: "{self.work}/token"}}
  state: {{dir: "{state}"}}
""")
        os.environ["RUST_LOG"] = "warn"
        return [EDGEWARD, "-c", cfg]

    def admin(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=10)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read()
        c.close()
        if r.status != 200:
            raise RuntimeError(f"admin {method} {path}: {r.status} {text[:200]}")

    def add_domain(self, name):
        self.admin("PUT", f"/v1/domains/{name}", {"upstreams": [UP_ADDR]})

    def set_cert(self, name, pem_path):
        chain, key = split_pem(pem_path)
        self.admin("PUT", f"/v1/certificates/{name}", {"chain_pem": chain, "key_pem": key})


def copy_into(work, data, name):
    """A per-proxy copy of a data set file the proxy's changes append to."""
    dst = os.path.join(work, name)
    shutil.copy(os.path.join(data, name), dst)
    return dst


def split_pem(path):
    with open(path) as f:
        text = f.read()
    i = text.index("-----BEGIN PRIVATE KEY-----")
    return text[:i], text[i:]


class HAProxy(Proxy):
    name = "haproxy"

    def command(self):
        d = self.data
        self.hosts_map = copy_into(self.work, d, "hosts.map")
        ssl_bind = (f"\n  bind 127.0.0.1:{HTTPS} ssl crt-list {d}/crt-list alpn h2,http/1.1"
                    if self.tls else "")
        cfg = os.path.join(self.work, "haproxy.cfg")
        self.sock = os.path.join(self.work, "admin.sock")
        with open(cfg, "w") as f:
            f.write(f"""global
  master-worker
  nbthread 1
  maxconn 9000
  stats socket {self.sock} mode 600 level admin expose-fd listeners
  stats timeout 1h
  pidfile {self.work}/haproxy.pid
  tune.ssl.default-dh-param 2048

defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option forwardfor

frontend fe
  bind 127.0.0.1:{HTTP}{ssl_bind}
  http-request set-var(txn.ka) path,field(4,/),map({d}/challenges.map) if {{ path_beg /.well-known/acme-challenge/ }}
  http-request return status 200 content-type text/plain lf-string "%[var(txn.ka)]" if {{ var(txn.ka) -m found }}
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
  http-request set-header X-Forwarded-Proto http unless {{ ssl_fc }}
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  use_backend %[req.hdr(host),lower,map({self.hosts_map},be_404)]

backend be_up
  server up1 {UP_ADDR}

backend be_404
  http-request return status 404
""")
        self.cfg = cfg
        self.master = os.path.join(self.work, "master.sock")
        return ["haproxy", "-S", self.master, "-f", cfg]

    def cli(self, *commands):
        """Send commands on one runtime API connection; return the answers."""
        with Cli(self.sock) as c:
            return [c.send(cmd) for cmd in commands]

    def add_domain(self, name):
        self.cli(f"add map {self.hosts_map} {name} be_up")

    def add_domain_by_reload(self, name):
        with open(self.hosts_map, "a") as f:
            f.write(f"{name} be_up\n")
        self.reload()

    def set_cert(self, name, pem_path):
        with open(pem_path) as f:
            payload = f.read().strip()
        target = f"{self.data}/pem/{name}.pem"
        a = self.cli(f"set ssl cert {target} <<\n{payload}\n", f"commit ssl cert {target}")
        if "Success" not in a[-1] and "Committing" not in a[-1]:
            raise RuntimeError(f"haproxy commit: {a}")

    def reload(self):
        """`reload` on the master CLI: it is there again only when the previous reload has finished (a
        SIGUSR2 that arrives while the master re-executes itself is lost)."""
        def send():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.master)
                    s.sendall(b"reload\n")
                    return True
            except OSError:
                return False
        poll(send, deadline=60, what="the HAProxy master CLI")


class Cli:
    """HAProxy's runtime API in prompt mode: one connection, one answer (ending in "\n> ") per command."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.buf = b""
        self.send("prompt")

    def send(self, cmd):
        self.s.sendall(cmd.encode() + b"\n")
        while b"\n> " not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise RuntimeError(f"runtime API closed the connection after `{cmd[:40]}`")
            self.buf += chunk
        answer, self.buf = self.buf.split(b"\n> ", 1)
        return answer.decode()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.s.close()


class Nginx(Proxy):
    name = "nginx"

    def command(self):
        d = self.data
        self.conf_file = copy_into(self.work, d, "hosts.conf")
        ssl_listen = ""
        if self.tls:
            ssl_listen = f"""
    listen 127.0.0.1:{HTTPS} ssl;
    ssl_certificate {d}/pem/$ssl_server_name.pem;
    ssl_certificate_key {d}/pem/$ssl_server_name.pem;
    ssl_protocols TLSv1.2 TLSv1.3;"""
        cfg = os.path.join(self.work, "nginx.conf")
        with open(cfg, "w") as f:
            # With certificates read per handshake the worker must be able to read the keys (0600 here).
            user = "user root;\n" if os.geteuid() == 0 else ""
            f.write(f"""{user}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {self.work}/nginx.pid;
error_log {self.work}/error.log warn;
events {{ worker_connections 9000; }}
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  map_hash_max_size 262144;
  map_hash_bucket_size 128;
  map $host $pool {{
    default "";
    include {self.conf_file};
  }}
  upstream up {{
    server {UP_ADDR};
    keepalive 128;
    keepalive_requests 100000000;
  }}
  server {{
    listen 127.0.0.1:{HTTP};{ssl_listen}
    location /.well-known/acme-challenge/ {{
      root {d}/webroot;
    }}
    location / {{
      if ($pool = "") {{ return 404; }}
      proxy_pass http://$pool;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }}
  }}
}}
""")
        return ["nginx", "-e", f"{self.work}/error.log", "-c", cfg]

    def add_domain_by_reload(self, name):
        with open(self.conf_file, "a") as f:
            f.write(f"{name} up;\n")
        self.reload()

    def set_cert(self, name, pem_path):
        # Certificates are read per handshake ($ssl_server_name): an atomic file swap is the change.
        target = f"{self.data}/pem/{name}.pem"
        shutil.copy(pem_path, target + ".new")
        os.rename(target + ".new", target)

    def reload(self):
        os.kill(self.pid(), signal.SIGHUP)

    def set_cert(self, name, pem_path):
        # Certificates are read from disk per handshake ($ssl_server_name): the change is an atomic
        # rename of the file. The data set's original is kept and put back by restore_certs().
        target = f"{self.data}/pem/{name}.pem"
        backup = os.path.join(self.work, "orig-pem", f"{name}.pem")
        if not os.path.exists(backup):
            os.makedirs(os.path.dirname(backup), exist_ok=True)
            shutil.copy(target, backup)
        shutil.copy(pem_path, target + ".new")
        os.rename(target + ".new", target)

    def restore_certs(self):
        orig = os.path.join(self.work, "orig-pem")
        if os.path.isdir(orig):
            for f in os.listdir(orig):
                shutil.copy(os.path.join(orig, f), os.path.join(self.data, "pem", f))
            shutil.rmtree(orig)


# ---------------------------------------------------------------- measurements


def wrk(proxy, path_kind, n, duration, close=False, conns=50):
    """Closed-loop maximum with wrk: random host (and token) among n per request."""
    path = '"/.well-known/acme-challenge/tok" .. i' if path_kind == "challenge" else '"/"'
    extra = ', ["Connection"] = "close"' if close else ""
    script = os.path.join(proxy.work, "wrk.lua")
    with open(script, "w") as f:
        f.write(f"""math.randomseed(os.time())
request = function()
  local i = math.random(0, {n - 1})
  return wrk.format("GET", {path}, {{["Host"] = "host" .. i .. ".bench.test"{extra}}})
end
""")
    cpu0 = cpu_seconds(proxy.pid())
    out = run_tool(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "-s", script,
                    f"http://127.0.0.1:{HTTP}"])
    cpu = (cpu_seconds(proxy.pid()) - cpu0) / duration
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    # A read error on a `Connection: close` exchange is the server's close racing wrk's next write.
    errors = bad + (sum(int(x) for x in errs.groups()) if errs else 0)
    return {"value": rps, "cpu": cpu, "errors": errors}


def loadgen(proxy, *args, duration):
    cpu0 = cpu_seconds(proxy.pid()) if proxy else 0
    out = json.loads(run_tool([LOADGEN, *args, "--duration", str(duration)]))
    if proxy:
        out["cpu"] = (cpu_seconds(proxy.pid()) - cpu0) / duration
    return out


def paced(rate, duration, fn):
    """Call fn(j) at `rate` per second for `duration` seconds in a thread; returns (thread, stats)."""
    stats = {"done": 0, "errors": 0, "first_error": None}

    def body():
        t0 = time.monotonic()
        j = 0
        while True:
            at = t0 + j / rate
            if at - t0 >= duration:
                break
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                fn(j)
                stats["done"] += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                stats["errors"] += 1
                stats["first_error"] = stats["first_error"] or str(e)
            j += 1
        stats["per_second"] = stats["done"] / max(time.monotonic() - t0, 1e-9)
    t = threading.Thread(target=body)
    t.start()
    return t, stats


def median_time(change, check, times=5):
    out = []
    for k in range(times):
        t0 = time.monotonic()
        change(k)
        poll(lambda: check(k), deadline=120, what="the change to be served")
        out.append(time.monotonic() - t0)
    return statistics.median(out) * 1000


def first_cert_der(pem_path):
    with open(pem_path) as f:
        text = f.read()
    return ssl.PEM_cert_to_DER_cert(text[:text.index("-----END CERTIFICATE-----") + 25])


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

        # Traffic at the fixed rate while changes go on.
        if isinstance(p, Edgeward):
            changes = subprocess.Popen(["taskset", "-c", TOOLS_CPU, LOADGEN, "changes", "--addr",
                                        f"127.0.0.1:{ADMIN}", "--token", TOKEN, "--upstream",
                                        UP_ADDR, "--rate", "1000", "--conns", "16", "--duration",
                                        str(dur)], stdout=subprocess.PIPE, text=True)
            g = loadgen(p, *fixed, duration=dur)
            c = json.loads(changes.communicate()[0])
            what = f"{c['per_second']:,.0f} API changes/s, {c['errors']} failed, change p99 {c['p99_ms']} ms"
            record("5load", f"proxied at {rate:,} req/s during changes, p99", "ms", "lower", p.name,
                   g["p99_ms"], errors=g["errors"], p50=g["p50_ms"], changes=what)
            changes = subprocess.Popen(["taskset", "-c", TOOLS_CPU, LOADGEN, "changes", "--addr",
                                        f"127.0.0.1:{ADMIN}", "--token", TOKEN, "--upstream",
                                        UP_ADDR, "--rate", "1000", "--conns", "16", "--duration",
                                        str(dur)], stdout=subprocess.PIPE, text=True)
            g = loadgen(p, *own, duration=dur)
            c = json.loads(changes.communicate()[0])
            record("5load-own", "proxied at half the proxy's own maximum during changes, p99", "ms",
                   "lower", p.name, g["p99_ms"], errors=g["errors"], p50=g["p50_ms"], rate=own[-1],
                   changes=f"{c['per_second']:,.0f} API changes/s, change p99 {c['p99_ms']} ms")
        if isinstance(p, HAProxy):
            cli = Cli(p.sock)

            def add_map(j):
                answer = cli.send(f"add map {p.hosts_map} rt{j}.bench.test be_up")
                if answer.strip():
                    raise RuntimeError(answer)
            t, st = paced(1000, dur, add_map)
            g = loadgen(p, *fixed, duration=dur)
            t.join()
            cli.s.close()
            record("5load-rt", f"proxied at {rate:,} req/s during 1000 runtime API changes/s, p99", "ms",
                   "lower", p.name, g["p99_ms"], errors=g["errors"], p50=g["p50_ms"],
                   changes=f"{st['per_second']:,.0f} runtime API changes/s")
        if isinstance(p, (HAProxy, Nginx)):
            def reload(j):
                p.add_domain_by_reload(f"rr{j}.bench.test")
            t, st = paced(1, dur, reload)
            g = loadgen(p, *fixed, duration=dur)
            t.join()
            record("5load", f"proxied at {rate:,} req/s during changes, p99", "ms", "lower", p.name,
                   g["p99_ms"], errors=g["errors"], p50=g["p50_ms"],
                   changes=f"{st['done']} reloads, one per second")
            t, st = paced(1, dur, lambda j: p.add_domain_by_reload(f"ro{j}.bench.test"))
            g = loadgen(p, *own, duration=dur)
            t.join()
            record("5load-own", "proxied at half the proxy's own maximum during changes, p99", "ms",
                   "lower", p.name, g["p99_ms"], errors=g["errors"], p50=g["p50_ms"], rate=own[-1],
                   changes=f"{st['done']} reloads, one per second")
    finally:
        p.stop()


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
    os.makedirs(os.path.join(a.work, "bin"), exist_ok=True)
    for name, path in BUILT.items():
        globals()[name] = shutil.copy(path, os.path.join(a.work, "bin"))
    upstream = subprocess.Popen(["taskset", "-c", TOOLS_CPU, UPSTREAM, UP_ADDR],
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
