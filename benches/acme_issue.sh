#!/usr/bin/env bash
# Issuance throughput against a local Pebble: N domains with tls "auto" put in one batch, then wait until
# every one is served with a certificate. Prints certificates per minute.
# Usage: benches/acme_issue.sh [N] [MAX_CONCURRENT_ORDERS]   (defaults: 200 8)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
CONC=${2:-8}
. scripts/lib.sh
need_packages cmake perl openssl pebble

cargo build --release --bin edgeward
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
HTTP=28090; HTTPS=28453; ADMIN=29902; ACME=28400; MGMT=28401; DNS=28402; CTS=28403

# Pebble's HTTPS certificate: a throw-away CA (trusted by edgeward via ca_bundle) and a leaf for localhost.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$WORK/key.pem" -out "$WORK/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$WORK/leaf.ext"
openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 2 \
  -extfile "$WORK/leaf.ext" -out "$WORK/cert.pem" 2>/dev/null
cat > "$WORK/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$ACME", "managementListenAddress": "127.0.0.1:$MGMT",
 "certificate": "$WORK/cert.pem", "privateKey": "$WORK/key.pem", "httpPort": $HTTP, "tlsPort": 28404,
 "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
pebble-challtestsrv -http01 "" -https01 "" -tlsalpn01 "" -defaultIPv6 "" -defaultIPv4 127.0.0.1 \
  -dns01 "127.0.0.1:$DNS" -management "127.0.0.1:$CTS" >"$WORK/dns.log" 2>&1 & PIDS+=($!)
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
  pebble -config "$WORK/pebble.json" -dnsserver "127.0.0.1:$DNS" >"$WORK/pebble.log" 2>&1 & PIDS+=($!)
until curl -fsS --cacert "$WORK/ca.pem" -o /dev/null "https://localhost:$ACME/dir" 2>/dev/null; do sleep 0.1; done

cat > "$WORK/edgeward.yaml" <<YAML
threads: 2
pid_file: $WORK/edgeward.pid
upgrade_sock: $WORK/upgrade.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
edgeward:
  http: ["127.0.0.1:$HTTP"]
  https: ["127.0.0.1:$HTTPS"]
  admin: {listen: "127.0.0.1:$ADMIN", token_file: "$WORK/token"}
  state: {dir: "$WORK/state"}
  acme:
    directory: "https://localhost:$ACME/dir"
    ca_bundle: "$WORK/ca.pem"
    max_concurrent_orders: $CONC
    max_orders_per_window: 100000
YAML
echo bench > "$WORK/token"
RUST_LOG=warn target/release/edgeward -c "$WORK/edgeward.yaml" 2>"$WORK/edgeward.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$ADMIN/v1/health"

python3 - "$ADMIN" "$N" <<'PY'
import json, sys, time, urllib.request
admin, n = sys.argv[1], int(sys.argv[2])
H = {"Authorization": "Bearer bench"}
def call(method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", method=method, headers=H,
                                 data=None if body is None else json.dumps(body).encode())
    return json.loads(urllib.request.urlopen(req).read() or b"null")
ops = [{"op": "put_domain", "host": f"site{i}.bench.test", "upstreams": ["127.0.0.1:9"], "tls": "auto"}
       for i in range(n)]
t0 = time.time()
call("POST", "/v1/batch", {"ops": ops})
while True:
    states = [d.get("certificate", {}).get("state") for d in call("GET", "/v1/domains")]
    done, failed = states.count("valid"), states.count("failed")
    if done + failed == n:
        break
    if time.time() - t0 > 600:
        sys.exit(f"timed out: {done} valid, {failed} failed")
    time.sleep(0.2)
dt = time.time() - t0
print(f"{done} certificates issued ({failed} failed) in {dt:.1f} s with {sys.argv[2] and ''}"
      f"bounded concurrency: {done / dt * 60:.0f} certificates/minute")
PY
echo "max_concurrent_orders: $CONC; machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
