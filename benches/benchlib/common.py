"""Shared by the comparison: ports, CPUs, binaries, process and socket helpers."""
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REL = os.path.join(ROOT, "target", "release")
# Copied into the work directory at start, so a rebuild during a long run changes nothing.
BUILT = {"EDGEWARD": os.path.join(REL, "edgeward"),
         "LOADGEN": os.path.join(REL, "examples", "loadgen"),
         "GEN": os.path.join(REL, "examples", "gen_certs"),
         "UPSTREAM": os.path.join(REL, "examples", "bench_upstream")}
# Filled by use_binaries(): the copies the run uses.
BIN = {}

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



def use_binaries(work):
    """Copy the built binaries into the work directory and use those."""
    os.makedirs(os.path.join(work, "bin"), exist_ok=True)
    for name, path in BUILT.items():
        BIN[name] = shutil.copy(path, os.path.join(work, "bin"))



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


def http_status(port, host_header, path="/", timeout=2, tls=False):
    """Status of one GET on a new connection (over TLS with SNI = host_header when tls), or None."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        if tls:
            c.sock = tls_socket(port, host_header, timeout)
        c.request("GET", path, headers={"Host": host_header, "Connection": "close"})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except OSError:
        return None


def tls_socket(port, sni, timeout=2):
    """A TLS connection with `sni`, certificate not verified (the benches use throw-away CAs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=timeout),
                           server_hostname=sni)


def tls_peer_cert(port, sni, timeout=2):
    try:
        with tls_socket(port, sni, timeout) as t:
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


def first_cert_der(pem_path):
    with open(pem_path) as f:
        text = f.read()
    return ssl.PEM_cert_to_DER_cert(text[:text.index("-----END CERTIFICATE-----") + 25])


