"""The worker's HTTP API against a real worker on the real broker (``rater/worker/web.py``).

Two tests: authorize with a destination (SPEC 10 v1.1), values worked out by hand from
the rate table written below; and the OpenAPI document at ``/openapi.json``, kept true
by calling every path and every response status it lists and validating each answer
against the document's own schema.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest

from tests.support.kafka import produce
from tests.support.worker import ROOT, WorkerProcess, wait_for
from tests.worker.test_worker import iso, now_utc

pytestmark = pytest.mark.kafka

UK, UK_MOBILE, FRANCE, TOLL_FREE = "+442071838750", "+447700900123", "+33142000000", "+18005550199"


def rates_dir(tmp_path: Path) -> Path:
    """UK mobile changed price an hour ago and changes again in an hour: the worker must
    use the row in force at its clock (0.12/min), not the oldest or the newest."""
    now = now_utc()
    directory = tmp_path / "rates"
    directory.mkdir()
    (directory / "web-usd.csv").write_text(
        "call_type,prefix,destination,currency,rate_per_minute,connection_fee,first_increment,next_increment,effective_from\n"
        "international,44,UK,USD,0.050000,,60,60,\n"
        "international,447,UK mobile,USD,0.060000,,30,6,\n"
        f"international,447,UK mobile,USD,0.120000,,30,6,{iso(now - timedelta(hours=1))}\n"
        f"international,447,UK mobile,USD,0.900000,,30,6,{iso(now + timedelta(hours=1))}\n"
        "international,33,France,USD,0.120000,0.100000,60,60,\n"
        "toll_free,1800,US toll-free,USD,0.030000,,60,60,\n"
        "domestic,1,US,USD,0.006000,,6,6,\n"
        "conference_dialout,1,US,USD,0.012000,,60,60,\n"
    )
    return directory


def setup_records() -> list[dict]:
    at = iso(now_utc() - timedelta(hours=2))
    return [
        {
            "command_id": "a1",
            "tenant_id": "acme",
            "command": "configure_account",
            "occurred_at": at,
            "rate_plan": "web-usd",
            "included_domestic_minutes": 100,
        },
        {"command_id": "a2", "tenant_id": "acme", "command": "add_funds", "occurred_at": at, "amount": "0.10"},
        {"command_id": "n1", "tenant_id": "neg", "command": "configure_account", "occurred_at": at, "rate_plan": "web-usd"},
        {"command_id": "n2", "tenant_id": "neg", "command": "add_funds", "occurred_at": at, "amount": "0.01"},
        # UK 0.05/min, 60 s: 0.01 - 0.05 = -0.04
        {"cdr_id": "n-c1", "tenant_id": "neg", "call_type": "international", "to": UK, "started_at": at, "duration_seconds": 60},
        {"command_id": "z1", "tenant_id": "zero", "command": "configure_account", "occurred_at": at, "rate_plan": "web-usd"},
    ]


@pytest.fixture(scope="module")
def worker(kafka_broker, tmp_path_factory):
    with WorkerProcess(kafka_broker.bootstrap, name="web", rates_dir=rates_dir(tmp_path_factory.mktemp("web"))) as w:
        records = setup_records()
        produce(w.broker, w.topics.cdrs, [(r["tenant_id"], r) for r in records])
        wait_for(lambda: w.records_done() == len(records), 60, what="setup applied", workers=(w,))
        yield w
        assert w.errors() == []


def authorize(w: WorkerProcess, tenant: str, call_type: str, to: str | None = None, raw: bool = False):
    query = f"call_type={call_type}"
    if to is not None:
        query += "&to=" + (to if raw else to.replace("+", "%2B"))
    r = w.get(f"/tenants/{tenant}/authorize?{query}")
    assert r.content_type == "application/json", r
    return r.status, r.json()


RATE_UK_MOBILE_NOW = {
    "plan": "web-usd",
    "prefix": "447",
    "rate_per_minute": "0.120000",
    "connection_fee": "0.000000",
    "first_increment": 30,
    "next_increment": 6,
    "currency": "USD",
}


def test_authorize_with_a_destination_answers_the_rate_and_max_seconds(worker):
    # acme has 0.10 USD. UK mobile at 0.12/min = 0.002/s, 30/6: 30 s = 0.060, then 6 s =
    # 0.012 each: 3 more fit (0.096 at 48 s), a 4th (0.108) does not -> 48.
    # (The older 0.06 row would give 96 s, the future 0.90 row 0 s.)
    assert authorize(worker, "acme", "international", UK_MOBILE) == (
        200,
        {"allowed": True, "reason": "ok", "balance": "0.100000", "currency": "USD", "rate": RATE_UK_MOBILE_NOW, "max_seconds": 48},
    )
    # UK 0.05/min 60/60: 2 minutes = 0.10 exactly, which leaves the balance at zero.
    status, body = authorize(worker, "acme", "international", UK)
    assert (status, body["rate"]["prefix"], body["max_seconds"], body["allowed"]) == (200, "44", 120, True)
    # Toll-free 0.03/min 60/60: 3 minutes = 0.09, 4 = 0.12.
    status, body = authorize(worker, "acme", "toll_free", TOLL_FREE)
    assert (status, body["max_seconds"], body["allowed"]) == (200, 180, True)
    # France: a 0.10 fee and 0.12/min; the first minute costs 0.22 > 0.10.
    status, body = authorize(worker, "acme", "international", FRANCE)
    assert (body["allowed"], body["reason"], body["max_seconds"], body["rate"]["connection_fee"]) == (
        False,
        "insufficient_funds",
        0,
        "0.100000",
    )
    # Domestic and dial-out are never blocked and have no limit.
    for call_type in ("domestic", "conference_dialout"):
        status, body = authorize(worker, "acme", call_type, "+14155550123")
        assert (status, body["allowed"], body["max_seconds"], body["rate"]["prefix"]) == (200, True, None, "1")


def test_authorize_with_a_destination_below_zero_at_zero_and_without_a_rate(worker):
    status, body = authorize(worker, "neg", "international", UK_MOBILE)
    assert (status, body) == (
        200,
        {"allowed": False, "reason": "below_zero", "balance": "-0.040000", "currency": "USD", "rate": RATE_UK_MOBILE_NOW, "max_seconds": 0},
    )
    assert authorize(worker, "neg", "domestic", "+14155550123")[1]["allowed"] is True
    status, body = authorize(worker, "zero", "international", UK)
    assert (body["allowed"], body["reason"], body["balance"], body["max_seconds"]) == (False, "insufficient_funds", "0.000000", 0)
    assert authorize(worker, "acme", "international", "+99912345") == (
        200,
        {"allowed": False, "reason": "no_rate", "balance": "0.100000", "currency": "USD", "rate": None, "max_seconds": None},
    )
    # Without a destination: SPEC 10's bool, unchanged.
    assert authorize(worker, "neg", "international") == (
        200,
        {"allowed": False, "reason": "below_zero", "balance": "-0.040000", "currency": "USD"},
    )


def test_authorize_takes_the_plus_percent_encoded_or_raw_and_refuses_a_bad_to(worker):
    encoded = authorize(worker, "acme", "international", UK_MOBILE)
    assert authorize(worker, "acme", "international", UK_MOBILE, raw=True) == encoded
    assert encoded[1]["max_seconds"] == 48
    for bad in (
        "447700900123",
        "%2B0447700900123",
        "",
        "%2B4",
        "%2B44%207700",
        "abc",
        "%2B1234567890123456",
        "%FF",
        "%2B44%00",
        "%2B" + "4" * 5000,
        "%20%20447700900123",
    ):
        status, body = authorize(worker, "acme", "international", bad, raw=True)
        assert status == 400, (bad, body)
        assert body["error"]["status"] == 400 and body["error"]["reason"] == "invalid_to", (bad, body)
        assert "E.164" in body["error"]["detail"]
    # An unknown tenant: refused, with the authorization's fields and the error.
    status, body = authorize(worker, "nobody", "international", UK)
    assert status == 404 and (body["allowed"], body["reason"], body["error"]["reason"]) == (False, "unknown_tenant", "unknown_tenant")


# ---------------------------------------------------------------------------- the OpenAPI document


def request(w: WorkerProcess, method: str, path: str):
    req = urllib.request.Request(w.url + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get_content_type(), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers.get_content_type(), err.read()


# (path as listed, status) -> the request that must produce it. 503s need a worker that
# owns no partition yet, or a dead owner: tests/worker/test_worker.py and the fault tests cover them.
CALLS = {
    ("/healthz", "200"): "/healthz",
    ("/readyz", "200"): "/readyz",
    ("/metrics", "200"): "/metrics",
    ("/openapi.json", "200"): "/openapi.json",
    ("/tenants/{tenant}", "200"): "/tenants/acme",
    ("/tenants/{tenant}", "400"): "/tenants/a%20b",
    ("/tenants/{tenant}", "404"): "/tenants/nobody",
    ("/tenants/{tenant}/authorize", "200"): "/tenants/acme/authorize?call_type=international&to=%2B447700900123",
    ("/tenants/{tenant}/authorize", "400"): "/tenants/acme/authorize?call_type=international&to=447700900123",
    ("/tenants/{tenant}/authorize", "404"): "/tenants/nobody/authorize?call_type=domestic",
}
NOT_CALLED = {("/readyz", "503"), ("/tenants/{tenant}", "503"), ("/tenants/{tenant}/authorize", "503")}
MORE_200S = [  # the other shapes of a 200 authorization
    "/tenants/acme/authorize?call_type=international",
    "/tenants/neg/authorize?call_type=international&to=%2B447700900123",
    "/tenants/acme/authorize?call_type=domestic&to=%2B14155550123",
    "/tenants/acme/authorize?call_type=international&to=%2B99912345",
]
MORE_400S = [
    "/tenants/acme/authorize?call_type=collect",
    "/tenants/acme/authorize",
    "/tenants/" + "a" * 65 + "/authorize?call_type=domestic",
]  # noqa: E501


def validator(doc: dict, schema: dict) -> jsonschema.Draft202012Validator:
    """A JSON Schema 2020-12 validator for a schema of the document (OpenAPI 3.1 schemas
    are JSON Schema), with the document's components reachable by their ``#/...`` refs."""
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def test_openapi_document_lists_every_path_and_each_answer_matches_it(worker):
    status, ctype, raw = request(worker, "GET", "/openapi.json")
    assert (status, ctype) == (200, "application/json")
    doc = json.loads(raw)
    assert doc == json.loads((ROOT / "rater" / "worker" / "openapi.json").read_text())
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"]
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)

    listed = set()
    for path, ops in doc["paths"].items():
        assert set(ops) == {"get"}, path  # nothing here changes state
        for code in ops["get"]["responses"]:
            listed.add((path, code))
    assert listed == set(CALLS) | NOT_CALLED, "the document and the calls below disagree"

    for (path, code), url in CALLS.items():
        status, ctype, raw = request(worker, "GET", url)
        assert str(status) == code, (url, status, raw[:300])
        content = doc["paths"][path]["get"]["responses"][code]["content"]
        assert ctype in content, (url, ctype)
        if ctype == "application/json":
            validator(doc, content[ctype]["schema"]).validate(json.loads(raw))
        else:
            assert raw.startswith(b"# HELP ")

    answer = doc["paths"]["/tenants/{tenant}/authorize"]["get"]["responses"]
    for url in MORE_200S:
        status, _, raw = request(worker, "GET", url)
        assert status == 200, url
        validator(doc, answer["200"]["content"]["application/json"]["schema"]).validate(json.loads(raw))
    for url in MORE_400S:
        status, _, raw = request(worker, "GET", url)
        assert status == 400, url
        validator(doc, answer["400"]["content"]["application/json"]["schema"]).validate(json.loads(raw))


def test_every_4xx_has_the_one_error_shape_also_where_no_view_answers(worker):
    doc = json.loads((ROOT / "rater" / "worker" / "openapi.json").read_text())
    error = validator(doc, {"$ref": "#/components/schemas/Error"})
    cases = [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/tenants/acme/balance", 404, "not_found"),
        ("POST", "/tenants/acme/authorize?call_type=domestic", 405, "method_not_allowed"),
        ("DELETE", "/tenants/acme", 405, "method_not_allowed"),
        ("GET", "/tenants/a%2Fb", 400, "invalid_tenant_id"),
        ("GET", "/tenants/acme/authorize?call_type=International", 400, "invalid_call_type"),
        ("GET", "/tenants/nobody", 404, "unknown_tenant"),
    ]
    for method, path, status, reason in cases:
        got, ctype, raw = request(worker, method, path)
        body = json.loads(raw)
        assert (got, ctype) == (status, "application/json"), (method, path, got, raw[:200])
        error.validate(body)
        assert (body["error"]["status"], body["error"]["reason"]) == (status, reason), (method, path, body)


def test_a_worker_answers_only_for_partitions_assigned_to_it():
    """``where_answered``: the router names a worker by its address; a worker restarted on
    the address of a killed predecessor that still holds partitions in the group (until
    its session times out) is named for those too, and answers 503 for their tenants
    instead of reading a store that does not hold them (a 404 would refuse their calls as
    ``unknown_tenant``; seen in the kill loop on new disks)."""
    from rater.worker.web import FORWARD, HERE, NOT_YET, where_answered

    me, other = "http://127.0.0.1:6066", "http://127.0.0.1:6067/"
    assert where_answered(me + "/", me, 2, {0, 2}) == HERE
    assert where_answered(me, me, 1, {0, 2}) == NOT_YET  # the predecessor's partition
    assert where_answered(other, me, 1, {0, 2}) == FORWARD
    assert where_answered(other, me, 2, {0, 2}) == FORWARD  # the router's word stands
