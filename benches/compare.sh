#!/usr/bin/env bash
# edgeward vs HAProxy vs nginx, one after another on this machine, at 100k domains: installs what is
# missing (HAProxy, nginx, wrk from Debian), builds edgeward and the bench tools, then runs
# benches/compare.py, which prints the table of absolute figures and ratios. See BENCHMARKS.md.
# Usage: benches/compare.sh [--domains N] [--duration SECONDS] [--only haproxy,nginx,edgeward]
#        [--phases http,tls] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_packages "${BUILD_PACKAGES[@]}" haproxy nginx wrk openssl python3 util-linux
cargo build --release --bin edgeward --example loadgen --example gen_certs --example bench_upstream
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 benches/compare.py "$@"
