"""The native engine (Rust, ``native/``) against the Python core, byte for byte.

The Python core is the reference. Each test feeds both engines the same bytes and
asserts that they write the same outputs (rated CDRs, balance events, recharge requests,
rejects: the encoded bytes, so key order, number and string formats count) and end with
the same accounts (the stored encoding of ``rater/core/codec.py``). The streams come from
hypothesis and are made to reach every reject reason, duplicates, late payment answers,
expiry, month boundaries and rate changes (``test_the_streams_reach_every_case`` checks
that they do). Skipped when the extension is not built; ``make test`` builds it.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rater.core.codec import decode_account, encode_account
from rater.core.engine import Engine
from rater.core.native_engine import NativeEngine, available
from rater.core.timeutil import parse_time
from rater.sim import traffic
from tests.core.test_fuzz import TABLES as WORKED_TABLES
from tests.core.test_fuzz import WORKED_LINES, _json_text, json_values, mutated
from tests.support.ledger import write_tables

pytestmark = pytest.mark.skipif(not available(), reason="the native engine is not built (pip install ./native)")

DIFF = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NOW = parse_time("2026-12-05T00:00:00Z")  # records after 2026-12-06T00:00Z are invalid_timestamp

TENANTS = ("t1", "t2", "t3")
NUMBERS = ("+442071234567", "+447700900123", "+447912345678", "+4930123456", "+12125550100", "+18005550100", "+33123456789")
CALL_TYPES = ("international", "domestic", "toll_free", "conference_dialout")

# 2026-10-28 to 2026-12-07: month boundaries (domestic minutes), the 2026-12-01 rate
# change of the test plan, funds bought 2025-11 expiring in 2026-11, times past NOW + 24 h.
_START = parse_time("2026-10-28T00:00:00Z") // 10**6
_times = st.integers(0, 40 * 86400).map(
    lambda s: __import__("rater.core.timeutil", fromlist=["format_time"]).format_time((_START + s) * 10**6)
)
_odd_times = st.sampled_from(
    [
        "2026-11-10T10:00:00+01:00",
        "2026-11-10T10:00:00.250Z",
        "2026-11-10t09:00:00z",
        "2026-11-10T10:00:00",
        "2026-02-30T00:00:00Z",
        "2026-11-10T10:00:00.123456789-05:30",
    ]
)
_good_money = st.integers(1, 5_000_000).map(lambda m: f"{m // 1_000_000}.{m % 1_000_000:06d}")
_money = st.one_of(
    _good_money,
    _good_money,
    _good_money,
    _good_money,
    st.sampled_from(["0", "-1", "1.1234567", "12", 3, 0.25, 1e-7, True, "abc", 1e13]),
)


@st.composite
def record(draw) -> bytes:
    tenant = draw(st.sampled_from(TENANTS + ("ghost",)))
    kind = draw(st.sampled_from(["cdr"] * 6 + ["funds", "configure", "payment", "payment", "garbage"]))
    rid = f"{kind}-{draw(st.integers(0, 30))}"
    at = draw(st.one_of(_times, _times, _times, _odd_times))
    if kind == "garbage":
        return draw(
            st.sampled_from(
                [
                    b"{not json",
                    b"[1,2]",
                    b'{"tenant_id":"t1"}',
                    b"\xff\xfe",
                    b'"x"',
                    b'{"cdr_id":"z","tenant_id":"t1","call_type":"domestic"}',
                ]
            )
        )
    if kind == "cdr":
        rec = {
            "cdr_id": rid,
            "tenant_id": tenant,
            "call_type": draw(st.sampled_from(CALL_TYPES)),
            "to": draw(st.sampled_from(NUMBERS + ("+99912345",))),
            "started_at": at,
            "duration_seconds": draw(st.sampled_from([0, 1, 29, 30, 31, 61, 3600, 86400]) | st.integers(0, 7200)),
        }
        if draw(st.booleans()):
            rec["from"] = "+12125550123"
        if draw(st.integers(0, 4)) == 0:
            rec["attributes_x"] = draw(json_values)
        return _json_text(rec)
    if kind == "funds":
        rec = {"command_id": rid, "tenant_id": tenant, "command": "add_funds", "occurred_at": at, "amount": draw(_money)}
        if draw(st.booleans()):
            rec["purchased_at"] = draw(st.sampled_from(["2025-11-05T00:00:00Z", "2025-11-30T00:00:00Z", at]))
        if draw(st.integers(0, 5)) == 0:
            rec["currency"] = draw(st.sampled_from(["USD", "EUR", "usd"]))
        return orjson.dumps(rec)
    if kind == "configure":
        rec = {
            "command_id": rid,
            "tenant_id": tenant,
            "command": "configure_account",
            "occurred_at": at,
            "rate_plan": draw(st.sampled_from(["test-usd"] * 6 + ["test-eur", "nope"])),
            "low_balance_threshold": draw(_money),
            "included_domestic_minutes": draw(st.integers(0, 5)),
        }
        if draw(st.booleans()):
            rec["auto_recharge"] = {
                "enabled": draw(st.booleans()),
                "threshold": draw(_money),
                "amount": draw(_money),
                "payment_method": {"type": "card", "expires": draw(st.sampled_from(["2026-10", "2026-11", "2028-01"])), "last4": "4242"},
            }
        return orjson.dumps(rec)
    rec = {
        "command_id": rid,
        "tenant_id": tenant,
        "command": "payment_result",
        "occurred_at": at,
        "request_id": f"{tenant}/recharge/{draw(st.integers(1, 3))}",
        "status": draw(st.sampled_from(["succeeded", "failed"])),
    }
    if draw(st.booleans()):
        rec["reason"] = "card_declined"
    return orjson.dumps(rec)


@st.composite
def opening(draw) -> list[bytes]:
    """Each tenant configured (some with auto-recharge) and funded, some funds bought a
    year ago so that they expire within the stream."""
    out = []
    for t in TENANTS:
        rec = {
            "command_id": f"open-{t}",
            "tenant_id": t,
            "command": "configure_account",
            "occurred_at": "2026-10-28T00:00:00Z",
            "rate_plan": "test-usd",
            "low_balance_threshold": draw(_good_money),
            "included_domestic_minutes": draw(st.integers(0, 3)),
        }
        if draw(st.booleans()):
            rec["auto_recharge"] = {
                "enabled": True,
                "threshold": draw(_good_money),
                "amount": draw(_good_money),
                "payment_method": {"type": "card", "expires": "2028-01"},
            }
        out.append(orjson.dumps(rec))
        out.append(
            orjson.dumps(
                {
                    "command_id": f"fund-{t}",
                    "tenant_id": t,
                    "command": "add_funds",
                    "occurred_at": "2026-10-28T00:00:00Z",
                    "amount": draw(_good_money),
                    "purchased_at": draw(st.sampled_from(["2025-11-05T00:00:00Z", "2026-10-28T00:00:00Z"])),
                }
            )
        )
    return out


streams = st.builds(lambda a, b: a + b, opening(), st.lists(record(), min_size=1, max_size=80))


def _engines(tables, accounts=None, horizon=None):
    kw = {} if horizon is None else {"horizon": horizon}
    py = Engine(tables, copy.deepcopy(accounts) if accounts else None, **kw)
    nat = NativeEngine(tables, copy.deepcopy(accounts) if accounts else None, **kw)
    return py, nat


def _source(i: int, kafka: bool) -> dict:
    return {"topic": "cdrs", "partition": 0, "offset": i} if kafka else {"file": "in.jsonl", "line": i + 1}


def assert_same_accounts(py: Engine, nat: NativeEngine) -> None:
    assert sorted(py.accounts) == nat.native.tenants()
    for tenant, acct in py.accounts.items():
        assert nat.native.get_account(tenant) == encode_account(acct), tenant
    # balances.json: the native view (written in Rust) against to_view, as orjson writes them.
    assert orjson.dumps(nat.views()) == orjson.dumps(py.views())
    assert nat.balances_json() == py.balances_json()  # indented natively
    assert nat.below_zero() == py.below_zero()


def run_both(py: Engine, nat: NativeEngine, raws: list[bytes], keys=None, now: int = NOW, seen: Counter | None = None):
    for i, raw in enumerate(raws):
        key = keys[i] if keys else None
        src = _source(i, key is not None)
        a = py.process_bytes(raw, key, src, now)
        b = nat.process_bytes(raw, key, src, now)
        assert a == b, (raw, a, b)
        if seen is not None:
            status, reason, _detail, _rated, events, _requests, _reject = a
            seen[status] += 1
            if reason:
                seen[reason] += 1
            for e in events:
                event = orjson.loads(e)
                seen[event["type"]] += 1
                if event.get("reason") == "timeout":
                    seen["timeout"] += 1
                    seen[("timed out", event["tenant_id"], event["request_id"])] += 1
                if event["type"] == "auto_recharge_succeeded" and seen[("timed out", event["tenant_id"], event["request_id"])]:
                    seen["late answer credited"] += 1
    assert_same_accounts(py, nat)


@pytest.fixture(scope="module")
def test_tables(tmp_path_factory):
    return write_tables(str(tmp_path_factory.mktemp("rates")))


@DIFF
@given(stream=streams)
def test_random_streams_give_the_same_bytes_and_accounts(test_tables, stream):
    py, nat = _engines(test_tables)
    run_both(py, nat, stream)


@DIFF
@given(stream=streams, horizon_hours=st.sampled_from([1, 24, 24 * 7]))
def test_a_short_horizon_gives_the_same_too_late_and_pruning(test_tables, stream, horizon_hours):
    py, nat = _engines(test_tables, horizon=horizon_hours * 3600 * 10**6)
    run_both(py, nat, stream)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raws=st.lists(mutated(), min_size=1, max_size=8), keyed=st.booleans())
def test_mutated_worked_example_records_give_the_same_bytes(raws, keyed):
    """Mutations of the worked example's records (test_fuzz's hostile values: odd
    numbers, big integers, floats, unicode, wrong types) on the worked example's accounts."""
    py = Engine(WORKED_TABLES)
    for n, line in enumerate(WORKED_LINES, 1):
        py.process(line, None, {"file": "w.jsonl", "line": n}, parse_time("2026-11-25T00:00:00Z"))
    nat = NativeEngine(WORKED_TABLES, py.accounts)
    assert_same_accounts(py, nat)
    keys = None
    if keyed:
        keys = []
        for raw in raws:
            try:
                tenant = orjson.loads(raw).get("tenant_id")
            except (orjson.JSONDecodeError, AttributeError):
                tenant = None
            keys.append(tenant if isinstance(tenant, str) else "acme")
    run_both(py, nat, raws, keys, now=parse_time("2026-11-25T00:00:00Z"))


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=300), key=st.one_of(st.none(), st.text(max_size=10)))
@example(raw=b"[" * 100_000, key=None)
@example(raw=b"1e400", key=None)
@example(raw=b'{"cdr_id":"\xff"}', key=None)
@example(raw=b'{"a":"\\ud800"}', key=None)
@example(raw=b"\xef\xbb\xbf{}", key=None)
@example(
    raw=b'{"cdr_id":"c","tenant_id":"t1","call_type":"domestic","to":"+15551234567","started_at":"2026-11-10T00:00:00\xc3\xa9","duration_seconds":1}',
    key=None,
)  # noqa: E501
def test_the_native_decoder_on_arbitrary_bytes_rejects_as_python_does(test_tables, raw, key):
    """Never a panic crossing into Python: arbitrary bytes end as the same reject."""
    py, nat = _engines(test_tables)
    run_both(py, nat, [raw], [key] if key is not None else None)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_arbitrary_json_values_decode_as_python_does(test_tables, value):
    py, nat = _engines(test_tables)
    run_both(py, nat, [_json_text(value), _json_text({"cdr_id": "c", "tenant_id": "t1", "x": value})])


def test_the_streams_reach_every_case(test_tables):
    """The generator above reaches every reject reason, duplicates, expiry, timeouts and
    late answers credited (SPEC v1.1) (counted over 60 derandomized streams, the same
    every run)."""
    seen: Counter = Counter()

    @settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(stream=st.builds(lambda a, b: a + b, opening(), st.lists(record(), min_size=60, max_size=80)))
    def count(stream):
        py, nat = _engines(test_tables)
        run_both(py, nat, stream, seen=seen)

    count()
    for case in (
        "invalid_json",
        "invalid_record",
        "unknown_tenant",
        "unknown_rate_plan",
        "currency_mismatch",
        "no_rate",
        "too_late",
        "invalid_timestamp",
        "unknown_request",
        "duplicate",
        "funds_expired",
        "auto_recharge_requested",
        "auto_recharge_succeeded",
        "timeout",
        "below_zero",
        "balance_restored",
        "low_balance",
        "late answer credited",
    ):
        assert seen[case] > 0, (case, seen)


def test_accounts_written_by_the_python_codec_are_read_by_the_native_one():
    """Upgrade: the stored accounts of the Python encoding (the worked example's, with
    lots, a card, a pending request, debt and remembered ids), in format 1 (every release
    before format 2 wrote it) and in format 2, decode natively and encode to the bytes the
    Python codec writes by default (format 2)."""
    import rater_native

    py = Engine(WORKED_TABLES)
    for n, line in enumerate(WORKED_LINES, 1):
        py.process(line, None, {"file": "w.jsonl", "line": n}, parse_time("2026-11-25T00:00:00Z"))
    assert len(py.accounts) == 2
    for acct in py.accounts.values():
        for format in (1, 2):
            assert rater_native.recode_account(encode_account(acct, format=format)) == encode_account(acct)
        nat = NativeEngine(WORKED_TABLES, {acct.tenant_id: acct})
        assert decode_account(nat.native.get_account(acct.tenant_id)) == acct


def test_the_traffic_generator_input_rates_the_same(test_tables, tmp_path):
    """The benchmark's input shape (rater.sim.traffic: setup commands, skewed tenants, bad
    records, top-ups), 20,000 records, through `rater rate` with each engine: the output
    files and balances.json are identical."""
    from rater.core.rates import load_rate_tables

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rates = os.path.join(root, "rate_tables")
    tables = load_rate_tables(rates)
    start = parse_time("2026-11-20T00:00:00Z")
    path = tmp_path / "in.jsonl"
    with open(path, "wb") as f:
        for rec in traffic.records(300, 7, tables, 20_000, start=start, step=20_000_000, bad_share=0.01):
            f.write((rec if isinstance(rec, bytes) else orjson.dumps(rec)) + b"\n")
    outs = {}
    for engine in ("python", "native"):
        out = tmp_path / engine
        subprocess.run(
            [
                sys.executable,
                "-m",
                "rater",
                "rate",
                "--engine",
                engine,
                "--rates",
                rates,
                "--out",
                str(out),
                "--now",
                "2026-12-31T00:00:00Z",
                str(path),
            ],
            check=True,
            capture_output=True,
        )
        outs[engine] = {n: (out / n).read_bytes() for n in sorted(os.listdir(out))}
    assert outs["python"].keys() == outs["native"].keys()
    for name in outs["python"]:
        assert outs["python"][name] == outs["native"][name], name
    assert outs["python"]["rated-cdrs.jsonl"].count(b"\n") > 15_000


def test_split_runs_with_state_give_the_same_state_file(tmp_path):
    """`--state` written by one engine continues under the other."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rates = os.path.join(root, "rate_tables")
    worked = os.path.join(root, "examples", "worked-example.jsonl")
    lines = open(worked, "rb").read().splitlines(keepends=True)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(b"".join(lines[:8]))
    second.write_bytes(b"".join(lines[8:]))
    states = {}
    for order in (("python", "native"), ("native", "python"), ("python", "python")):
        state = tmp_path / ("-".join(order) + ".state")
        for engine, part in zip(order, (first, second)):
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "rater",
                    "rate",
                    "--engine",
                    engine,
                    "--rates",
                    rates,
                    "--out",
                    str(tmp_path / "out"),
                    "--state",
                    str(state),
                    "--now",
                    "2026-11-25T00:00:00Z",
                    str(part),
                ],
                check=True,
                capture_output=True,
            )
        states[order] = state.read_bytes()
    assert states[("python", "native")] == states[("python", "python")] == states[("native", "python")]


# The worker's batch step on both engines, with their account stores:
# tests/worker/test_native_store.py.

_CDR = (
    b'"cdr_id":"c1","tenant_id":"t1","call_type":"domestic","to":"+12125550100","started_at":"2026-11-10T00:00:00Z","duration_seconds":60'  # noqa: E501
)


@pytest.mark.parametrize(
    "raw",
    [
        b"{" + _CDR + b',"cdr_id":"c2"}',  # a repeated top-level key
        b"{" + _CDR + b',"x":{"a":1,"b":{"c":1,"c":2},"a":2}}',  # the inner object ends first: c
        b'{"tenant_id":"t1","tenant_id":"t2","cdr_id":"c"}',  # the repeated key is tenant_id
        b'{"command_id":"a\\u0001","tenant_id":"t1","command":"add_funds","occurred_at":"2026-11-01T00:00:00Z","amount":"1"}',
        b'{"command_id":"a\xc2\x85","tenant_id":"t1","command":"add_funds","occurred_at":"2026-11-01T00:00:00Z","amount":"1"}',
        b'{"command_id":"a","tenant_id":"t1","command":"add_funds","occurred_at":"2026-11-01T00:00:00Z","amount":"99999999999999"}',
        b'{"command_id":"a","tenant_id":"t1","command":"add_funds","occurred_at":"2026-11-01T00:00:00Z","amount":"12345678901234.5"}',
        b"",
        b"x" * 20_000,  # not JSON, raw cut to 16 KiB with its size and hash
        b"\xff" * 20_000,  # not UTF-8: base64 of the first 16 KiB
        "é".encode() * 10_000,  # a cut inside a two-byte character
        b"{" + _CDR + b',"pad":"' + b"y" * 600_000 + b'"}',  # over the 512 KiB record limit
    ],
)
def test_bounds_repeated_keys_and_control_characters_reject_as_python_does(test_tables, raw):
    py, nat = _engines(test_tables)
    run_both(py, nat, [raw])
    run_both(py, nat, [raw], ["t1"])


def test_a_tombstone_is_rejected_as_python_does(test_tables):
    py, nat = _engines(test_tables)
    src = {"topic": "cdrs", "partition": 0, "offset": 5}
    assert py.process_bytes(None, "t1", src, NOW) == nat.process_bytes(None, "t1", src, NOW)


def test_records_nested_to_orjsons_limit_reject_as_python_does(test_tables):
    """1,000 to 1,025 levels deep: past Python's recursion limit, up to and past orjson's."""
    raws = []
    for depth in (999, 1000, 1023, 1024, 1025):
        inner = depth - 1
        raws.append(b'{"cdr_id":"c","tenant_id":"t1","x":' + b"[" * inner + b"]" * inner + b"}")
        raws.append(b'{"a":' * depth + b"1" + b"}" * depth)
        raws.append(b'{"b":1,"b":' + b'{"a":' * (depth - 1) + b"1" + b"}" * depth)
    py, nat = _engines(test_tables)
    run_both(py, nat, raws)
    run_both(py, nat, raws, ["t1"] * len(raws))
