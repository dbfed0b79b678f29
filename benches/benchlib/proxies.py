"""The three proxies: configuration, start, changes."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time

from benchlib.common import (ADMIN, BIN, HTTP, HTTPS, PROXY_CPU, TOKEN, UP_ADDR, copy_into,
                             host, http_status, poll, split_pem, tls_peer_cert)


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
                return tls_peer_cert(HTTPS, last) is not None and http_status(HTTPS, last, tls=True) == 200
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


class Edgeward(Proxy):
    name = "edgeward"
    # Lines appended under `edgeward:` (indented two spaces), e.g. an access_log section.
    extra = ""

    def json_log(self):
        """Run with the JSON access log, to a new `access.log` in the work directory; its path."""
        logfile = os.path.join(self.work, "access.log")
        if os.path.exists(logfile):
            os.remove(logfile)
        self.extra = f'  access_log: {{path: "{logfile}", format: json}}\n'
        return logfile

    def command(self):
        state = os.path.join(self.work, "state")
        shutil.rmtree(state, ignore_errors=True)
        shutil.copytree(os.path.join(self.data, "state"), state, symlinks=True)
        # The copy is set-up, not start-up: its writeback must not compete with the start measured next.
        os.sync()
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
{self.extra}""")
        os.environ["RUST_LOG"] = "warn"
        return [BIN["EDGEWARD"], "-c", cfg]

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
    # A path for a JSON access log with edgeward's fields, buffered as nginx is run in production
    # (benches/access_log.py); None: `access_log off`.
    access_log = None

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
        access = "access_log off;"
        if self.access_log:
            access = f"""log_format edge escape=json '{{"time":"$time_iso8601","client":"$remote_addr:$remote_port",'
    '"listener":"$server_addr:$server_port","tls":"$ssl_protocol","sni":"$ssl_server_name",'
    '"method":"$request_method","host":"$host","path":"$request_uri","protocol":"$server_protocol",'
    '"status":$status,"bytes_sent":$bytes_sent,"request_bytes":$request_length,'
    '"duration_ms":$request_time,"upstream":"$upstream_addr","upstream_ms":"$upstream_response_time",'
    '"request_id":"$request_id"}}';
  access_log {self.access_log} edge buffer=64k flush=1s;"""
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
  {access}
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


