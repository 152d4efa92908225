#!/usr/bin/env bash
# A department system's client of the hub in shell: curl, jq, openssl and socat, against the
# sandbox config. Both sides of one exchange, as examples/python does: Civil Affairs publishes
# (and replays) a marriage registration and reads a refusal's JSON pointers; Family Planning reads
# it projected, pulls and acknowledges its feed, and receives the webhook, verifying its Standard
# Webhooks signature with openssl.
#
#   HUB_SANDBOX_WEBHOOK_SECRET=... examples/shell/department_client.sh \
#       --hub https://127.0.0.1:8443 --pki sandbox-data/pki [--webhook-port 8787]
#
# Exits 0 when every step did what the contract says, 1 (naming the step) otherwise.
set -euo pipefail

# One webhook delivery on stdin (socat hands each connection to this script): verify, answer.
if [ "${1:-}" = --receive ]; then
  dir=$2 len=0 id= ts= sigs= trace=
  while IFS= read -r line; do
    line=${line%$'\r'}
    [ -z "$line" ] && break
    value=${line#*: }
    name=${line%%:*}
    case "${name,,}" in
      content-length) len=$value ;;
      webhook-id) id=$value ;;
      webhook-timestamp) ts=$value ;;
      webhook-signature) sigs=$value ;;
      traceparent) trace=$value ;;
    esac
  done
  body=$(mktemp "$dir/body.XXXXXX")
  head -c "$len" > "$body"
  # Standard Webhooks: base64 HMAC-SHA256 over "id.timestamp.body", keyed by the secret's bytes;
  # any one "v1," signature may match (several come while a secret is rotated); a timestamp more
  # than 5 minutes off is refused as a replay.
  key=$(printf %s "${HUB_SANDBOX_WEBHOOK_SECRET#whsec_}" | base64 -d | od -An -tx1 | tr -d ' \n')
  expected=$( { printf '%s.%s.' "$id" "$ts"; cat "$body"; } \
    | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key" -binary | base64)
  ok=no
  now=$(date +%s)
  if [ -n "$ts" ] && [ $((now - ts)) -le 300 ] && [ $((ts - now)) -le 300 ]; then
    for sig in $sigs; do [ "$sig" = "v1,$expected" ] && ok=yes; done
  fi
  if [ $ok = yes ]; then
    printf %s "$trace" > "$dir/trace-$id"
    mv "$body" "$dir/verified-$id.json"
    # 2xx acknowledges; the hub retries anything else.
    printf 'HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n'
  else
    rm -f "$body"
    printf 'HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
  fi
  exit 0
fi

hub=https://127.0.0.1:8443 pki=sandbox-data/pki port=8787
while [ $# -gt 0 ]; do
  case $1 in
    --hub) hub=${2%/} ;;
    --pki) pki=$2 ;;
    --webhook-port) port=$2 ;;
    *) echo "usage: $0 [--hub URL] [--pki DIR] [--webhook-port PORT]" >&2; exit 2 ;;
  esac
  shift 2
done
: "${HUB_SANDBOX_WEBHOOK_SECRET:?the webhook secret the hub signs with}"
export HUB_SANDBOX_WEBHOOK_SECRET

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
fail() { echo "$1" >&2; exit 1; }

# The webhook endpoint first: the hub may push before the publish call returns.
socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" EXEC:"$0 --receive $work" &

# as PRINCIPAL STATUS STEP curl-args...: the body on stdout, or the step named and exit 1.
as() {
  local who=$1 want=$2 step=$3 got
  shift 3
  got=$(curl -sS --cacert "$pki/ca.crt" --cert "$pki/clients/$who.crt" --key "$pki/clients/$who.key" \
    -o "$work/answer" -w '%{http_code}' "$@") || fail "$step: curl failed"
  [ "$got" = "$want" ] || fail "$step: expected $want, got $got: $(cat "$work/answer")"
  cat "$work/answer"
}

# 1. Publish with an Idempotency-Key, and replay: the same receipt.
key=$(printf 'J440184-2026-%06d' $(($(od -An -N4 -tu4 /dev/urandom) % 1000000)))
jq --arg k "$key" '.registration_no = $k' schemas/marriage-registration/v1/examples/valid/typical.json > "$work/record.json"
# A W3C trace context (your OpenTelemetry instrumentation sends one): the deliveries carry it.
trace_id=$(openssl rand -hex 16)
publish=(-H 'Content-Type: application/json' -H "traceparent: 00-$trace_id-$(openssl rand -hex 8)-01"
  --data-binary "@$work/record.json" "$hub/v1/records/marriage-registration")
receipt=$(as civil-affairs 201 publish -H "Idempotency-Key: example-shell-$key" "${publish[@]}")
jq -r '"published \(.type)/\(.key) v\(.version) (audit #\(.audit_seq))"' <<< "$receipt"
again=$(as civil-affairs 200 replay -H "Idempotency-Key: example-shell-$key" "${publish[@]}")
[ "$(jq -S . <<< "$again")" = "$(jq -S . <<< "$receipt")" ] || fail "replay: a different receipt"

# 2. A refused record: 422, problem+json, every violation with its JSON pointer.
jq '.kind = "engagement"' "$work/record.json" > "$work/bad.json"
as civil-affairs 422 "invalid publish" -H 'Content-Type: application/json' --data-binary "@$work/bad.json" \
  "$hub/v1/records/marriage-registration" | jq -r '.errors[] | "refused: \(.pointer) \(.message)"'

# 3. Read as Family Planning for its purpose: only the granted fields.
got=$(as family-planning 200 read "$hub/v1/records/marriage-registration/$key?purpose=birth-service-registration")
jq -e '.projected and (.data.parties[0] | has("hukou_address") | not)' <<< "$got" > /dev/null \
  || fail "read: a field outside the grant came"
jq -r '"read projected: a party has \(.data.parties[0] | keys | join(", "))"' <<< "$got"

# 4. Pull the feed (long poll) until the record's event comes, then acknowledge.
subject=marriage-registration/$key cursor= event=
for _ in 1 2 3 4 5 6 7 8 9 10; do
  page=$(as family-planning 200 feed "$hub/v1/feeds/sandbox-feed?wait=5&limit=100${cursor:+&after=$cursor}")
  cursor=$(jq -r .cursor <<< "$page")
  event=$(jq -c --arg s "$subject" '.events[] | select(.subject == $s)' <<< "$page")
  [ -n "$event" ] && break
done
[ -n "$event" ] || fail "feed: the published record's event never came"
ack=$(as family-planning 200 ack -H 'Content-Type: application/json' -d "{\"cursor\":\"$cursor\"}" \
  "$hub/v1/feeds/sandbox-feed/ack")
echo "feed: event $(jq -r .id <<< "$event") ($(jq -r .type <<< "$event")), acknowledged $(jq -r '"\(.acknowledged) up to \(.cursor)"' <<< "$ack")"

# 5. The webhook: the same record, pushed and signed (verified by the receiver above).
for _ in $(seq 1 300); do
  for f in "$work"/verified-*.json; do
    [ -e "$f" ] || continue
    if jq -e --arg s "$subject" '.subject == $s' "$f" > /dev/null; then
      id=$(jq -r .id "$f")
      [ "$(cut -d- -f2 "$work/trace-$id")" = "$trace_id" ] && jq -e --arg t "$trace_id" '.traceparent | split("-")[1] == $t' "$f" > /dev/null \
        || fail "webhook: the trace was not carried"
      jq -r --arg t "$trace_id" '"webhook: \(.id) verified (\(.type), record version \(.recordversion), trace \($t))"' "$f"
      echo ok
      exit 0
    fi
  done
  sleep 0.1
done
fail "webhook: no verified delivery of the published record within 30 s"
