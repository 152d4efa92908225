"""A department system's client of the hub in Python (requests), against the sandbox config.

Both sides of one exchange, each with its own certificate:
  - Civil Affairs publishes a marriage registration (and replays it: the same receipt), and sees a
    refused record's problem+json name the field;
  - Family Planning reads it projected to its grant, pulls and acknowledges its feed, and receives
    the webhook, whose Standard Webhooks signature it verifies with the `standardwebhooks` library.

    pip install requests standardwebhooks
    HUB_SANDBOX_WEBHOOK_SECRET=... python3 examples/python/department_client.py \
        --hub https://127.0.0.1:8443 --pki sandbox-data/pki

Exits 0 when every step did what the contract says, 1 (with the step) otherwise.
"""

import argparse
import http.server
import json
import os
import pathlib
import queue
import secrets
import sys
import threading

import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

ROOT = pathlib.Path(__file__).resolve().parents[2]
TYPICAL = ROOT / "schemas/marriage-registration/v1/examples/valid/typical.json"
PURPOSE = "birth-service-registration"


def session(pki, name):
    """An HTTPS session as one principal: its certificate, and the hub's CA as the only trust."""
    s = requests.Session()
    s.cert = (f"{pki}/clients/{name}.crt", f"{pki}/clients/{name}.key")
    s.verify = f"{pki}/ca.crt"
    # Otherwise REQUESTS_CA_BUNDLE (set on many hosts) silently replaces `verify` above, and the
    # hub's development CA is not in the system bundle.
    s.trust_env = False
    return s


def expect(response, status, step):
    if response.status_code != status:
        sys.exit(f"{step}: expected {status}, got {response.status_code}: {response.text}")
    return response.json()


def receiver(port, secret):
    """The department's webhook endpoint: verifies each delivery, queues the verified events."""
    verified = queue.Queue()
    hook = Webhook(secret)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                # Checks the HMAC over id.timestamp.body and that the timestamp is recent.
                event = hook.verify(body, dict(self.headers.items()))
            except WebhookVerificationError:
                self.send_response(401)
                self.end_headers()
                return
            # 2xx acknowledges: anything else is retried by the hub.
            self.send_response(204)
            self.end_headers()
            verified.put((event, self.headers.get("webhook-id"), self.headers.get("traceparent")))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return verified


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hub", default="https://127.0.0.1:8443")
    p.add_argument("--pki", default="sandbox-data/pki")
    p.add_argument("--webhook-port", type=int, default=8787)
    args = p.parse_args()
    hub = args.hub.rstrip("/")
    events = receiver(args.webhook_port, os.environ["HUB_SANDBOX_WEBHOOK_SECRET"])

    civil = session(args.pki, "civil-affairs")
    family = session(args.pki, "family-planning")

    # 1. Publish. The key is the registration number; a new serial makes a new record each run.
    record = json.loads(TYPICAL.read_text(encoding="utf-8"))
    record["registration_no"] = f"J440184-2026-{secrets.randbelow(10**6):06d}"
    key = record["registration_no"]
    # A W3C trace context (your OpenTelemetry instrumentation sends one): the deliveries carry it.
    trace_id = secrets.token_hex(16)
    idem = {"Idempotency-Key": f"example-python-{key}", "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    receipt = expect(civil.post(f"{hub}/v1/records/marriage-registration", json=record, headers=idem), 201, "publish")
    print(f"published {receipt['type']}/{receipt['key']} v{receipt['version']} (audit #{receipt['audit_seq']})")
    # A retry after a lost answer is safe: the same key and body give back the same receipt.
    again = expect(civil.post(f"{hub}/v1/records/marriage-registration", json=record, headers=idem), 200, "replay")
    assert again == receipt, (again, receipt)

    # 2. A refused record: 422 with every violation as a JSON pointer (never the value itself).
    bad = dict(record, kind="engagement")
    problem = expect(civil.post(f"{hub}/v1/records/marriage-registration", json=bad), 422, "invalid publish")
    print("refused:", ", ".join(f"{e['pointer']} {e['message']}" for e in problem["errors"]))

    # 3. Read it as Family Planning, for its purpose: only the granted fields come back.
    got = expect(family.get(f"{hub}/v1/records/marriage-registration/{key}", params={"purpose": PURPOSE}), 200, "read")
    assert got["projected"] and got["version"] == receipt["version"], got
    party = got["data"]["parties"][0]
    assert "hukou_address" not in party and "registry_office" not in got["data"], "a field outside the grant came"
    print("read projected: a party has", ", ".join(sorted(party)))

    # 4. Pull the feed (long poll) until our record's event comes, then acknowledge the page.
    subject = f"marriage-registration/{key}"
    cursor, found = None, None
    for _ in range(10):
        params = {"wait": 5, "limit": 100} | ({"after": cursor} if cursor else {})
        page = expect(family.get(f"{hub}/v1/feeds/sandbox-feed", params=params), 200, "feed")
        cursor = page["cursor"]
        found = next((e for e in page["events"] if e["subject"] == subject), None)
        if found:
            break
    if not found:
        sys.exit("feed: the published record's event never came")
    ack = expect(family.post(f"{hub}/v1/feeds/sandbox-feed/ack", json={"cursor": cursor}), 200, "ack")
    print(f"feed: event {found['id']} ({found['type']}), acknowledged {ack['acknowledged']} up to {ack['cursor']}")

    # 5. The webhook: the same record, pushed and signed.
    while True:
        try:
            event, webhook_id, traceparent = events.get(timeout=30)
        except queue.Empty:
            sys.exit("webhook: no verified delivery of the published record within 30 s")
        if event["subject"] == subject:
            break
    assert "hukou_address" not in event["data"]["parties"][0]
    assert traceparent.split("-")[1] == trace_id == event["traceparent"].split("-")[1], "the trace was not carried"
    print(f"webhook: {webhook_id} verified ({event['type']}, record version {event['recordversion']}, trace {trace_id})")
    print("ok")


if __name__ == "__main__":
    main()
