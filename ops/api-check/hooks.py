"""Schemathesis hooks for the hub: how an NDJSON body is written (one JSON value a line; a string
line as it is, which is how event ids are sent for reconciliation)."""
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    items = value if isinstance(value, list) else [value]
    lines = [item if isinstance(item, str) else json.dumps(item, ensure_ascii=False) for item in items]
    return "\n".join(lines).encode("utf-8")
