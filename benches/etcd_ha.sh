#!/usr/bin/env bash
# Admin write latency in fleet mode: 3/3 and 2/3 etcd members up, and during a leader change.
# See BENCHMARKS.md. Usage: benches/etcd_ha.sh [--writers N] [--seconds S] [--rounds K]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_packages "${BUILD_PACKAGES[@]}" etcd-server python3
cargo build --release --bin edgeward
exec python3 benches/etcd_ha.py "$@"
