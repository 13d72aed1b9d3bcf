"""SPEC 10, authorize with a destination: ``rater/core/authorize.py`` and ``rates.longest_affordable``.

Every expected ``max_seconds`` is worked out by hand in the comment beside it from the
plan below; the property test checks the closed form against a search over the
durations themselves.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rater.core.authorize import BadNumber, authorize, parse_to
from rater.core.ledger import Account, Lot
from rater.core.money import parse_money
from rater.core.rates import MAX_DURATION, Rate, billable_seconds, charge, load_rate_tables, longest_affordable
from rater.core.timeutil import DAY, parse_time

PLAN_CSV = """\
call_type,prefix,destination,currency,rate_per_minute,connection_fee,first_increment,next_increment,effective_from
international,44,UK,USD,0.050000,,60,60,
international,447,UK mobile,USD,0.060000,,30,6,
international,49,Germany,USD,0.010000,,1,1,
international,33,France,USD,0.120000,0.100000,60,60,
international,39,Italy,USD,0.060000,,60,60,
international,39,Italy,USD,0.120000,,60,60,2026-12-01T00:00:00Z
toll_free,1800,US toll-free,USD,0.000000,,60,60,
toll_free,1888,US toll-free,USD,0.030000,,60,60,
domestic,1,US,USD,0.006000,,6,6,
conference_dialout,1,US,USD,0.012000,,60,60,
"""
NOW = parse_time("2026-11-25T12:00:00Z")
UK, UK_MOBILE, GERMANY, FRANCE, ITALY = "+442071838750", "+447700900123", "+4930123456", "+33142000000", "+390612345678"


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rates")
    (directory / "auth-usd.csv").write_text(PLAN_CSV)
    return load_rate_tables(str(directory))


def account(balance: str, plan: str = "auth-usd", **kw) -> Account:
    micro = parse_money(balance)
    acct = Account(tenant_id="acme", rate_plan=plan, currency="USD", **kw)
    if micro > 0:
        acct.lots.append(Lot("topup", micro, NOW - DAY, NOW + 300 * DAY, "manual"))
    else:
        acct.debt = -micro
    return acct


def max_seconds(tables, balance: str, to: str, call_type: str = "international", now: int = NOW):
    return authorize(account(balance), call_type, to, tables, now)["max_seconds"]


# ---------------------------------------------------------------------------- increments


@pytest.mark.parametrize(
    "balance, expected",
    [
        ("0.120000", 120),  # 60/60 at 0.05/min: 2 min = 0.10 fits, 3 min = 0.15 does not
        ("0.100000", 120),  # exactly 2 min: the balance ends at zero, which is allowed
        ("0.099999", 60),
        ("0.050000", 60),
        ("0.049999", 0),  # not even the first minute
    ],
)
def test_max_seconds_with_60_60_increments_is_whole_minutes(tables, balance, expected):
    assert max_seconds(tables, balance, UK) == expected


@pytest.mark.parametrize(
    "balance, expected",
    [
        ("0.050000", 48),  # 30/6 at 0.001/s: 30 s = 0.030, + 3 x 6 s = 0.018 -> 48 s = 0.048; 54 s = 0.054
        ("0.054000", 54),
        ("0.030000", 30),  # the first increment exactly
        ("0.035999", 30),  # 36 s would be 0.036
        ("0.029999", 0),  # the first increment does not fit
    ],
)
def test_max_seconds_with_30_6_increments_counts_the_first_then_steps_of_6(tables, balance, expected):
    assert max_seconds(tables, balance, UK_MOBILE) == expected


@pytest.mark.parametrize(
    "balance, expected",
    [
        ("0.001000", 6),  # 1/1 at 0.01/min: 6 s = 0.001000 exactly; 7 s = 0.0011667 -> 0.001167
        ("0.001166", 6),
        ("0.001167", 7),
        ("0.000167", 1),  # 1 s = 0.0001667 rounds half up to 0.000167
        ("0.000166", 0),
    ],
)
def test_max_seconds_with_1_1_increments_follows_the_rounding_of_the_charge(tables, balance, expected):
    assert max_seconds(tables, balance, GERMANY) == expected


def test_a_charge_that_rounds_half_up_onto_the_budget_still_fits():
    # 0.000030/min per second: 1 s = 0.0000005 -> 0.000001, 2 s = 0.000001, 3 s = 0.0000015 -> 0.000002
    rate = Rate("p", "international", "1", "", "USD", 30, 0, 1, 1, 0, 2)
    assert longest_affordable(rate, 1) == 2
    assert longest_affordable(rate, 0) == 0


# ---------------------------------------------------------------------------- fee, zero, cap


@pytest.mark.parametrize(
    "balance, expected",
    [
        ("0.050000", 0),  # the 0.10 connection fee alone is more than the balance
        ("0.100000", 0),  # the fee fits, the first minute (0.12) does not
        ("0.219999", 0),
        ("0.220000", 60),  # 0.10 + 1 min x 0.12
        ("0.339999", 60),
        ("0.340000", 120),  # 0.10 + 2 x 0.12
    ],
)
def test_a_connection_fee_is_paid_before_the_first_increment(tables, balance, expected):
    assert max_seconds(tables, balance, FRANCE) == expected


def test_a_connection_fee_larger_than_the_balance_refuses_the_call(tables):
    body = authorize(account("0.050000"), "international", FRANCE, tables, NOW)
    assert body == {
        "allowed": False,
        "reason": "insufficient_funds",
        "balance": "0.050000",
        "currency": "USD",
        "rate": {
            "plan": "auth-usd",
            "prefix": "33",
            "rate_per_minute": "0.120000",
            "connection_fee": "0.100000",
            "first_increment": 60,
            "next_increment": 60,
            "currency": "USD",
        },
        "max_seconds": 0,
    }


def test_a_balance_of_exactly_zero_affords_no_charged_second(tables):
    body = authorize(account("0"), "international", UK, tables, NOW)
    assert (body["allowed"], body["reason"], body["balance"], body["max_seconds"]) == (False, "insufficient_funds", "0.000000", 0)
    # ... but a free number may be called for the longest call a CDR can carry.
    body = authorize(account("0"), "toll_free", "+18005550199", tables, NOW)
    assert (body["allowed"], body["reason"], body["max_seconds"]) == (True, "ok", 86_400)
    # Without a destination the answer is SPEC 10's bool: zero is not below zero.
    assert authorize(account("0"), "international", None, tables, NOW) == {
        "allowed": True,
        "reason": "ok",
        "balance": "0.000000",
        "currency": "USD",
    }


def test_max_seconds_stops_at_a_day(tables):
    # 1000 USD at 0.05/min is 20,000 minutes; a CDR lasts at most 86,400 s.
    assert max_seconds(tables, "1000", UK) == 86_400
    # 0.03/min, 60/60: 43.2 USD is exactly 1,440 minutes = 86,400 s
    assert max_seconds(tables, "43.2", "+18885550199", call_type="toll_free") == 86_400
    assert max_seconds(tables, "43.199999", "+18885550199", call_type="toll_free") == 86_340


# ---------------------------------------------------------------------------- balance below zero, other types


def test_below_zero_international_and_toll_free_are_refused_with_max_seconds_0(tables):
    for call_type, to in (("international", UK), ("toll_free", "+18885550199")):
        body = authorize(account("-0.040000"), call_type, to, tables, NOW)
        assert (body["allowed"], body["reason"], body["balance"], body["max_seconds"]) == (False, "below_zero", "-0.040000", 0), call_type
        assert body["rate"]["prefix"] in ("44", "1888")


def test_domestic_and_dial_out_are_never_blocked_and_have_no_max_seconds(tables):
    for balance in ("-5", "0", "10"):
        acct = account(balance, included_domestic_minutes=100)
        body = authorize(acct, "domestic", "+14155550123", tables, NOW)
        assert (body["allowed"], body["reason"], body["max_seconds"]) == (True, "ok", None), balance
        assert body["rate"] == {
            "plan": "auth-usd",
            "prefix": "1",
            "rate_per_minute": "0.006000",
            "connection_fee": "0.000000",
            "first_increment": 6,
            "next_increment": 6,
            "currency": "USD",
        }
        body = authorize(account(balance), "conference_dialout", "+14155550123", tables, NOW)
        assert (body["allowed"], body["max_seconds"], body["rate"]["rate_per_minute"]) == (True, None, "0.012000")


# ---------------------------------------------------------------------------- the processing clock


def test_the_rate_in_force_at_the_processing_clock_is_used(tables):
    # Italy: 0.06/min until 2026-12-01T00:00:00Z, 0.12/min from that instant. 0.36 USD buys
    # 6 minutes before, 3 after.
    change = parse_time("2026-12-01T00:00:00Z")
    before = authorize(account("0.36"), "international", ITALY, tables, change - 1)
    at = authorize(account("0.36"), "international", ITALY, tables, change)
    assert (before["rate"]["rate_per_minute"], before["max_seconds"]) == ("0.060000", 360)
    assert (at["rate"]["rate_per_minute"], at["max_seconds"]) == ("0.120000", 180)


def test_lots_expired_at_the_clock_do_not_count_though_not_yet_swept(tables):
    acct = account("0.10")  # 0.10 expiring in 300 days
    acct.lots.insert(0, Lot("old", 1_000_000, NOW - 400 * DAY, NOW, "manual"))  # 1.00 expiring now
    assert acct.balance == 1_100_000
    body = authorize(acct, "international", UK, tables, NOW)
    assert (body["balance"], body["max_seconds"]) == ("0.100000", 120)
    # A microsecond earlier the old lot still counts: 1.10 at 0.05/min is 22 minutes.
    assert authorize(acct, "international", UK, tables, NOW - 1)["max_seconds"] == 22 * 60
    # The account itself is not changed (the view only reads it).
    assert acct.balance == 1_100_000 and len(acct.lots) == 2


# ---------------------------------------------------------------------------- no rate, bad numbers


def test_no_rate_row_refuses_the_call(tables):
    assert authorize(account("10"), "international", "+99912345", tables, NOW) == {
        "allowed": False,
        "reason": "no_rate",
        "balance": "10.000000",
        "currency": "USD",
        "rate": None,
        "max_seconds": None,
    }
    # A domestic call abroad has no domestic row either.
    assert authorize(account("10"), "domestic", UK, tables, NOW)["reason"] == "no_rate"


def test_an_account_on_a_plan_not_loaded_is_refused(tables):
    body = authorize(account("10", plan="gone"), "international", UK, tables, NOW)
    assert (body["allowed"], body["reason"], body["rate"]) == (False, "unknown_rate_plan", None)


@pytest.mark.parametrize(
    "text, number",
    [
        ("+447700900123", "+447700900123"),  # %2B447700900123, decoded by the HTTP layer
        (" 447700900123", "+447700900123"),  # a raw '+', decoded as a space by the query rules
        ("+12", "+12"),
        ("+123456789012345", "+123456789012345"),  # 15 digits
    ],
)
def test_to_is_e164_with_the_plus_encoded_or_not(text, number):
    assert parse_to(text) == number


@pytest.mark.parametrize(
    "text",
    ["447700900123", "+0447700900123", "+4", "+1234567890123456", "", "+44 7700", "  447700900123", "+44a", "tel:+44"],
)
def test_a_bad_to_is_refused_naming_the_field(text):
    with pytest.raises(BadNumber, match=r"^to .* is not an E\.164 number"):
        parse_to(text)


# ---------------------------------------------------------------------------- the closed form


def _by_search(rate: Rate, budget: int) -> int:
    """The largest d in 0..MAX_DURATION with charge(billable(d)) <= budget, by bisection
    over d (the charge is monotone in d), independent of the closed form."""

    def cost(d: int) -> int:
        return charge(rate, billable_seconds(d, rate.first_increment, rate.next_increment))

    if budget < 0 or cost(1) > budget:
        return 0
    lo, hi = 1, MAX_DURATION  # cost(lo) <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


@settings(max_examples=400, deadline=None)
@given(
    per_minute=st.integers(0, 2_000_000),
    fee=st.sampled_from([0, 1, 10_000, 100_000, 1_000_000]) | st.integers(0, 2_000_000),
    first=st.sampled_from([1, 6, 30, 60]) | st.integers(1, 4000),
    nxt=st.sampled_from([1, 6, 60]) | st.integers(1, 4000),
    budget=st.integers(-1_000, 50_000_000),
)
def test_the_closed_form_agrees_with_a_search_over_durations(per_minute, fee, first, nxt, budget):
    rate = Rate("p", "international", "1", "", "USD", per_minute, fee, first, nxt, 0, 2)
    d = longest_affordable(rate, budget)
    assert d == _by_search(rate, budget)
    if d:
        assert charge(rate, billable_seconds(d, first, nxt)) <= budget
