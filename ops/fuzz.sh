#!/usr/bin/env bash
# Fuzzes the hub's parsers for a bounded time on the stable toolchain (libFuzzer through
# cargo-fuzz, `--sanitizer none`): the publish body, the NDJSON batch, the config loader, jq
# filters and field mappings. Usage: ops/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# (default 60 s each, every target). Seeds come from the repository's own schemas' examples,
# samples and configs; findings land in fuzz/artifacts/TARGET/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

seed() { # seed TARGET FILE...: copies files into the target's corpus (once)
  local t=$1; shift
  mkdir -p "corpus/$t"
  for f in "$@"; do [ -f "$f" ] && cp -n "$f" "corpus/$t/seed-$(basename "$(dirname "$f")")-$(basename "$f")"; done
  return 0
}
seed publish_body ../schemas/marriage-registration/v1/examples/*/*.json ../schemas/marriage-registration/v1/examples/*.json
seed ndjson_batch ../schemas/household-registration/v1/examples/*/*.json ../schemas/household-registration/v1/examples/*.json
seed config_loader ../config/*.toml ../config/examples/*.toml
mkdir -p corpus/jq_filter corpus/field_mapping
printf '.kind == "marriage"\n{"kind":"marriage","parties":[{"id_number":"1"}]}' > corpus/jq_filter/seed-filter
printf '{nsrsbh: .uscc, nsrmc: .name}\n/uscc,/name\n{"uscc":"91440184MA59XXXX0X","name":"x","extra":1}' > corpus/field_mapping/seed-mapping

status=0
for t in "${targets[@]}"; do
  echo "== $t: ${secs} s"
  if ! cargo fuzz run --sanitizer none -O "$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 25; then
    status=1
  fi
done
exit $status
