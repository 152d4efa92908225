#!/usr/bin/env bash
# The reliability and security family: crash cycles, overload and slow clients, graceful
# shutdown, disk full (as root), the endpoint × caller matrix, TLS, hostile input.
# `ops/reliability.sh` runs the short mode that CI runs too (ops/test.sh includes it);
# `ops/reliability.sh --long` runs 20 crash cycles and 100,000 hostile requests (RELIABILITY.md).
# HUB_RELIABILITY_SEED=N replays a run's random choices.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--long" ]; then
  export HUB_RELIABILITY_LONG=1
  shift
fi
# Each suite is a module of the one end-to-end binary: the filters pick them by module path.
cargo test --release --test e2e "$@" -- --nocapture reliability_ security_
