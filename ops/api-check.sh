#!/usr/bin/env bash
# The OpenAPI document against the hub that serves it: schemathesis (from PyPI), every check
# (enabled in ops/api-check/schemathesis.toml),
# against a live hub on the deployable config, as a department (civil-affairs), the ops desk
# (ops-duty), the supervision bureau (an auditor) and the maintenance vendor by bearer token
# without a certificate. Exits non-zero on any failure. Needs target/release/hub (HUB_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
hub=${HUB_BIN:-$root/target/release/hub}
command -v schemathesis >/dev/null 2>&1 || python3 -m pip install -q schemathesis

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The deployable config, with a token for the vendor and a short request deadline (long polls end
# within it: a generated wait= must not hold a test for half a minute).
mkdir -p "$work/config"
ln -s "$root/schemas" "$work/schemas"
for d in samples calendar; do ln -s "$root/config/$d" "$work/config/$d"; done
token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
digest=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
sed -e "s/^id = \"vendor\"$/id = \"vendor\"\ntoken_sha256 = \"$digest\"/" \
    -e 's/^request_timeout_secs = 30$/request_timeout_secs = 3/' \
    config/conghua.toml > "$work/config/conghua.toml"
grep -q "token_sha256 = \"$digest\"" "$work/config/conghua.toml"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$hub" serve --config "$work/config/conghua.toml" --data "$work/data" --listen "127.0.0.1:$port" 2> "$work/hub.log" &
pid=$!
for _ in $(seq 1 100); do
  grep -q "hub listening" "$work/hub.log" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/hub.log" >&2; exit 1; }
  sleep 0.2
done
pki=$work/data/pki
url=https://127.0.0.1:$port/openapi.json
export PYTHONPATH=$root/ops/api-check SCHEMATHESIS_HOOKS=hooks
st() {
  # From the scratch folder: schemathesis keeps its cache and reports where it runs.
  (cd "$work" && schemathesis --config-file "$root/ops/api-check/schemathesis.toml" run "$url" \
    --tls-verify "$pki/ca.crt" --generation-deterministic --no-color "$@")
}
failed=0
for who in civil-affairs ops-duty supervision; do
  echo "api-check: as $who (certificate)"
  # A certificate cannot be taken off the connection from inside the tool, so its "without
  # authentication" requests are authenticated by it; the vendor's run below checks that a
  # missing or wrong token is refused.
  st --request-cert "$pki/clients/$who.crt" --request-cert-key "$pki/clients/$who.key" \
    --exclude-checks ignored_auth || failed=1
done
echo "api-check: as vendor (bearer token, no certificate)"
st -H "Authorization: Bearer $token" || failed=1
exit $failed
