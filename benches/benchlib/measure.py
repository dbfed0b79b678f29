"""Data sets and load: wrk for maximum rates, loadgen for the rest, paced changes."""
import json
import os
import re
import shutil
import statistics
import subprocess
import threading
import time

from benchlib.common import BIN, HTTP, cpu_seconds, host, key_authorization, poll, run_tool


# Written into a data set's `done` marker: a set made by an older gen_certs is made again. 2: domains
# in the current form (`certificate_host`), so edgeward does not migrate (rewrite) them at each start.
DATA_FORMAT = "2"


def gen(work, name, n, *flags):
    """A data set of n hosts: edgeward state, PEM files, HAProxy maps and crt-list, nginx map and webroot."""
    d = os.path.join(work, name)
    done = os.path.join(d, "done")
    if os.path.exists(done) and open(done).read() == DATA_FORMAT:
        return d
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    pem = os.path.join(d, "pem")
    subprocess.run([BIN["GEN"], os.path.join(d, "state"), str(n), "--pem", pem, *flags], check=True)
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
    with open(done, "w") as f:
        f.write(DATA_FORMAT)
    return d


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
    out = json.loads(run_tool([BIN["LOADGEN"], *args, "--duration", str(duration)]))
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


