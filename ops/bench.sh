#!/usr/bin/env bash
# Runs the benchmark matrix of BENCHMARKS.md: every scenario three times (ratios to the bare TLS
# ceilings and the peers — a PostgreSQL exchange table through a pool, the real pgbench, RabbitMQ
# quorum queues — measured in the same runs) and prints medians with min–max.
# Usage: ops/bench.sh [OUT_DIR] [DURATION]   (defaults: target/bench, 10s)
# Needs the PostgreSQL of HUB_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test),
# pgbench on the PATH, and the RabbitMQ of HUB_BENCH_AMQP_URL (default guest on 127.0.0.1:5672).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench}
duration=${2:-10s}
mkdir -p "$out"
cargo build --release --quiet
hub=target/release/hub

run() { # name, repetitions, hub bench arguments...
  local name=$1 reps=$2
  shift 2
  for i in $(seq 1 "$reps"); do
    echo "== $name ($i/$reps): hub bench $*" >&2
    "$hub" bench --duration "$duration" --json "$out/$name-$i.json" "$@" >/dev/null
  done
}

peers=(--peer postgres --peer pgbench --peer rabbitmq)
run publish-256 3 --scenario publish --connections 256 --baseline "${peers[@]}"
run publish-64 3 --scenario publish --connections 64 --baseline "${peers[@]}"
run publish-pg-64 3 --scenario publish --connections 64 --engine postgres --peer pgbench
run publish-64-h2 3 --scenario publish --connections 64 --http2
run publish-open-2000 3 --scenario publish --connections 64 --rate 2000
run publish-invalid-64 3 --scenario publish-invalid --connections 64
run read-64 3 --scenario read --connections 64
run lookup-64 3 --scenario lookup --connections 64
run mixed-64 3 --scenario mixed --connections 64
run deliver-64 3 --scenario deliver --connections 64

python3 - "$out" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = {}
for f in sorted(glob.glob(os.path.join(out, "*-[0-9].json"))):
    runs.setdefault(os.path.basename(f).rsplit("-", 1)[0], []).append(json.load(open(f)))
def fig(vals, fmt="{:.0f}"):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    return f"{fmt.format(statistics.median(vals))} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"
print("| run | records or requests/s | p50 ms | p99 ms | p99.9 ms | errors | hub RSS peak MiB | hub CPU cores | ÷ parse | ÷ validate | ÷ postgres | ÷ pgbench | ÷ rabbitmq | deliveries/s | publish→receipt p99 ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for name, rs in runs.items():
    g = lambda f: [f(r) for r in rs]
    print("| " + " | ".join([
        name,
        fig(g(lambda r: r["hub"]["per_s"])),
        fig(g(lambda r: r["hub"]["latency_ms"]["p50"]), "{:.2f}"),
        fig(g(lambda r: r["hub"]["latency_ms"]["p99"]), "{:.2f}"),
        fig(g(lambda r: r["hub"]["latency_ms"]["p99.9"]), "{:.2f}"),
        str(sum(r["hub"]["errors"] for r in rs)),
        fig(g(lambda r: r["hub_rss_peak_mib"]), "{:.0f}"),
        fig(g(lambda r: r["hub_cpu_cores"]), "{:.2f}"),
        fig(g(lambda r: r.get("ratio_to_parse")), "{:.2f}"),
        fig(g(lambda r: r.get("ratio_to_validate")), "{:.2f}"),
        fig(g(lambda r: r.get("ratio_to_postgres")), "{:.2f}"),
        fig(g(lambda r: r.get("ratio_to_pgbench")), "{:.2f}"),
        fig(g(lambda r: r.get("ratio_to_rabbitmq")), "{:.2f}"),
        fig(g(lambda r: r.get("deliveries", {}).get("per_s"))),
        fig(g(lambda r: r.get("deliveries", {}).get("publish_to_receipt_ms", {}).get("p99")), "{:.1f}"),
    ]) + " |")
for name, rs in runs.items():
    for key in ("baseline_parse", "baseline_validate", "peer_postgres", "peer_pgbench", "peer_rabbitmq"):
        if key in rs[0]:
            print(f"{name} {key}: " + fig([r[key]["per_s"] for r in rs]) + "/s, p99 " + fig([r[key]["latency_ms"]["p99"] for r in rs], "{:.2f}") + " ms")
m = next(iter(runs.values()))[0]["machine"]
print(f"machine: {m['cores']} cores, {m['fsyncs_per_s']:.0f} fsync/s, kernel {m['kernel']}; record {next(iter(runs.values()))[0]['record_bytes']} bytes")
PY
