#!/usr/bin/env bash
# Load test of one edgeward worker thread with 100k domains and 100k challenge tokens:
#   1. ACME challenge responses (random token + its host per request), keep-alive;
#   2. proxied requests (random host among the 100k domains) to a local upstream, keep-alive.
# edgeward is pinned to CPU 0, wrk and the upstream to the other CPUs. Prints req/s and latency.
# Usage: benches/wrk.sh [DURATION_SECONDS] [CONNECTIONS]   (defaults: 10 50)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${2:-50}
N=100000
. scripts/lib.sh
need_packages wrk cmake perl

cargo build --release --bin edgeward --example bench_upstream
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

HTTP=28080; ADMIN=29900; UP=28081
LAST=$(( $(nproc) - 1 ))
taskset -c 1-"$LAST" target/release/examples/bench_upstream "127.0.0.1:$UP" 2>/dev/null & PIDS+=($!)
cat > "$WORK/edgeward.yaml" <<YAML
threads: 1
pid_file: $WORK/edgeward.pid
upgrade_sock: $WORK/upgrade.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
edgeward:
  http: ["127.0.0.1:$HTTP"]
  admin: {listen: "127.0.0.1:$ADMIN", token_file: "$WORK/token"}
  state: {dir: "$WORK/state"}
YAML
echo bench > "$WORK/token"
RUST_LOG=error taskset -c 0 target/release/edgeward -c "$WORK/edgeward.yaml" 2>"$WORK/edgeward.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$ADMIN/v1/health"

echo "loading $N domains and $N challenge tokens through the admin API (batches of 10k+10k)..."
T0=$(date +%s.%N)
python3 - "$ADMIN" "$UP" "$N" <<'PY'
import json, sys, urllib.request
admin, up, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def post(ops):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/v1/batch", data=json.dumps({"ops": ops}).encode(),
                                 method="POST", headers={"Authorization": "Bearer bench"})
    urllib.request.urlopen(req).read()
for start in range(0, n, 10000):
    ops = []
    for i in range(start, min(n, start + 10000)):
        ops.append({"op": "put_domain", "host": f"d{i}.bench.test", "upstreams": [f"127.0.0.1:{up}"]})
        ops.append({"op": "put_challenge", "token": f"tok{i}", "host": f"d{i}.bench.test",
                    "key_authorization": f"tok{i}.Thumbprint_0123456789abcdefghijklmnopqrstuv"})
    post(ops)
PY
echo "loaded in $(echo "$(date +%s.%N) - $T0" | bc) s"

cat > "$WORK/challenge.lua" <<'LUA'
math.randomseed(42)
request = function()
  local i = math.random(0, 99999)
  return wrk.format("GET", "/.well-known/acme-challenge/tok" .. i, {["Host"] = "d" .. i .. ".bench.test"})
end
LUA
cat > "$WORK/proxy.lua" <<'LUA'
math.randomseed(42)
request = function()
  local i = math.random(0, 99999)
  return wrk.format("GET", "/", {["Host"] = "d" .. i .. ".bench.test"})
end
LUA

run() {
  echo "== $1"
  taskset -c 1-"$LAST" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -s "$WORK/$2" "http://127.0.0.1:$HTTP" \
    | grep -E "Requests/sec|Latency|50%|99%|Non-2xx|Socket errors"
}
run "ACME challenge, random token of $N, keep-alive" challenge.lua
run "proxied request, random host of $N, keep-alive" proxy.lua
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
