#!/usr/bin/env bash
# The failover drill, on this machine: etcd, two PostgreSQL 15 servers under Patroni in
# synchronous mode, HAProxy sending connections to whichever server Patroni's REST API calls the
# primary (ops/deploy/cluster.md), and two hub nodes through it. tests/e2e/failover.rs then
# publishes and delivers under load, SIGKILLs the primary's postmaster, and checks that the
# standby is promoted, both hub nodes answer again without a restart, every acknowledged record
# is stored exactly once, the audit chain verifies and deliveries resume. It prints the time to
# recover and the requests refused meanwhile (RELIABILITY.md).
#
# Needs Debian's patroni, python3-etcd, etcd-server and haproxy (installed when missing, as root)
# and PostgreSQL 15's server binaries. Ports: FAILOVER_PORT_BASE (default 25400) and the nine
# after it. KEEP=1 keeps the work folder (logs of etcd, both Patronis and HAProxy). `--up` starts
# the cluster and leaves it running without the drill; other arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/conghua-hub/target}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
base="${FAILOVER_PORT_BASE:-25400}"
etcd_client=$base etcd_peer=$((base + 1)) proxy=$((base + 2)) proxy_stats=$((base + 3))
pg_port=($((base + 4)) $((base + 5))) rest_port=($((base + 6)) $((base + 7)))

missing=()
command -v patroni >/dev/null 2>&1 || missing+=(patroni)
/usr/bin/python3 -c 'import etcd' 2>/dev/null || missing+=(python3-etcd)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "failover: install ${missing[*]} (Debian packages)" >&2; exit 2; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x "$PG_BIN/postgres" ] || { echo "failover: no PostgreSQL server binaries in $PG_BIN (set PG_BIN)" >&2; exit 2; }
for p in $etcd_client $etcd_peer $proxy $proxy_stats "${pg_port[@]}" "${rest_port[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "failover: port $p is taken (set FAILOVER_PORT_BASE)" >&2
    exit 2
  fi
done

work=$(mktemp -d /tmp/hub-failover.XXXXXX)
pids=()
cleanup() {
  # Patroni stops its PostgreSQL on SIGTERM; etcd and HAProxy go last.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # A Patroni started by hand meanwhile, and a postmaster whose Patroni died first.
  pkill -TERM -f "patroni $work/" 2>/dev/null && sleep 3 || true
  for n in pg1 pg2; do
    [ -f "$work/$n/data/postmaster.pid" ] && kill -KILL "$(head -1 "$work/$n/data/postmaster.pid")" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "failover: work folder kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PostgreSQL refuses to run as root: the servers and their Patronis run as postgres.
run_as=()
[ "$(id -u)" = 0 ] && run_as=(runuser -u postgres --)
chmod 755 "$work"

etcd --name drill --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "drill=http://127.0.0.1:$etcd_peer" >"$work/etcd.log" 2>&1 &
pids+=($!)

for i in 0 1; do
  n="pg$((i + 1))"
  mkdir -p "$work/$n"
  # The settings ops/deploy/cluster.md gives, with the timings tightened for a drill on one
  # machine: loop_wait 1 s, and primary_start_timeout 0, so a crashed primary is failed over to
  # the synchronous standby at once instead of being restarted in place.
  cat >"$work/$n.yml" <<EOF
scope: hub-drill
namespace: /conghua/
name: $n
log:
  dir: $work/$n
  level: INFO
restapi:
  listen: 127.0.0.1:${rest_port[$i]}
  connect_address: 127.0.0.1:${rest_port[$i]}
etcd3:
  hosts: 127.0.0.1:$etcd_client
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    primary_start_timeout: 0
    synchronous_mode: true
    synchronous_mode_strict: true
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        max_connections: 100
        synchronous_commit: "on"
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:${pg_port[$i]}
  connect_address: 127.0.0.1:${pg_port[$i]}
  data_dir: $work/$n/data
  bin_dir: $PG_BIN
  pgpass: $work/$n/pgpass
  authentication:
    superuser:
      username: postgres
      password: drill
    replication:
      username: replicator
      password: drill
    rewind:
      username: postgres
      password: drill
  parameters:
    unix_socket_directories: $work/$n
EOF
done
chown -R postgres "$work"/pg1* "$work"/pg2*

for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$etcd_client/health" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$etcd_client/health" >/dev/null || { echo "failover: etcd did not start" >&2; cat "$work/etcd.log" >&2; exit 1; }

"${run_as[@]}" patroni "$work/pg1.yml" >"$work/pg1/patroni.out" 2>&1 &
pids+=($!)
# The second node joins once the first has bootstrapped the cluster (so the roles are known).
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:${rest_port[0]}/primary" >/dev/null && break
  sleep 0.1
done
"${run_as[@]}" patroni "$work/pg2.yml" >"$work/pg2/patroni.out" 2>&1 &
pids+=($!)

cat >"$work/haproxy.cfg" <<EOF
global
  maxconn 400
defaults
  mode tcp
  timeout connect 2s
  timeout client 30m
  timeout server 30m
  timeout check 1s
listen stats
  mode http
  bind 127.0.0.1:$proxy_stats
  stats enable
  stats uri /
# Only the server whose Patroni answers 200 on /primary gets connections; when it is marked
# down its sessions are cut, so the hubs' pools reconnect instead of waiting on a dead socket.
listen primary
  bind 127.0.0.1:$proxy
  option httpchk OPTIONS /primary
  http-check expect status 200
  default-server inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions
  server pg1 127.0.0.1:${pg_port[0]} maxconn 150 check port ${rest_port[0]}
  server pg2 127.0.0.1:${pg_port[1]} maxconn 150 check port ${rest_port[1]}
EOF
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)

# Ready: a primary, and a synchronous standby streaming from it.
ready=0
for _ in $(seq 1 1200); do
  if curl -sf "http://127.0.0.1:${rest_port[0]}/cluster" | grep -q '"sync_standby"'; then ready=1; break; fi
  sleep 0.1
done
if [ $ready = 0 ]; then
  echo "failover: the cluster never had a synchronous standby" >&2
  tail -20 "$work"/pg*/patroni.out "$work"/pg*/*.log >&2 || true
  exit 1
fi
for _ in $(seq 1 100); do
  psql -qAt "postgres://postgres@127.0.0.1:$proxy/postgres" -c 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.2
done
psql -q "postgres://postgres@127.0.0.1:$proxy/postgres" -c 'CREATE DATABASE hub' >/dev/null
echo "failover: etcd, pg1 and pg2 under Patroni (synchronous mode) and HAProxy on 127.0.0.1:$proxy are up"
curl -s "http://127.0.0.1:${rest_port[0]}/cluster"; echo

if [ "${1:-}" = "--up" ]; then
  # The cluster alone, to look at (HAProxy's page on 127.0.0.1:$proxy_stats) or to run hubs on.
  echo "HUB_DATABASE_URL=postgres://postgres@127.0.0.1:$proxy/hub; Patroni REST on ${rest_port[*]}; Ctrl-C ends it"
  # In the background, so a signal ends the wait and the trap stops the cluster at once.
  sleep infinity &
  pids+=($!)
  wait $!
fi
HUB_TEST_FAILOVER_URL="postgres://postgres@127.0.0.1:$proxy/hub" \
HUB_TEST_FAILOVER_PATRONI="http://127.0.0.1:${rest_port[0]},http://127.0.0.1:${rest_port[1]}" \
HUB_TEST_FAILOVER_WORK="$work" \
  cargo test --release --workspace --test e2e -- failover:: --nocapture --test-threads 1 "$@"
