#!/usr/bin/env bash
# Memory per connection (idle keep-alive, half-sent head) and latency with slow clients connected:
# edgeward vs HAProxy vs nginx in one run. See BENCHMARKS.md.
# Usage: benches/conn_memory.sh [--conns N] [--slow N] [--rate R] [--rounds K] [--only LIST]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_packages "${BUILD_PACKAGES[@]}" haproxy nginx wrk python3 util-linux
cargo build --release --bin edgeward --example loadgen --example gen_certs --example bench_upstream
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 benches/conn_memory.py "$@"
