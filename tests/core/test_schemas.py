"""The JSON Schemas of schemas/ against the rater itself.

(a) every schema is a valid draft 2020-12 schema and its refs resolve;
(b) input examples: the schemas and ``rater.core.records.decode`` accept and refuse the same;
(c) ``rater rate`` on an input that produces every output kind, every balance-event type
    and every reject reason: every line it writes validates against its schema.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

jsonschema = pytest.importorskip("jsonschema")
from jsonschema import Draft202012Validator  # noqa: E402

from rater import statefile  # noqa: E402
from rater.cli import main as cli  # noqa: E402
from rater.core import codec as state  # noqa: E402
from rater.core import ledger  # noqa: E402
from rater.core.engine import reject_record  # noqa: E402
from rater.core.money import MoneyError, parse_money  # noqa: E402
from rater.core.records import Invalid, decode  # noqa: E402
from rater.core.timeutil import TimeError, parse_time  # noqa: E402
from rater.dev.schemas import BASE_URI, SCHEMA_DIR, load_schema, registry, schema_names, validator  # noqa: E402

EXPECTED_SCHEMAS = {
    "common",
    "cdr",
    "tenant-command",
    "rated-cdr",
    "balance-event",
    "recharge-request",
    "reject",
    "account",
    "balances",
    "notify-dead-letter",
}
EVENT_TYPES = {
    "funds_added",
    "funds_expired",
    "low_balance",
    "below_zero",
    "balance_restored",
    "auto_recharge_requested",
    "auto_recharge_succeeded",
    "auto_recharge_failed",
}
REJECT_REASONS = {
    "invalid_json",
    "invalid_record",
    "unknown_tenant",
    "unknown_rate_plan",
    "currency_mismatch",
    "no_rate",
    "too_late",
    "invalid_timestamp",
    "unknown_request",
}


def _errors(name: str, instance) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(instance)]


def _input_schema(obj) -> str:
    return "cdr" if isinstance(obj, dict) and "cdr_id" in obj else "tenant-command"


# ---------------------------------------------------------------- (a) the schemas themselves


def test_every_schema_is_present():
    assert set(schema_names()) == EXPECTED_SCHEMAS
    assert (SCHEMA_DIR / "README.md").is_file()


@pytest.mark.parametrize("name", sorted(EXPECTED_SCHEMAS))
def test_schema_is_valid_draft_2020_12(name):
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"{BASE_URI}{name}.json"
    assert schema["title"] and schema["description"]


@pytest.mark.parametrize("name", sorted(EXPECTED_SCHEMAS))
def test_every_ref_resolves(name):
    """Walk the schema and resolve every $ref through the registry (no network)."""
    resolver = registry().resolver(base_uri=f"{BASE_URI}{name}.json")
    refs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(load_schema(name))
    for ref in refs:
        resolver.lookup(ref)  # raises when it does not resolve


@pytest.mark.parametrize("name", ["rated-cdr", "balance-event", "recharge-request", "reject", "account"])
def test_outputs_refuse_unknown_properties(name):
    assert load_schema(name)["additionalProperties"] is False


# ---------------------------------------------------------------- (b) inputs: schema == decode

T = "2026-05-01T12:00:00Z"
CDR = {
    "cdr_id": "c-1",
    "tenant_id": "acme",
    "call_type": "international",
    "to": "+442071234567",
    "started_at": T,
    "duration_seconds": 60,
}
CARD = {"type": "card", "expires": "2030-12", "last4": "4242"}
CONFIGURE = {"command_id": "k-1", "tenant_id": "acme", "command": "configure_account", "occurred_at": T, "rate_plan": "basic-usd"}
ADD_FUNDS = {"command_id": "k-2", "tenant_id": "acme", "command": "add_funds", "occurred_at": T, "amount": "12"}
PAYMENT = {
    "command_id": "k-3",
    "tenant_id": "acme",
    "command": "payment_result",
    "occurred_at": T,
    "request_id": "acme/recharge/1",
    "status": "succeeded",
}


def _with(base: dict, **changes) -> dict:
    out = dict(base)
    for k, v in changes.items():
        if v is _DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out


_DROP = object()

VALID_INPUTS = {
    "cdr minimal": CDR,
    "cdr with from and attributes": _with(CDR, **{"from": "+12125550100", "trunk": "t1", "meta": {"x": [1, 2]}}),
    "cdr from null": _with(CDR, **{"from": None}),
    "cdr zone offset and nanoseconds": _with(CDR, started_at="2026-05-01T17:30:00.123456789+05:30"),
    "cdr lower-case t and z": _with(CDR, started_at="2026-05-01t12:00:00z"),
    "cdr duration 0": _with(CDR, duration_seconds=0),
    "cdr duration 86400": _with(CDR, duration_seconds=86400),
    "cdr 15-digit number": _with(CDR, to="+123456789012345", call_type="domestic"),
    "cdr 2-digit number": _with(CDR, to="+12", call_type="toll_free"),
    "cdr with a command attribute": _with(CDR, command="not a command: cdr_id wins"),
    "cdr longest ids": _with(CDR, cdr_id="x" * 128, tenant_id="A-z.0_9:" * 8),
    "configure minimal": CONFIGURE,
    "configure full": _with(
        CONFIGURE,
        currency="USD",
        low_balance_threshold="5.5",
        included_domestic_minutes=100,
        auto_recharge={"enabled": True, "threshold": 5, "amount": "20.000000", "payment_method": CARD},
    ),
    "configure without rate_plan": _with(CONFIGURE, rate_plan=_DROP, low_balance_threshold=0),
    "configure auto_recharge disabled": _with(CONFIGURE, auto_recharge={"enabled": False}),
    "configure card without last4": _with(
        CONFIGURE,
        auto_recharge={"enabled": True, "threshold": "0", "amount": 0.5, "payment_method": {"type": "card", "expires": "2027-01"}},
    ),
    "configure nulls": _with(CONFIGURE, rate_plan=None, currency=None, low_balance_threshold=None, included_domestic_minutes=None),
    "configure threshold -0": _with(CONFIGURE, low_balance_threshold="-0.000"),
    "add_funds string": ADD_FUNDS,
    "add_funds signed string": _with(ADD_FUNDS, amount="+0.000001"),
    "add_funds number": _with(ADD_FUNDS, amount=0.1),
    "add_funds integer": _with(ADD_FUNDS, amount=7),
    "add_funds largest": _with(ADD_FUNDS, amount="1000000000000.000000"),
    "add_funds all fields": _with(ADD_FUNDS, purchased_at="2026-04-30T10:00:00-04:00", reference="", currency="USD"),
    "payment_result succeeded": PAYMENT,
    "payment_result failed": _with(PAYMENT, status="failed", reason="card_declined"),
    "payment_result null reason": _with(PAYMENT, status="failed", reason=None),
}

INVALID_INPUTS = {
    # missing required field
    "cdr without to": _with(CDR, to=_DROP),
    "cdr without cdr_id value": _with(CDR, cdr_id=None),
    "cdr without started_at": _with(CDR, started_at=_DROP),
    "cdr without duration": _with(CDR, duration_seconds=_DROP),
    "cdr without tenant_id": _with(CDR, tenant_id=_DROP),
    "command without occurred_at": _with(ADD_FUNDS, occurred_at=_DROP),
    "command without command_id": _with(PAYMENT, command_id=_DROP),
    "add_funds without amount": _with(ADD_FUNDS, amount=_DROP),
    "payment_result without status": _with(PAYMENT, status=_DROP),
    "auto_recharge enabled without payment_method": _with(CONFIGURE, auto_recharge={"enabled": True, "threshold": "1", "amount": "10"}),
    "auto_recharge enabled with null amount": _with(
        CONFIGURE, auto_recharge={"enabled": True, "threshold": "1", "amount": None, "payment_method": CARD}
    ),
    "auto_recharge without enabled": _with(CONFIGURE, auto_recharge={"threshold": "1"}),
    "neither cdr_id nor command": {"tenant_id": "acme", "to": "+12125550100"},
    # bad E.164
    "to with leading 0": _with(CDR, to="+0123456"),
    "to without +": _with(CDR, to="12125551234"),
    "to with one digit": _with(CDR, to="+1"),
    "to with 16 digits": _with(CDR, to="+1234567890123456"),
    "to with spaces": _with(CDR, to="+1 212 555 1234"),
    "from not E.164": _with(CDR, **{"from": "anonymous"}),
    # duration
    "negative duration": _with(CDR, duration_seconds=-1),
    "duration 86401": _with(CDR, duration_seconds=86401),
    "float duration": _with(CDR, duration_seconds=12.5),
    "string duration": _with(CDR, duration_seconds="60"),
    "boolean duration": _with(CDR, duration_seconds=True),
    # time
    "timestamp without zone": _with(CDR, started_at="2026-05-01T12:00:00"),
    "date only": _with(ADD_FUNDS, occurred_at="2026-05-01"),
    "space separator": _with(CDR, started_at="2026-05-01 12:00:00Z"),
    "hour 24": _with(CDR, started_at="2026-05-01T24:00:00Z"),
    "month 13": _with(CDR, started_at="2026-13-01T12:00:00Z"),
    "offset +24:00": _with(CDR, started_at="2026-05-01T12:00:00+24:00"),
    "timestamp as number": _with(CDR, started_at=1777636800),
    # money
    "money with 7 fractional digits": _with(ADD_FUNDS, amount="1.0000001"),
    "threshold with 7 fractional digits": _with(CONFIGURE, low_balance_threshold="0.0000001"),
    "money with exponent": _with(ADD_FUNDS, amount="1e3"),
    "money zero amount": _with(ADD_FUNDS, amount="0.000000"),
    "money negative amount": _with(ADD_FUNDS, amount="-5"),
    "money negative threshold": _with(CONFIGURE, low_balance_threshold="-0.01"),
    "money negative number": _with(ADD_FUNDS, amount=-1),
    "money out of range": _with(ADD_FUNDS, amount="1000000000000.000001"),
    "money 14 digits": _with(ADD_FUNDS, amount="10000000000000"),
    "money boolean": _with(ADD_FUNDS, amount=True),
    "money trailing dot": _with(ADD_FUNDS, amount="5."),
    # unknown command fields
    "unknown command field": _with(ADD_FUNDS, note="hello"),
    "cdr_id on a command is a CDR without its fields": _with(PAYMENT, cdr_id="x"),
    "unknown auto_recharge field": _with(CONFIGURE, auto_recharge={"enabled": False, "limit": "5"}),
    "unknown payment_method field": _with(
        CONFIGURE, auto_recharge={"enabled": True, "threshold": "1", "amount": "10", "payment_method": dict(CARD, cvv="123")}
    ),
    "unknown command": _with(ADD_FUNDS, command="delete_account"),
    "payment_result bad status": _with(PAYMENT, status="pending"),
    "card expires month 13": _with(
        CONFIGURE, auto_recharge={"enabled": True, "threshold": "1", "amount": "10", "payment_method": dict(CARD, expires="2026-13")}
    ),
    "card not a card": _with(
        CONFIGURE, auto_recharge={"enabled": True, "threshold": "1", "amount": "10", "payment_method": dict(CARD, type="sepa")}
    ),
    "included minutes float": _with(CONFIGURE, included_domestic_minutes=1.5),
    "included minutes negative": _with(CONFIGURE, included_domestic_minutes=-1),
    "auto_recharge null": _with(CONFIGURE, auto_recharge=None),
    "currency lower case": _with(ADD_FUNDS, currency="usd"),
    "reference too long": _with(ADD_FUNDS, reference="r" * 257),
    # tenant id
    "tenant id with a space": _with(CDR, tenant_id="acme corp"),
    "tenant id empty": _with(ADD_FUNDS, tenant_id=""),
    "tenant id 65 characters": _with(CDR, tenant_id="a" * 65),
    "tenant id with a slash": _with(PAYMENT, tenant_id="acme/eu"),
    "tenant id not a string": _with(CDR, tenant_id=42),
    # ids and enums
    "cdr_id empty": _with(CDR, cdr_id=""),
    "cdr_id 129 characters": _with(CDR, cdr_id="x" * 129),
    "command_id not a string": _with(CONFIGURE, command_id=7),
    "unknown call_type": _with(CDR, call_type="mobile"),
}


@pytest.mark.parametrize("label", sorted(VALID_INPUTS))
def test_valid_input_is_accepted_by_schema_and_decode(label):
    obj = VALID_INPUTS[label]
    assert _errors(_input_schema(obj), obj) == []
    record = decode(orjson.dumps(obj))
    assert record.kind == ("cdr" if "cdr_id" in obj else "command")


@pytest.mark.parametrize("label", sorted(INVALID_INPUTS))
def test_invalid_input_is_refused_by_schema_and_decode(label):
    obj = INVALID_INPUTS[label]
    assert _errors(_input_schema(obj), obj), f"the schema accepts {label}"
    with pytest.raises(Invalid) as exc:
        decode(orjson.dumps(obj))
    assert exc.value.reason == "invalid_record"


def test_cdr_extra_properties_pass_through_but_commands_refuse_them():
    assert load_schema("cdr")["additionalProperties"] is True
    record = decode(orjson.dumps(VALID_INPUTS["cdr with from and attributes"]))
    assert record.attributes == {"trunk": "t1", "meta": {"x": [1, 2]}}


def _def_validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{BASE_URI}common.json#/$defs/{name}"}, registry=registry())


_money_text = st.one_of(
    st.from_regex(r"\A[+-]?[0-9]{1,14}(\.[0-9]{0,8})?\Z"),
    st.from_regex(r"\A[+-]?(0|1)0{11,13}(\.0{0,7}1?)?\Z"),  # around the 10^12 limit
    st.text(alphabet="0123456789+-.eE ", max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(_money_text)
def test_money_string_patterns_agree_with_parse_money(text):
    try:
        micro: int | None = parse_money(text)
    except MoneyError:
        micro = None
    if "\n" in text:
        return  # Python's re lets "$" match before a final newline; ECMA-262 does not
    assert _def_validator("money").is_valid(text) == (micro is not None)
    assert _def_validator("money-nonnegative").is_valid(text) == (micro is not None and micro >= 0)
    assert _def_validator("money-positive").is_valid(text) == (micro is not None and micro > 0)


_time_text = st.from_regex(
    r"\A(19[7-9][0-9]|20[0-9]{2})-[01][0-9]-(0[1-9]|1[0-9]|2[0-8])[Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9]"
    r"(\.[0-9]{0,10})?([Zz]|[+-][0-3][0-9]:[0-6][0-9]|[+-][0-9]{4})?\Z"
)


@settings(max_examples=400, deadline=None)
@given(_time_text)
def test_time_pattern_agrees_with_parse_time(text):
    """Days 01-28 only: the pattern cannot tell 2026-02-30 from 2026-01-30; the rater can."""
    try:
        parse_time(text)
        ok = True
    except TimeError:
        ok = False
    assert _def_validator("time").is_valid(text) == ok


# ---------------------------------------------------------------- (c) rater rate, end to end

NOW = "2026-06-01T00:00:00Z"
RATES_USD = """call_type,prefix,destination,currency,rate_per_minute,connection_fee,first_increment,next_increment
domestic,1,United States,USD,0.01,0,60,60
international,44,United Kingdom,USD,1.00,0.10,60,60
toll_free,1800,US toll free,USD,0.05,,60,60
conference_dialout,1,United States,USD,0.02,0,1,1
"""
RATES_EUR = """call_type,prefix,currency,rate_per_minute
international,44,EUR,0.90
"""
AUTO = {"enabled": True, "threshold": "5", "amount": "20", "payment_method": CARD}


def _cdr(tenant, cdr_id, at, call_type, to, seconds, **extra):
    return {"cdr_id": cdr_id, "tenant_id": tenant, "call_type": call_type, "to": to, "started_at": at, "duration_seconds": seconds, **extra}


def _cmd(tenant, command_id, command, at, **fields):
    return {"command_id": command_id, "tenant_id": tenant, "command": command, "occurred_at": at, **fields}


# (line, expected reject reason or None). Comments give the balance after the line.
SCENARIO: list[tuple[object, str | None]] = [
    # acme: manual funds, expiry, low balance, below zero, restore
    (
        _cmd(
            "acme",
            "acme-c1",
            "configure_account",
            "2026-05-01T00:00:00Z",
            rate_plan="basic-usd",
            low_balance_threshold="5",
            included_domestic_minutes=10,
        ),
        None,
    ),
    (
        _cmd(
            "acme", "acme-f0", "add_funds", "2026-05-01T00:01:00Z", amount="3", purchased_at="2025-05-10T00:00:00Z", reference="old voucher"
        ),
        None,
    ),  # 3, expires 2026-05-10
    (_cmd("acme", "acme-f1", "add_funds", "2026-05-01T02:02:00+02:00", amount=20), None),  # 23
    (
        _cdr(
            "acme",
            "acme-1",
            "2026-05-11T10:00:00Z",
            "international",
            "+442071234567",
            600,
            **{"from": "+12125550100", "trunk": "t1", "meta": {"x": 1}},
        ),
        None,
    ),  # expire 3, -10.10: 9.90
    (_cdr("acme", "acme-2", "2026-05-11T10:20:00Z", "international", "+442071234567", 300), None),  # 4.80 low
    (_cdr("acme", "acme-3", "2026-05-11T10:30:00Z", "domestic", "+12125551234", 120), None),  # covered
    (_cdr("acme", "acme-4", "2026-05-11T10:40:00Z", "toll_free", "+18005551234", 60), None),  # 4.75
    (_cdr("acme", "acme-5", "2026-05-11T10:50:00Z", "conference_dialout", "+13125550000", 61), None),
    (_cdr("acme", "acme-6", "2026-05-11T11:00:00Z", "international", "+442071234567", 600), None),  # < 0
    (_cmd("acme", "acme-f2", "add_funds", "2026-05-11T12:00:00Z", amount="10"), None),  # restored
    (_cdr("acme", "acme-1", "2026-05-11T10:00:00Z", "international", "+442071234567", 600), None),  # dup
    (_cmd("acme", "acme-c2", "configure_account", "2026-05-11T12:05:00Z", rate_plan="basic-eur"), "currency_mismatch"),
    (_cmd("acme", "acme-f3", "add_funds", "2026-05-11T12:06:00Z", amount="1", currency="EUR"), "currency_mismatch"),
    (_cdr("acme", "acme-7", "2026-05-11T12:10:00Z", "international", "+33123456789", 60), "no_rate"),
    (_cdr("acme", "acme-8", "2026-05-01T00:00:00Z", "domestic", "+12125551234", 60), "too_late"),
    (_cdr("acme", "acme-9", "2026-06-03T00:00:00Z", "domestic", "+12125551234", 60), "invalid_timestamp"),
    (_cmd("delta", "delta-c1", "configure_account", "2026-05-11T12:00:00Z", rate_plan="nope"), "unknown_rate_plan"),
    (_cdr("nobody", "nobody-1", "2026-05-11T12:00:00Z", "domestic", "+12125551234", 60), "unknown_tenant"),
    (
        _cmd("nobody", "nobody-p1", "payment_result", "2026-05-11T12:00:00Z", request_id="nobody/recharge/1", status="succeeded"),
        "unknown_tenant",
    ),
    (b'{"cdr_id": "acme-10", "tenant_id": "acme",', "invalid_json"),
    (b'{"cdr_id": "acme-\xff\xfe", "tenant_id": "acme"}', "invalid_json"),
    (_cdr("acme", "acme-11", "2026-05-11T12:00:00Z", "domestic", "12125551234", 60), "invalid_record"),
    (_cmd("acme", "acme-f4", "add_funds", "2026-05-11T12:00:00Z", amount="1.0000001"), "invalid_record"),
    # beta: auto-recharge requested, succeeded, failed, re-enabled, timed out
    (
        _cmd("beta", "beta-c1", "configure_account", "2026-05-20T00:00:00Z", rate_plan="basic-usd", auto_recharge=AUTO),
        None,
    ),  # requested beta/recharge/1
    (_cmd("beta", "beta-p1", "payment_result", "2026-05-20T00:10:00Z", request_id="beta/recharge/1", status="succeeded"), None),  # 20
    (_cmd("beta", "beta-p2", "payment_result", "2026-05-20T00:11:00Z", request_id="beta/recharge/99", status="failed"), "unknown_request"),
    (_cdr("beta", "beta-1", "2026-05-20T01:00:00Z", "international", "+447700900123", 900), None),  # 4.90
    (
        _cmd(
            "beta",
            "beta-p3",
            "payment_result",
            "2026-05-20T01:05:00Z",
            request_id="beta/recharge/2",
            status="failed",
            reason="card_declined",
        ),
        None,
    ),  # suspended
    (_cdr("beta", "beta-2", "2026-05-20T01:10:00Z", "domestic", "+12125551234", 60), None),  # 4.89
    (_cmd("beta", "beta-c2", "configure_account", "2026-05-20T01:20:00Z", auto_recharge=AUTO), None),
    (_cdr("beta", "beta-3", "2026-05-20T03:00:00Z", "domestic", "+12125551234", 60), None),  # timeout
    # gamma: the card has expired
    (
        _cmd(
            "gamma",
            "gamma-c1",
            "configure_account",
            "2026-05-20T00:00:00Z",
            rate_plan="basic-usd",
            auto_recharge={"enabled": True, "threshold": "1", "amount": "10", "payment_method": {"type": "card", "expires": "2026-04"}},
        ),
        None,
    ),
]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def rated_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemas-run")
    rates = tmp / "rates"
    rates.mkdir()
    (rates / "basic-usd.csv").write_text(RATES_USD)
    (rates / "basic-eur.csv").write_text(RATES_EUR)
    data = b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x, _ in SCENARIO)
    infile = tmp / "input.jsonl"
    infile.write_bytes(data)
    out = tmp / "out"
    state_file = tmp / "state.json"
    rc = cli.main(["rate", "--rates", str(rates), "--out", str(out), "--now", NOW, "--state", str(state_file), str(infile)])
    assert rc == 0
    return {"in": infile, "out": out, "state": state_file}


OUTPUT_SCHEMAS = {
    "rated-cdrs.jsonl": "rated-cdr",
    "balance-events.jsonl": "balance-event",
    "recharge-requests.jsonl": "recharge-request",
    "rejects.jsonl": "reject",
}


def test_scenario_inputs_are_what_the_schemas_say(rated_run):
    """Every well-formed input line validates; the ones decode refuses, the schemas refuse."""
    for lineno, (x, reason) in enumerate(SCENARIO, 1):
        if isinstance(x, bytes):
            continue
        errors = _errors(_input_schema(x), x)
        if reason == "invalid_record":
            assert errors, f"line {lineno}: the schema accepts an invalid record"
        else:
            assert errors == [], f"line {lineno}: {errors}"


@pytest.mark.parametrize("filename", sorted(OUTPUT_SCHEMAS))
def test_every_output_line_validates(rated_run, filename):
    lines = _lines(rated_run["out"] / filename)
    assert lines, f"{filename} is empty: the scenario must exercise it"
    for n, obj in enumerate(lines, 1):
        errors = _errors(OUTPUT_SCHEMAS[filename], obj)
        assert errors == [], f"{filename}:{n}: {errors}\n{obj}"


def test_balances_json_validates(rated_run):
    balances = json.loads((rated_run["out"] / "balances.json").read_text())
    assert _errors("balances", balances) == []
    assert sorted(balances) == ["acme", "beta", "gamma"]
    for tenant, account in balances.items():
        assert _errors("account", account) == []
        assert account["tenant_id"] == tenant
    assert balances["beta"]["auto_recharge"]["suspended"] is True
    assert balances["acme"]["auto_recharge"] is None
    assert balances["acme"]["domestic_seconds_used"] == {"2026-05": 120}


def test_every_event_type_and_reject_reason_occurs(rated_run):
    out = rated_run["out"]
    events = _lines(out / "balance-events.jsonl")
    assert {e["type"] for e in events} == EVENT_TYPES
    failures = {e["reason"] for e in events if e["type"] == "auto_recharge_failed"}
    assert failures == {"card_declined", "timeout", "card_expired"}
    rejects = _lines(out / "rejects.jsonl")
    assert {r["reason"] for r in rejects} == REJECT_REASONS
    # Each reject is the line the scenario meant to be rejected, with that reason.
    expected = {n: reason for n, (_, reason) in enumerate(SCENARIO, 1) if reason}
    assert {r["source"]["line"]: r["reason"] for r in rejects} == expected
    assert all(r["source"]["file"] == str(rated_run["in"]) for r in rejects)
    base64_rejects = [r for r in rejects if r["raw_encoding"] == "base64"]
    assert len(base64_rejects) == 1
    assert base64.b64decode(base64_rejects[0]["raw"]) == SCENARIO[base64_rejects[0]["source"]["line"] - 1][0]
    requests = _lines(out / "recharge-requests.jsonl")
    assert [r["request_id"] for r in requests] == ["beta/recharge/1", "beta/recharge/2", "beta/recharge/3"]
    rated = _lines(out / "rated-cdrs.jsonl")
    applied_cdrs = {x["cdr_id"] for x, reason in SCENARIO if isinstance(x, dict) and "cdr_id" in x and not reason}
    assert sorted(r["cdr_id"] for r in rated) == sorted(applied_cdrs)  # the duplicate is not rated twice
    assert rated[0]["attributes"] == {"trunk": "t1", "meta": {"x": 1}}


def test_sweep_events_and_kafka_rejects_validate(rated_run):
    """Outputs the offline run cannot produce: sweep-caused events, a Kafka reject source."""
    accounts = statefile.load_state(str(rated_run["state"]))
    swept = 0
    for account in accounts.values():
        out = ledger.sweep(account, parse_time("2027-06-01T00:00:00Z"))
        if out is None:
            continue
        for event in out.events:
            assert event["cause"]["kind"] == "sweep"
            assert _errors("balance-event", event) == []
            swept += 1
        assert _errors("account", state.to_view(account)) == []
    assert swept >= 2
    kafka = reject_record("invalid_json", "not valid JSON", b"\xff{", {"topic": "cdrs", "partition": 3, "offset": 17}, None)
    assert _errors("reject", kafka) == []
    assert _errors("reject", dict(kafka, source={"topic": "cdrs", "partition": 3})) != []
    assert _errors("reject", dict(kafka, source={"file": "in.jsonl", "line": 0})) != []


@pytest.mark.parametrize(
    "type_, drop",
    [
        ("funds_added", "lot_id"),
        ("funds_expired", "expires_at"),
        ("low_balance", "threshold"),
        ("below_zero", "blocked_call_types"),
        ("auto_recharge_requested", "request_id"),
        ("auto_recharge_succeeded", "lot_id"),
        ("auto_recharge_failed", "reason"),
    ],
)
def test_balance_event_requires_its_type_fields(rated_run, type_, drop):
    event = next(e for e in _lines(rated_run["out"] / "balance-events.jsonl") if e["type"] == type_)
    assert _errors("balance-event", event) == []
    assert _errors("balance-event", {k: v for k, v in event.items() if k != drop}) != []


def test_balance_event_refuses_fields_of_other_types(rated_run):
    event = next(e for e in _lines(rated_run["out"] / "balance-events.jsonl") if e["type"] == "balance_restored")
    assert _errors("balance-event", dict(event, threshold="5.000000")) != []
    assert _errors("balance-event", dict(event, balance="4.6")) != []  # not 6 fractional digits
    assert _errors("balance-event", dict(event, occurred_at="2026-05-11T12:00:00+00:00")) != []  # not Z
