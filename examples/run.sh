#!/usr/bin/env bash
# Runs the example department clients (python, java, shell, or all) each against a hub of its
# own on config/sandbox.toml: a fresh data directory, free ports, a new webhook secret, and for
# Java the PKCS#12 key stores `hub pki issue` writes. CI runs `examples/run.sh all`. Needs
# target/release/hub (HUB_BIN), python3, a JDK 17+, curl, jq, openssl and socat.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
hub=${HUB_BIN:-$root/target/release/hub}
langs=${1:-all}
[ "$langs" = all ] && langs="python java shell"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run_one() {
  local lang=$1 work port hook pid status=0
  work=$(mktemp -d)
  port=$(free_port)
  hook=$(free_port)
  # The sandbox config as written, but for the ports; its schema paths resolve through the link.
  mkdir "$work/config"
  ln -s "$root/schemas" "$work/schemas"
  sed -e "s#127.0.0.1:8787#127.0.0.1:$hook#" config/sandbox.toml > "$work/config/sandbox.toml"
  HUB_SANDBOX_WEBHOOK_SECRET=whsec_$(head -c 32 /dev/urandom | base64 -w0)
  HUB_P12_PASSWORD=$(head -c 18 /dev/urandom | base64 -w0)
  export HUB_SANDBOX_WEBHOOK_SECRET HUB_P12_PASSWORD
  "$hub" serve --config "$work/config/sandbox.toml" --data "$work/data" --listen "127.0.0.1:$port" 2> "$work/hub.log" &
  pid=$!
  for _ in $(seq 1 150); do
    grep -q "hub listening" "$work/hub.log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/hub.log" >&2; return 1; }
    sleep 0.2
  done
  local args=(--hub "https://127.0.0.1:$port" --pki "$work/data/pki" --webhook-port "$hook")
  echo "examples: $lang"
  case $lang in
    python) timeout 120 python3 examples/python/department_client.py "${args[@]}" || status=$? ;;
    java)
      for who in civil-affairs family-planning; do
        "$hub" pki issue --config "$work/config/sandbox.toml" --data "$work/data" --name "$who" \
          --p12-password-env HUB_P12_PASSWORD > /dev/null
      done
      timeout 120 java examples/java/DepartmentClient.java "${args[@]}" || status=$? ;;
    shell) timeout 120 examples/shell/department_client.sh "${args[@]}" || status=$? ;;
    *) echo "examples: no example in $lang (python, java, shell)" >&2; status=2 ;;
  esac
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
  if [ $status -ne 0 ]; then
    echo "examples: $lang failed ($status); the hub's log:" >&2
    tail -n 30 "$work/hub.log" >&2
  fi
  rm -rf "$work"
  return $status
}

python3 -c 'import requests, standardwebhooks' 2>/dev/null \
  || python3 -m pip install -q -r examples/python/requirements.txt
failed=0
for lang in $langs; do
  run_one "$lang" || failed=1
done
exit $failed
