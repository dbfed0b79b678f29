#!/usr/bin/env bash
# One page of GET /v1/domains at 100k domains, and the whole list (see BENCHMARKS.md).
# Usage: benches/admin_lists.sh [--domains N] [--pages K]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_packages "${BUILD_PACKAGES[@]}" python3 util-linux
cargo build --release --bin edgeward --example gen_certs --example loadgen --example bench_upstream
exec python3 benches/admin_lists.py "$@"
