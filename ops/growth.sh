#!/usr/bin/env bash
# How the hub's cost grows with what it holds (BENCHMARKS.md, "How cost grows"): publish and
# audited lookup at 64 connections, start-to-ready time, bytes on disk per stored record and the
# WAL's peak, on an empty store and with 1 million and 5 million records already stored. The
# records are written straight through the store (`hub bench --stored`), into one kept data
# directory that grows from 1 M to 5 M. The empty store is measured first and again last, so the
# machine's drift over the run shows beside the figures.
# Usage: ops/growth.sh [OUT_DIR] [DURATION]   (defaults: target/growth, 10s; about 15 GB of disk
# and 20 minutes for the default sizes; GROWTH_SIZES="1000000 5000000" sets them)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/growth}
duration=${2:-10s}
sizes=${GROWTH_SIZES:-1000000 5000000}
mkdir -p "$out"
cargo build --release --quiet
hub=target/release/hub
kept="$out/data"
rm -rf "$kept"

run() { # name, hub bench arguments...
  local name=$1
  shift
  echo "== $name: hub bench $*" >&2
  "$hub" bench --connections 64 --duration "$duration" --json "$out/$name.json" "$@" >/dev/null
}

empty() { # tag
  run "0-lookup-$1" --scenario lookup
  run "0-publish-$1" --scenario publish
}

empty first
# Reads the kept database once, so each run starts with it in the page cache as a server with the
# memory for it would (the preload alone leaves a varying part of it there: a run on a cold cache
# measures the disk's random reads, not the hub).
warm() {
  if [ -f "$kept/hub.db" ]; then cat "$kept/hub.db" >/dev/null; fi
}

for n in $sizes; do
  "$hub" bench --connections 64 --duration 1s --warmup 0s --scenario lookup --stored "$n" --keep "$kept" >/dev/null 2>"$out/$n-preload.log"
  warm
  run "$n-lookup" --scenario lookup --stored "$n" --keep "$kept"
  warm
  run "$n-publish" --scenario publish --stored "$n" --keep "$kept"
done
empty last
rm -rf "$kept"

python3 - "$out" "$sizes" <<'PY'
import json, os, sys
out, sizes = sys.argv[1], sys.argv[2].split()
def load(name):
    return json.load(open(os.path.join(out, name + ".json")))
rows = [("0 (first)", "0-lookup-first", "0-publish-first")]
rows += [(f"{int(n):,}", f"{n}-lookup", f"{n}-publish") for n in sizes]
rows.append(("0 (last)", "0-lookup-last", "0-publish-last"))
print("| records stored | publish/s | publish p99 ms | lookup/s | lookup p99 ms | start to ready s | bytes on disk per stored record | WAL peak MiB (preload; runs) | preload | hub RSS peak MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
base = None
for label, lk, pb in rows:
    l, p = load(lk), load(pb)
    if base is None:
        base = (l["hub"]["per_s"], p["hub"]["per_s"])
    ratio = lambda v, b: f" ({v / b:.2f})" if b else ""
    pre = {}
    try:
        for line in open(os.path.join(out, lk.replace("-lookup", "") + "-preload.log")):
            if line.startswith("stored "):
                w = line.split()
                pre = {"records": int(w[1]), "seconds": float(w[4]), "wal_peak_mib": w[-2]}
    except OSError:
        pass
    per = l.get("database_bytes_per_stored_record")
    print("| " + " | ".join([
        label,
        f'{p["hub"]["per_s"]:,.0f}{ratio(p["hub"]["per_s"], base[1])}',
        f'{p["hub"]["latency_ms"]["p99"]:.1f}',
        f'{l["hub"]["per_s"]:,.0f}{ratio(l["hub"]["per_s"], base[0])}',
        f'{l["hub"]["latency_ms"]["p99"]:.1f}',
        f'{l["ready_s"]:.2f} / {p["ready_s"]:.2f}',
        f"{per:,.0f}" if per else "–",
        f'{pre.get("wal_peak_mib", "–")}; {max(l["wal_peak_mib"], p["wal_peak_mib"]):.0f}',
        f'{pre["records"]:,} in {pre["seconds"]:.0f} s' if pre else "–",
        f'{max(l["hub_rss_peak_mib"], p["hub_rss_peak_mib"]):.0f}',
    ]) + " |")
PY
