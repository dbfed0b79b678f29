#!/usr/bin/env bash
# TLS start-up at scale: fill a state directory with N ECDSA certificates, start edgeward on it, and
# measure (1) the time from exec to the first served handshake (for the last certificate's name) and
# (2) RSS per certificate (RSS with N certificates minus RSS with none, divided by N).
# Usage: benches/tls_startup.sh [N]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
. scripts/lib.sh
need_packages cmake perl openssl

cargo build --release --bin edgeward --example gen_certs
WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
HTTPS=28443; ADMIN=29901

config() { # $1 = state dir
cat > "$WORK/edgeward.yaml" <<YAML
threads: 1
pid_file: $WORK/edgeward.pid
upgrade_sock: $WORK/upgrade.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
edgeward:
  http: ["127.0.0.1:28089"]
  https: ["127.0.0.1:$HTTPS"]
  admin: {listen: "127.0.0.1:$ADMIN", token_file: "$WORK/token"}
  state: {dir: "$1"}
YAML
}
echo bench > "$WORK/token"

# run STATE_DIR SNI: start, wait for a handshake with SNI, print "seconds rss_kib"
run() {
  config "$1"
  local t0 t1 rss
  t0=$(date +%s.%N)
  RUST_LOG=info target/release/edgeward -c "$WORK/edgeward.yaml" 2>>"$WORK/edgeward.log" &
  PID=$!
  until echo | openssl s_client -connect "127.0.0.1:$HTTPS" -servername "$2" -CAfile "$WORK/ca.pem" \
        -verify_return_error 2>/dev/null | grep -q "Verify return code: 0"; do
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/edgeward.log"; exit 1; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  echo "$(echo "$t1 - $t0" | bc) $rss"
}

# Each gen_certs run writes its CA to $WORK/ca.pem: generate, then measure, one set at a time.
target/release/examples/gen_certs "$WORK/one" 1 2>/dev/null
read -r T1 RSS1 < <(run "$WORK/one" host0.bench.test)
echo "generating $N ECDSA P-256 certificates..."
target/release/examples/gen_certs "$WORK/state" "$N"
read -r TN RSSN < <(run "$WORK/state" "host$((N - 1)).bench.test")
echo "1 certificate:        first handshake after ${T1} s, RSS ${RSS1} KiB"
echo "$N certificates: first handshake after ${TN} s, RSS ${RSSN} KiB"
echo "RSS per certificate:  $(( (RSSN - RSS1) * 1024 / (N - 1) )) bytes"
grep -h "restored" "$WORK/edgeward.log" | tail -1 || true
