#!/usr/bin/env bash
# Proxy throughput and latency with the JSON access log off and on (interleaved rounds, medians).
# See BENCHMARKS.md. Usage: benches/access_log.sh [--domains N] [--duration S] [--rounds K]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_packages "${BUILD_PACKAGES[@]}" wrk python3 util-linux
cargo build --release --bin edgeward --example loadgen --example gen_certs --example bench_upstream
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 benches/access_log.py "$@"
