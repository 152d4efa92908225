#!/usr/bin/env bash
# Runs every test suite of the hub: unit tests, proptests and the end-to-end suites in tests/
# (real HTTPS with the hub's own certificates, the real binary, real files). Suites that need an
# external server run only when its URL is set, and this script names the ones it skipped.
# Needs only a Rust toolchain; extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

skipped=()
for var in HUB_TEST_POSTGRES_URL HUB_TEST_MYSQL_URL HUB_TEST_AMQP_URL; do
  [ -n "${!var:-}" ] || skipped+=("$var")
done

cargo test --release --workspace "$@"
# The national crypto suite: the suites of the record's way and of operations again, with every
# hub they start sealing its chain with SM3 and signing with SM2 (tests/harness: HUB_TEST_SUITE).
# `--workspace` as above, so the features unify the same way and nothing is built a second time.
HUB_TEST_SUITE=sm3-sm2 cargo test --release --workspace --test e2e -- \
  exchange:: delivery:: ops:: durability:: cluster:: services::

if [ ${#skipped[@]} -gt 0 ]; then
  echo "skipped: the suites that need ${skipped[*]} (PostgreSQL / MariaDB / RabbitMQ adapters, the PostgreSQL"
  echo "store and cluster suites, and the front-end exchange end to end); set them to run those, as .ci/run does"
fi
