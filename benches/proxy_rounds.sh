#!/usr/bin/env bash
# Proxied keep-alive maximum of HAProxy, nginx and edgeward in interleaved rounds (medians); see
# benches/proxy_rounds.py for the options (A/B of edgeward builds, a perf profile).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_packages "${BUILD_PACKAGES[@]}" haproxy nginx wrk python3 util-linux linux-perf
cargo build --release --bin edgeward --example gen_certs --example bench_upstream --example loadgen --example proxy_floor --example bare_pingora
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 benches/proxy_rounds.py "$@"
