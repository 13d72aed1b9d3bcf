"""rater.sim.traffic: reproducible, valid, realistic traffic, and bad records that fail as meant."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from itertools import islice
from pathlib import Path

import orjson
import pytest

from rater.core.engine import Engine
from rater.core.rates import load_rate_tables
from rater.core.records import E164_RE, Cdr, Command, Invalid, decode
from rater.core.timeutil import parse_time
from rater.sim import traffic

RATES = Path(__file__).resolve().parents[2] / "rate_tables"
START = parse_time("2026-11-24T08:00:00Z")
NOW = parse_time("2026-11-25T00:00:00Z")


@pytest.fixture(scope="module")
def tables():
    return load_rate_tables(str(RATES))


def _stream(tables, n=20_000, seed=3, bad_share=0.0, tenants=50):
    return list(traffic.records(tenants, seed, tables, n, start=START, bad_share=bad_share))


def _rate(tables, recs):
    engine = Engine(tables)
    outcomes = Counter()
    for i, r in enumerate(recs):
        raw = r if isinstance(r, bytes) else orjson.dumps(r)
        p = engine.process(raw, None, {"file": "traffic", "line": i + 1}, NOW)
        outcomes[(p.kind, p.outcome.status, p.outcome.reason)] += 1
    return engine, outcomes


def test_same_seed_same_records(tables):
    a = _stream(tables, 3000, seed=11)
    b = _stream(tables, 3000, seed=11)
    assert a == b
    c = _stream(tables, 3000, seed=12)
    assert a != c


def test_tenant_profiles_mix_plans_thresholds_and_cards(tables):
    profiles = traffic.tenants(200, 5, tables, at=START)
    assert len({p["tenant_id"] for p in profiles}) == 200
    plans = Counter(p["rate_plan"] for p in profiles)
    assert set(plans) == {"standard-usd", "standard-eur", "premium-gbp"}
    auto = [p for p in profiles if p["auto_recharge"]]
    assert 0.35 <= len(auto) / len(profiles) <= 0.65
    expired = [p for p in auto if p["auto_recharge"]["payment_method"]["expires"] < "2026-11"]
    assert 1 <= len(expired) <= len(auto) // 4
    assert any(p["included_domestic_minutes"] > 0 for p in profiles)
    assert any(p["low_balance_threshold"] != "0.00" for p in profiles)
    for p in profiles:
        assert p["currency"] == tables.plans[p["rate_plan"]].currency


def test_setup_comes_first_then_the_stream(tables):
    recs = _stream(tables, 100, tenants=10)
    profiles = traffic.tenants(10, 3, tables, at=START)
    setup = traffic.setup_commands(profiles, START, "r3")
    assert recs[: len(setup)] == setup
    kinds = [(c["command"], "auto_recharge" in c) for c in setup if c["tenant_id"] == profiles[0]["tenant_id"]]
    assert kinds[:2] == [("configure_account", False), ("add_funds", False)]
    assert len([c for c in setup if c["command"] == "add_funds"]) == 10


def test_every_record_decodes(tables):
    recs = _stream(tables, 20_000)
    for r in recs:
        rec = decode(orjson.dumps(r))
        assert isinstance(rec, (Cdr, Command))
        if isinstance(rec, Cdr):
            assert E164_RE.fullmatch(rec.to)
            assert 0 <= rec.duration <= traffic.MAX_CALL_SECONDS


def test_good_traffic_is_all_applied(tables):
    recs = _stream(tables, 20_000)
    engine, outcomes = _rate(tables, recs)
    statuses = Counter(status for (_kind, status, _r) in outcomes.elements())
    assert set(statuses) == {"applied"}, outcomes
    # every tenant was set up and most of them called
    assert len(engine.accounts) == 50
    assert engine.tally.events["funds_added"] >= 50


def test_call_mix_and_durations(tables):
    recs = _stream(tables, 40_000)
    cdrs = [r for r in recs if "cdr_id" in r]
    mix = Counter(r["call_type"] for r in cdrs)
    for call_type, share in traffic.CALL_MIX:
        assert abs(mix[call_type] / len(cdrs) - share) < 0.02, (call_type, mix)
    dialouts = [r["duration_seconds"] for r in cdrs if r["call_type"] == "conference_dialout"]
    answered = [d for d in dialouts if d > 0]
    assert 140 <= statistics.median(answered) <= 230  # about 3 minutes
    zero = len(dialouts) - len(answered)
    assert 0.02 <= zero / len(dialouts) <= 0.06
    assert max(r["duration_seconds"] for r in cdrs) <= 4 * 3600


def test_destinations_come_from_the_tenants_plan(tables):
    recs = _stream(tables, 10_000)
    plans = {p["tenant_id"]: p["rate_plan"] for p in traffic.tenants(50, 3, tables, at=START)}
    home = {"standard-usd": "+1", "standard-eur": "+49", "premium-gbp": "+44"}
    by_plan = Counter()
    for r in recs:
        if "cdr_id" not in r:
            continue
        plan = tables.plans[plans[r["tenant_id"]]]
        rate = plan.lookup(r["call_type"], r["to"][1:], START)
        assert rate is not None, r
        if r["call_type"] == "domestic":
            assert r["to"].startswith(home[plan.plan_id])
        if r["call_type"] == "international":  # abroad (+1 242 Bahamas and +44 1624 Isle of Man are)
            home_country = {_country(rs[0].destination) for _s, rs in plan.index["domestic"].values()}
            assert _country(rate.destination) not in home_country, (r, rate)
        if r["call_type"] == "conference_dialout":
            by_plan[(plan.plan_id, r["to"].startswith(home[plan.plan_id]))] += 1
    # dial-outs mostly call the tenant's own country, but not only
    for plan_id in home:
        at_home, abroad = by_plan[(plan_id, True)], by_plan[(plan_id, False)]
        if at_home + abroad > 200:
            assert 0.3 <= at_home / (at_home + abroad) <= 0.7, (plan_id, at_home, abroad)


def test_bad_share_gives_the_expected_rejects(tables):
    n = 20_000
    recs = _stream(tables, n, bad_share=0.05)
    _engine, outcomes = _rate(tables, recs)
    rejected = Counter()
    for (_kind, status, reason), count in outcomes.items():
        if status == "rejected":
            rejected[reason] += count
    assert set(rejected) == set(traffic.BAD_KINDS)
    assert 0.04 * n <= sum(rejected.values()) <= 0.06 * n
    for reason in traffic.BAD_KINDS:
        assert rejected[reason] > 0.15 * sum(rejected.values()), rejected
    # invalid JSON comes as bytes; everything else as dicts
    assert all(isinstance(r, bytes) for r in recs if not isinstance(r, dict))
    for r in (r for r in recs if isinstance(r, bytes)):
        with pytest.raises(Invalid) as exc:
            decode(r)
        assert exc.value.reason == "invalid_json"


def test_traffic_counts_the_bad_records_it_makes(tables):
    profiles = traffic.tenants(20, 1, tables, at=START)
    t = traffic.Traffic(profiles, tables, at=START)
    recs = list(t.stream(1, traffic.synthetic_clock(START), bad_share=0.1, count=5000))
    assert sum(t.bad.values()) == sum(1 for r in recs if isinstance(r, bytes) or _is_bad(r))


def _country(destination: str) -> str:
    return destination.split(" - ")[0]


def _is_bad(r):
    return (
        r.get("to") == traffic.NO_RATE_NUMBER
        or r["tenant_id"].startswith("ghost-")
        or ("cdr_id" in r and not {"to", "started_at", "duration_seconds"} <= set(r))
    )


def test_times_follow_the_clock(tables):
    profiles = traffic.tenants(5, 1, tables, at=START)
    recs = list(traffic.cdr_stream(profiles, tables, 1, clock=traffic.synthetic_clock(START, 1_000_000), count=30))
    times = [parse_time(r.get("started_at") or r.get("occurred_at")) for r in recs if isinstance(r, dict)]
    assert times == sorted(times)
    assert times[0] == START and times[-1] == START + 29 * 1_000_000


def test_payment_result_answers_the_request():
    import random

    req = {"request_id": "acme/recharge/3", "tenant_id": "acme", "amount": "25.000000"}
    answers = [traffic.payment_result(req, random.Random(i), START) for i in range(400)]
    for a in answers:
        rec = decode(orjson.dumps(a))
        assert rec.command == "payment_result" and rec.fields["request_id"] == "acme/recharge/3"
    failed = [a for a in answers if a["status"] == "failed"]
    assert 0.05 <= len(failed) / len(answers) <= 0.16
    assert {a["reason"] for a in failed} == {"card_declined", "insufficient_funds"}


def test_generation_is_cheap(tables):
    profiles = traffic.tenants(200, 1, tables, at=START)
    stream = traffic.cdr_stream(profiles, tables, 1, start=START, bad_share=0.01)
    t0 = time.perf_counter()
    n = sum(1 for _ in islice(stream, 30_000))
    elapsed = time.perf_counter() - t0
    assert n == 30_000
    assert elapsed < 3.0, f"{n / elapsed:,.0f} records/s"
