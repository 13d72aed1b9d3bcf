"""Fuzzing the two entry points hostile bytes reach first (no Kafka).

- ``rater.core.records.decode``: whatever the bytes, it returns a ``Cdr`` or a ``Command`` or
  raises ``rater.core.records.Invalid``; never any other exception (in the worker, any other
  exception stops the process, and the record that caused it would stop it again after
  every restart).
- ``rater.core.engine.Engine.process``: on random bytes and on random mutations of the worked
  example's records, it never raises; every output it writes validates against
  ``schemas/``; every account stays consistent (balance = sum of lots - debt, debt >= 0,
  every lot > 0, lots in spending order) and its view validates against the account
  schema.

The regression tests at the end pin the minimal crashing inputs hypothesis found.
"""

from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rater.core.codec import to_view
from rater.core.engine import Engine
from rater.core.ledger import Account
from rater.core.money import format_money
from rater.core.rates import load_rate_tables
from rater.core.records import CDR_FIELDS, COMMAND_FIELDS, Cdr, Command, Invalid, decode
from rater.core.timeutil import format_time, parse_time
from rater.dev.schemas import validator
from tests.support.worker import ROOT

WORKED = ROOT / "examples" / "worked-example.jsonl"
NOW = parse_time("2026-11-25T00:00:00Z")  # the worked example is dated 2026-11-24
TABLES = load_rate_tables(str(ROOT / "rate_tables"))
REASONS = (
    "invalid_json",
    "invalid_record",
    "unknown_tenant",
    "unknown_rate_plan",
    "currency_mismatch",
    "no_rate",
    "too_late",
    "invalid_timestamp",
    "unknown_request",
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------- strategies

ALL_FIELDS = sorted(
    set(CDR_FIELDS).union(*COMMAND_FIELDS.values()) | {"enabled", "threshold", "payment_method", "type", "expires", "last4", "reference"}
)

# Values a hostile or broken producer writes: boundary times (with offsets that push them
# past year 1 or year 9999), huge and odd numbers, near-miss strings, wrong types.
_times = st.one_of(
    st.sampled_from(
        [
            "2026-11-24T10:00:00Z",
            "2026-11-24T10:00:00+01:00",
            "2026-11-24T10:00:00",
            "2026-02-30T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00-23:59",
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59:59-23:59",
            "9999-12-31T00:00:00+23:59",
            "2025-11-24T10:00:00Z",
            "2019-01-01T00:00:00Z",
            "2026-11-24T10:00:00.123456789Z",
            "",
        ]
    ),
    st.builds(
        lambda dt, sign, h, m: dt.strftime("%Y-%m-%dT%H:%M:%S") + (f"{sign}{h:02d}:{m:02d}" if sign else "Z"),
        st.datetimes(),
        st.sampled_from(["", "+", "-"]),
        st.integers(0, 23),
        st.integers(0, 59),
    ),
)
_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False),
    st.sampled_from([0, -1, 1, 86400, 86401, 10**30, -(10**30), 2**63, 2**64, 1e300, -0.0, 0.1, 1e-7]),
)
_strings = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "acme",
            "globex",
            "international",
            "domestic",
            "toll_free",
            "conference_dialout",
            "card",
            "+442071838750",
            "+0123",
            "+1",
            "+1234567890123456",
            "12.5",
            "0.0000001",
            "1e3",
            "-5",
            "NaN",
            "Infinity",
            "9" * 40,
            "standard-usd",
            "standard-eur",
            "acme/recharge/1",
            "succeeded",
            "failed",
            "2027-08",
            "2020-01",
            "4242",
            "\x00",
            "\ud7ff",
            "a" * 200,
        ]
    ),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _strings, _times)
json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(ALL_FIELDS), st.text(max_size=8)), inner, max_size=5)
    ),
    max_leaves=12,
)
field_dicts = st.dictionaries(st.sampled_from(ALL_FIELDS + ["command", "cdr_id"]), json_values, max_size=12)


def _dumps(value) -> bytes | None:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits: write the JSON text by hand
        return None


def _json_text(value) -> bytes:
    """JSON text of ``value``; orjson cannot write integers beyond 64 bits, so those go
    through the standard library (which writes infinities as ``Infinity``, not JSON: one
    more kind of hostile input)."""
    b = _dumps(value)
    if b is None:
        import json

        b = json.dumps(value).encode()
    return b


def check_decode(raw: bytes, key: str | None = None) -> None:
    try:
        rec = decode(raw, key)
    except Invalid as exc:
        assert exc.reason in ("invalid_json", "invalid_record"), exc.reason
        assert exc.detail
        return
    assert isinstance(rec, (Cdr, Command))


# ---------------------------------------------------------------------------- decode


@FUZZ
@given(st.binary(max_size=600), st.one_of(st.none(), st.text(max_size=10)))
@example(b"[" * 100_000, None)
@example(b"1e400", None)
@example(b'{"cdr_id":"\xff"}', None)
def test_decode_on_arbitrary_bytes_returns_a_record_or_raises_invalid(raw, key):
    check_decode(raw, key)


@FUZZ
@given(json_values)
def test_decode_on_arbitrary_json_returns_a_record_or_raises_invalid(value):
    check_decode(_json_text(value))


@FUZZ
@given(field_dicts, st.sampled_from(["cdr", "configure_account", "add_funds", "payment_result", None]))
def test_decode_on_records_with_the_real_field_names_returns_a_record_or_raises_invalid(fields, kind):
    if kind == "cdr":
        fields.setdefault("cdr_id", "c-1")
    elif kind is not None:
        fields["command"] = kind
        fields.pop("cdr_id", None)
    check_decode(_json_text(fields))
    check_decode(_json_text(fields), "acme")


# ---------------------------------------------------------------------------- the engine


def _worked_lines() -> list[bytes]:
    return [line.rstrip(b"\n") for line in WORKED.read_bytes().splitlines() if line.strip()]


WORKED_LINES = _worked_lines()
WORKED_RECORDS = []
for _line in WORKED_LINES:
    try:
        _obj = orjson.loads(_line)
    except orjson.JSONDecodeError:
        continue
    WORKED_RECORDS.append(_obj)


def fresh_engine() -> Engine:
    """An engine holding the worked example's accounts (acme with lots, auto-recharge
    and debt history; globex below zero)."""
    engine = Engine(TABLES)
    for n, line in enumerate(WORKED_LINES, 1):
        engine.process(line, None, {"file": "worked-example.jsonl", "line": n}, NOW)
    return engine


_ENGINE_TEMPLATE = fresh_engine()


def engine_copy() -> Engine:
    engine = Engine(TABLES, copy.deepcopy(_ENGINE_TEMPLATE.accounts))
    return engine


def check_account(acct: Account) -> None:
    assert acct.debt >= 0, acct
    assert all(lot.remaining > 0 for lot in acct.lots), acct.lots
    keys = [lot.sort_key() for lot in acct.lots]
    assert keys == sorted(keys), "lots out of spending order"
    view = to_view(acct)
    assert view["balance"] == format_money(sum(lot.remaining for lot in acct.lots) - acct.debt)
    errors = sorted(validator("account").iter_errors(view), key=str)
    assert not errors, (view, [e.message for e in errors])


def _valid(name: str, record: dict) -> None:
    errors = sorted(validator(name).iter_errors(record), key=str)
    assert not errors, (name, record, [e.message for e in errors])


def run_engine(engine: Engine, raws: list[bytes], keys: list[str | None] | None = None) -> None:
    for i, raw in enumerate(raws):
        key = keys[i] if keys else None
        source = {"topic": "cdrs", "partition": 0, "offset": i} if key is not None else {"file": "fuzz.jsonl", "line": i + 1}
        p = engine.process(raw, key, source, NOW)
        out = p.outcome
        assert out.status in ("applied", "duplicate", "rejected")
        if out.status == "rejected":
            assert p.reject is not None and p.reject["reason"] in REASONS
            _valid("reject", p.reject)
            # Serialisable as the worker writes it.
            orjson.dumps(p.reject)
        else:
            assert p.reject is None
        if out.rated is not None:
            _valid("rated-cdr", orjson.loads(orjson.dumps(out.rated)))
        for e in out.events:
            _valid("balance-event", orjson.loads(orjson.dumps(e)))
        for r in out.recharge_requests:
            _valid("recharge-request", orjson.loads(orjson.dumps(r)))
        for acct in engine.accounts.values():
            check_account(acct)


_money_text = st.integers(0, 10**9).map(format_money)
_recent = st.integers(parse_time("2026-11-10T00:00:00Z"), NOW + 23 * 3600 * 10**6).map(lambda micro: format_time(micro - micro % 10**6))
# Values that pass validation, so the mutations reach the ledger and not only the checks.
PLAUSIBLE = {
    "amount": _money_text,
    "threshold": _money_text,
    "low_balance_threshold": _money_text,
    "duration_seconds": st.integers(0, 86400),
    "started_at": _recent,
    "occurred_at": _recent,
    "purchased_at": _recent,
    "call_type": st.sampled_from(["international", "domestic", "toll_free", "conference_dialout"]),
    "to": st.sampled_from(["+447700900123", "+14155550123", "+18005550199", "+33612345678", "+4930123456", "+99912345"]),
    "tenant_id": st.sampled_from(["acme", "globex", "initech"]),
    "rate_plan": st.sampled_from(["standard-usd", "standard-eur", "premium-gbp", "nope"]),
    "included_domestic_minutes": st.integers(0, 1000),
    "request_id": st.sampled_from(["acme/recharge/1", "acme/recharge/2", "globex/recharge/1"]),
    "status": st.sampled_from(["succeeded", "failed"]),
    "command": st.sampled_from(sorted(COMMAND_FIELDS)),
    "currency": st.sampled_from(["USD", "EUR", "GBP"]),
    "auto_recharge": st.fixed_dictionaries(
        {
            "enabled": st.booleans(),
            "threshold": _money_text,
            "amount": _money_text.filter(lambda m: m != "0.000000"),
            "payment_method": st.fixed_dictionaries(
                {"type": st.just("card"), "expires": st.sampled_from(["2025-01", "2026-11", "2030-12"])}
            ),
        }
    ),
}


@st.composite
def mutated(draw) -> bytes:
    """A worked-example record with one to three fields replaced (by a plausible or a
    hostile value), removed or added."""
    rec = copy.deepcopy(draw(st.sampled_from(WORKED_RECORDS)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["plausible", "plausible", "plausible", "set", "set", "delete", "add", "nest"]))
        if op == "plausible":
            name = draw(st.sampled_from(sorted(PLAUSIBLE)))
            rec[name] = draw(PLAUSIBLE[name])
        elif op == "set" and rec:
            rec[draw(st.sampled_from(sorted(rec)))] = draw(json_values)
        elif op == "delete" and rec:
            del rec[draw(st.sampled_from(sorted(rec)))]
        elif op == "add":
            rec[draw(st.sampled_from(ALL_FIELDS))] = draw(json_values)
        elif op == "nest" and isinstance(rec.get("auto_recharge"), dict):
            ar = rec["auto_recharge"]
            ar[draw(st.sampled_from(["enabled", "threshold", "amount", "payment_method", "x"]))] = draw(json_values)
    # A fresh id now and then, so the mutation is applied rather than found a duplicate.
    if draw(st.integers(0, 3)):
        for idf in ("cdr_id", "command_id"):
            if isinstance(rec.get(idf), str):
                rec[idf] = rec[idf] + "-" + str(draw(st.integers(0, 50)))
    return _json_text(rec)


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=10))
def test_the_engine_on_random_bytes_never_raises_and_writes_valid_rejects(raws):
    run_engine(engine_copy(), raws)


@FUZZ
@given(st.lists(mutated(), min_size=1, max_size=12), st.booleans())
def test_the_engine_on_mutated_records_never_raises_writes_valid_outputs_and_keeps_accounts_consistent(raws, keyed):
    keys = None
    if keyed:  # as through Kafka: the key is the record's tenant when it has one
        keys = []
        for raw in raws:
            try:
                t = orjson.loads(raw).get("tenant_id")
            except Exception:
                t = None
            keys.append(t if isinstance(t, str) else "acme")
    run_engine(engine_copy(), raws, keys)


# ---------------------------------------------------------------------------- found crashes


CRASHERS = [
    # A call type that is not hashable: ``call_type not in frozenset`` raises TypeError.
    b'{"cdr_id":"x","tenant_id":"acme","call_type":[]}',
    b'{"cdr_id":"x","tenant_id":"acme","call_type":{}}',
    # purchased_at near year 9999: the lot's expiry (+12 months) is past datetime's range.
    b'{"command_id":"f","tenant_id":"acme","command":"add_funds","occurred_at":"2026-11-24T12:00:00Z",'
    b'"amount":"1","purchased_at":"9999-12-31T00:00:00Z"}',
    # Times whose offset takes them before year 1 or after year 9999 in UTC: valid RFC 3339
    # text, but formatting them back (in a reject detail or an output) overflows.
    b'{"cdr_id":"y","tenant_id":"acme","call_type":"international","to":"+447700900123",'
    b'"started_at":"0001-01-01T00:00:00+01:00","duration_seconds":60}',
    b'{"cdr_id":"z","tenant_id":"acme","call_type":"international","to":"+447700900123",'
    b'"started_at":"9999-12-31T23:59:59-23:59","duration_seconds":60}',
    b'{"command_id":"g","tenant_id":"acme","command":"add_funds","occurred_at":"0001-01-01T00:00:00+01:00","amount":"1"}',
]


@pytest.mark.parametrize(
    "raw",
    CRASHERS,
    ids=[
        "call_type-list",
        "call_type-object",
        "purchased_at-9999",
        "started_at-before-year-1",
        "started_at-after-9999",
        "occurred_at-before-year-1",
    ],
)
def test_inputs_that_once_crashed_are_rejected(raw):
    engine = engine_copy()
    before = {t: to_view(a) for t, a in engine.accounts.items()}
    p = engine.process(raw, None, {"file": "crash.jsonl", "line": 1}, NOW)
    assert p.outcome.status == "rejected" and p.reject is not None
    assert p.reject["reason"] in ("invalid_record", "invalid_timestamp", "too_late")
    _valid("reject", p.reject)
    assert {t: to_view(a) for t, a in engine.accounts.items()} == before


def _nested(depth: int, shape: str) -> bytes:
    """A record ``depth`` levels deep (the outer object counted): objects, arrays, or
    objects that repeat a key at every level."""
    inner = depth - 1
    if shape == "objects":
        return b'{"cdr_id":"c","tenant_id":"t1","x":' + b'{"a":' * inner + b"1" + b"}" * (inner + 1)
    if shape == "arrays":
        return b'{"cdr_id":"c","tenant_id":"t1","x":' + b"[" * inner + b"]" * inner + b"}"
    return b'{"cdr_id":"c","tenant_id":"t1","x":' + b'{"a":1,"a":' * inner + b"1" + b"}" * (inner + 1)


@pytest.mark.parametrize("depth", [999, 1000, 1024, 1025])
@pytest.mark.parametrize("shape", ["objects", "arrays", "repeated"])
def test_records_nested_as_deep_as_orjson_reads_are_rejected_not_raised(depth, shape):
    """orjson reads up to 1,024 levels; Python's own recursion limit is 1,000. A record
    nested 1,000 to 1,024 levels deep once raised RecursionError in the repeated-key
    check (a poison record for the Python engine): it is rejected like any other."""
    raw = _nested(depth, shape)
    assert raw.count(b"[") + raw.count(b"{") == depth
    p = engine_copy().process(raw, None, {"file": "deep.jsonl", "line": 1}, NOW)
    assert p.outcome.status == "rejected" and p.reject is not None
    if depth > 1024:
        assert (p.reject["reason"], p.reject["detail"][:14]) == ("invalid_json", "not valid JSON")
    elif shape == "repeated":
        assert (p.reject["reason"], p.reject["detail"][:42]) == ("invalid_record", "a: the key appears more than once in an ob")
    else:
        assert (p.reject["reason"], p.reject["detail"]) == ("invalid_record", "call_type: required")
