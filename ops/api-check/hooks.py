"""Schemathesis hooks for the hub: how an NDJSON body is written (one JSON value a line; a string
line as it is, which is how event ids are sent for reconciliation), and the record schemas' own
formats, whose check characters are arithmetic no pattern states (hub/src/catalog/formats.rs):
without them every generated resident ID would be a 422, and no typed publish would be tried."""
import datetime
import json

import schemathesis
from hypothesis import strategies as st


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    items = value if isinstance(value, list) else [value]
    lines = [item if isinstance(item, str) else json.dumps(item, ensure_ascii=False) for item in items]
    return "\n".join(lines).encode("utf-8")


# GB 11643: area (a known province), date of birth, sequence, ISO 7064 MOD 11-2 check character.
ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


@st.composite
def resident_id(draw):
    area = draw(st.sampled_from(["440184", "440183", "110105", "310101", "510104"]))
    born = draw(st.dates(datetime.date(1900, 1, 1), datetime.date.today() - datetime.timedelta(days=1)))
    first = f"{area}{born:%Y%m%d}{draw(st.integers(0, 999)):03d}"
    return first + "10X98765432"[sum(int(d) * w for d, w in zip(first, ID_WEIGHTS)) % 11]


# GB 32100: 31-character alphabet, a six-digit area code, MOD 31 check character.
USCC = "0123456789ABCDEFGHJKLMNPQRTUWXY"


@st.composite
def uscc(draw):
    head = draw(st.sampled_from(["91", "92", "93", "11", "12", "51", "52"]))
    area = draw(st.sampled_from(["440184", "440100", "110105"]))
    body = "".join(draw(st.lists(st.sampled_from(USCC), min_size=9, max_size=9)))
    first = head + area + body
    total, weight = 0, 1
    for c in first:
        total, weight = total + USCC.index(c) * weight, weight * 3 % 31
    return first + USCC[(31 - total % 31) % 31]


# GB 11714: eight digits or capitals, a hyphen, MOD 11 check character.
@st.composite
def org_code(draw):
    body = "".join(draw(st.lists(st.sampled_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"), min_size=8, max_size=8)))
    values = [int(c) if c.isdigit() else ord(c) - ord("A") + 10 for c in body]
    n = 11 - sum(v * w for v, w in zip(values, [3, 7, 9, 10, 5, 8, 4, 2])) % 11
    check = {10: "X", 11: "0"}.get(n, str(n))
    return f"{body}-{check}"


# A joint case's step, as the Hub-Case-Step header names it: CASE/STEP.
NAME = st.from_regex(r"\A[A-Za-z0-9_.:-]{1,128}\Z")
schemathesis.openapi.format("hub-case-step", st.builds(lambda c, s: f"{c}/{s}", NAME, NAME))
schemathesis.openapi.format("cn-resident-id", resident_id())
schemathesis.openapi.format("cn-uscc", uscc())
schemathesis.openapi.format("cn-org-code", org_code())
