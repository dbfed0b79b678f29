#!/usr/bin/env python3
"""Admin write latency in fleet mode on a real 3-member etcd: 3/3 members up, 2/3 up (a follower
killed), and during a leader change (the leader killed, writes issued in the following seconds).

Run through benches/etcd_ha.sh. One edgeward node, W concurrent writers (PUT /v1/domains/..., each
durable in etcd before it answers). Per round: a steady phase with 3/3, one with 2/3, and a leader
kill with the writes of the next --election-window seconds; rounds interleave the phases. Prints
p50/p99/max per phase (medians over rounds) and the number of failed writes (must be 0). A steady
phase counts the writes started in it; the leader change counts the writes in flight when the leader
died and those started in the window after it.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

TOKEN = "bench"
ADMIN = 29950
BASE = 23790  # etcd client ports BASE+i, peer ports BASE+10+i


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def poll(check, what, deadline=60):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def post_json(port, path, body, timeout=2):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = json.loads(r.read() or b"{}")
    c.close()
    return data


class Etcd:
    def __init__(self, work, n=3):
        self.work, self.n, self.procs = work, n, [None] * n
        self.cluster = ",".join(f"n{i}=http://127.0.0.1:{BASE + 10 + i}" for i in range(n))

    def start(self, i):
        logf = open(os.path.join(self.work, f"etcd{i}.log"), "a")
        self.procs[i] = subprocess.Popen(
            ["etcd", "--name", f"n{i}", "--data-dir", os.path.join(self.work, f"data{i}"),
             "--listen-client-urls", f"http://127.0.0.1:{BASE + i}",
             "--advertise-client-urls", f"http://127.0.0.1:{BASE + i}",
             "--listen-peer-urls", f"http://127.0.0.1:{BASE + 10 + i}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{BASE + 10 + i}",
             "--initial-cluster", self.cluster, "--initial-cluster-token", "edgeward-bench",
             "--pre-vote"],
            stdout=subprocess.DEVNULL, stderr=logf, start_new_session=True)

    def healthy(self, i):
        c = http.client.HTTPConnection("127.0.0.1", BASE + i, timeout=1)
        c.request("GET", "/health")
        ok = b"true" in c.getresponse().read()
        c.close()
        return ok

    def start_all(self):
        for i in range(self.n):
            self.start(i)
        for i in range(self.n):
            poll(lambda: self.healthy(i), f"etcd member {i}")

    def kill(self, i):
        p, self.procs[i] = self.procs[i], None
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()

    def restart(self, i):
        self.start(i)
        poll(lambda: self.healthy(i), f"etcd member {i} back")

    def leader(self):
        def find():
            for i in range(self.n):
                if self.procs[i] is None:
                    continue
                try:
                    s = post_json(BASE + i, "/v3/maintenance/status", {}, timeout=1)
                except (OSError, ValueError):
                    continue
                if s.get("leader") and s["leader"] == s["header"]["member_id"]:
                    self.found = i
                    return True
            return False
        poll(find, "an etcd leader")
        return self.found

    def stop(self):
        for i in range(self.n):
            if self.procs[i]:
                self.kill(i)


def start_edgeward(work, binary):
    with open(os.path.join(work, "token"), "w") as f:
        f.write(TOKEN)
    eps = ", ".join(f'"http://127.0.0.1:{BASE + i}"' for i in range(3))
    cfg = os.path.join(work, "edgeward.yaml")
    with open(cfg, "w") as f:
        f.write(f"""threads: 1
pid_file: {work}/edgeward.pid
upgrade_sock: {work}/upgrade.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
edgeward:
  http: ["127.0.0.1:29980"]
  admin: {{listen: "127.0.0.1:{ADMIN}", token_file: "{work}/token"}}
  state:
    dir: "{work}/state"
    etcd: {{endpoints: [{eps}], prefix: "/edgeward-bench"}}
""")
    logf = open(os.path.join(work, "edgeward.log"), "a")
    p = subprocess.Popen([binary, "-c", cfg], stdout=logf, stderr=logf, start_new_session=True,
                         env={**os.environ, "RUST_LOG": "warn"})

    def up():
        socket.create_connection(("127.0.0.1", ADMIN), timeout=0.5).close()
        return True
    poll(up, "edgeward's admin listener")
    return p


class Writers:
    """W threads writing domains in a loop; every write recorded as (start, end, ms, ok)."""

    def __init__(self, w):
        self.samples, self.failures = [], []
        self.stop = False
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(w)]
        for t in self.threads:
            t.start()

    def run(self, i):
        n = 0
        conn = None
        while not self.stop:
            n += 1
            body = json.dumps({"upstreams": ["127.0.0.1:9"],
                               "upstream_timeouts": {"read_timeout_ms": 1 + n % 100000}})
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=30)
                conn.request("PUT", f"/v1/domains/w{i}-{n % 50}.bench.test", body=body,
                             headers={"Authorization": f"Bearer {TOKEN}"})
                r = conn.getresponse()
                r.read()
                status = r.status
            except OSError as e:
                conn, status = None, str(e)
            t1 = time.monotonic()
            with self.lock:
                self.samples.append((t0, t1, (t1 - t0) * 1000, status == 200))
                if status != 200:
                    self.failures.append(f"at {t0:.1f}: {status}")

    def started_in(self, t0, t1):
        """Latencies of the writes started in [t0, t1)."""
        with self.lock:
            return [ms for (s, _, ms, ok) in self.samples if t0 <= s < t1 and ok]

    def across(self, t, window):
        """Latencies of the writes in flight at t or started within `window` after it."""
        with self.lock:
            return [ms for (s, e, ms, ok) in self.samples if e >= t and s < t + window and ok]

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5, help="length of each steady phase")
    ap.add_argument("--election-window", type=float, default=3,
                    help="seconds of writes measured from the leader's kill")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/edgeward-etcd-ha")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    binary = shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target",
                                      "release", "edgeward"), a.work)
    etcd = Etcd(a.work)
    etcd.start_all()
    node = start_edgeward(a.work, binary)
    rounds = {"3/3 up": [], "2/3 up": [], "leader change": []}
    try:
        w = Writers(a.writers)
        time.sleep(1)  # warm: connections, leases
        for r in range(a.rounds):
            t = time.monotonic()
            time.sleep(a.seconds)
            samples = {"3/3 up": w.started_in(t, t + a.seconds)}
            leader = etcd.leader()
            follower = next(i for i in range(3) if i != leader)
            etcd.kill(follower)
            t = time.monotonic()
            time.sleep(a.seconds)
            samples["2/3 up"] = w.started_in(t, t + a.seconds)
            etcd.restart(follower)
            time.sleep(1)
            leader = etcd.leader()
            t = time.monotonic()
            etcd.kill(leader)
            time.sleep(a.election_window + 3)  # the window, and the last writes' answers
            samples["leader change"] = w.across(t, a.election_window)
            etcd.restart(leader)
            time.sleep(1)
            phases = {}
            for label, xs in samples.items():
                phases[label] = (pct(xs, 0.5), pct(xs, 0.99), max(xs), len(xs))
                rounds[label].append(phases[label])
            log(f"round {r + 1}: " + "; ".join(
                f"{k}: p50 {v[0]:.1f} ms p99 {v[1]:.1f} ms max {v[2]:.0f} ms ({v[3]} writes)"
                for k, v in phases.items()))
        w.finish()
    finally:
        os.killpg(node.pid, signal.SIGKILL)
        etcd.stop()
    print(f"writers: {a.writers}; failed writes: {len(w.failures)} {w.failures[:5]}")
    print("| members | p50 ms | p99 ms | max ms | writes/s |")
    print("|---|---|---|---|---|")
    for label, rs in rounds.items():
        secs = a.election_window if label == "leader change" else a.seconds
        med = [statistics.median(x[k] for x in rs) for k in range(4)]
        print(f"| {label} | {med[0]:.1f} | {med[1]:.1f} | {med[2]:.0f} | {med[3] / secs:.0f} |")


if __name__ == "__main__":
    main()
