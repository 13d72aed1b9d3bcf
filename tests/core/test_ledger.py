"""SPEC 5 to 8: the ledger's rules, one test per rule, expected values worked out by hand.

The test plan (tests/support/ledger.py): international 44 at 0.06/min 60/60; 447 at
0.12/min + 0.01 fee, 30/6; 49 at 0.03 1/1 (0.09 from 2026-12-01); domestic 1 at
0.006/min 6/6; toll_free 1800 at 0.036/min.
"""

import pytest

from rater.core import ledger
from rater.core.timeutil import parse_time
from tests.support.ledger import Book, cdr, configure, funds, payment, types, write_tables


@pytest.fixture
def book(tmp_path):
    return Book(write_tables(str(tmp_path / "rates")))


def lots(book, tenant="acme"):
    return [(x.lot_id, x.remaining) for x in book.account(tenant).lots]


# --- charging and lots ---------------------------------------------------------------


def test_a_rated_cdr_carries_rate_charge_and_balance(book):
    book.all(configure(), funds("10", "f1"))
    p = book.apply(cdr("c1", "+447700900123", 61, at="2026-11-02T11:00:00+01:00", site="lon"))
    # 447: 30 + ceil(31/6)*6 = 66 s; 0.01 + 0.12 * 66/60 = 0.01 + 0.132 = 0.142
    assert p.outcome.rated == {
        "event_id": ledger.event_id("acme", "cdr", "c1", "rated_cdr"),
        "cdr_id": "c1",
        "tenant_id": "acme",
        "call_type": "international",
        "to": "+447700900123",
        "from": None,
        "started_at": "2026-11-02T10:00:00Z",
        "duration_seconds": 61,
        "billable_seconds": 66,
        "covered_seconds": 0,
        "rate_plan": "test-usd",
        "rate_prefix": "447",
        "rate_per_minute": "0.120000",
        "connection_fee": "0.010000",
        "charge": "0.142000",
        "currency": "USD",
        "balance_after": "9.858000",
        "attributes": {"site": "lon"},
    }


def test_a_zero_charge_is_still_a_rated_cdr(book):
    book.all(configure(), funds("1", "f1"))
    p = book.apply(cdr("c1", "+442071234567", 0))
    assert (p.outcome.status, p.outcome.rated["charge"], p.outcome.rated["billable_seconds"]) == ("applied", "0.000000", 0)
    assert book.account().balance == 1_000_000


def test_charges_take_the_soonest_expiring_lot_first(book):
    book.all(
        configure(),
        funds("5", "new", purchased_at="2026-11-01T00:00:00Z"),
        funds("5", "old", purchased_at="2026-01-15T00:00:00Z"),
    )
    book.apply(cdr("c1", "+442071234567", 6000))  # 100 min * 0.06 = 6.00
    assert lots(book) == [("new", 4_000_000)]


def test_lots_expiring_together_are_spent_by_purchase_time_then_lot_id(book):
    book.all(
        configure(),
        funds("1", "b", at="2026-11-01T00:00:00Z"),
        funds("1", "a", at="2026-11-01T00:00:00Z"),
        funds("1", "z", at="2026-10-31T23:00:00Z", purchased_at="2026-10-31T23:00:00Z"),
    )
    assert [x[0] for x in lots(book)] == ["z", "a", "b"]
    book.apply(cdr("c1", "+442071234567", 90))  # 120 s * 0.06/min = 0.12
    assert lots(book) == [("z", 880_000), ("a", 1_000_000), ("b", 1_000_000)]


def test_balance_may_go_below_zero_and_the_shortfall_is_debt(book):
    book.all(configure(), funds("1", "f1"))
    p = book.apply(cdr("c1", "+442071234567", 2000))  # 60 + 33*60 = 2040 s = 34 min = 2.04
    acct = book.account()
    assert (acct.balance, acct.debt, acct.lots) == (-1_040_000, 1_040_000, [])
    assert types(p) == ["below_zero"]
    assert p.outcome.events[0]["blocked_call_types"] == ["international", "toll_free"]
    assert p.outcome.events[0]["balance"] == "-1.040000"


def test_debt_is_paid_before_a_new_lot_is_made(book):
    book.all(configure(), funds("1", "f1"), cdr("c1", "+442071234567", 2000))
    p = book.apply(funds("5", "f2", at="2026-11-03T00:00:00Z"))
    acct = book.account()
    assert (acct.debt, lots(book)) == (0, [("f2", 3_960_000)])
    assert types(p) == ["funds_added", "balance_restored"]
    assert [e["balance"] for e in p.outcome.events] == ["3.960000", "3.960000"]


def test_funds_that_only_pay_debt_make_no_lot(book):
    book.all(configure(), cdr("c1", "+442071234567", 120))  # 0.12 of debt
    book.apply(funds("0.1", "f1", at="2026-11-03T00:00:00Z"))
    assert (book.account().debt, lots(book)) == (20_000, [])


def test_lots_expire_twelve_months_after_purchase_clamped_to_month_end(book):
    book.apply(configure(at="2024-02-29T00:00:00Z"))
    p = book.apply(funds("1", "leap", at="2024-02-29T12:00:00Z"))
    assert p.outcome.events[0]["expires_at"] == "2025-02-28T12:00:00Z"


def test_a_lot_expiring_exactly_at_a_calls_start_is_forfeited_before_the_call(book):
    book.all(
        configure(at="2025-11-02T00:00:00Z"),
        funds("10", "f1", at="2025-11-02T10:00:00Z"),
    )
    p = book.apply(cdr("c1", "+442071234567", 60, at="2026-11-02T10:00:00Z"))
    assert types(p) == ["funds_expired", "below_zero"]
    expired = p.outcome.events[0]
    assert (expired["amount"], expired["lot_id"], expired["balance"], expired["expires_at"]) == (
        "10.000000",
        "f1",
        "0.000000",
        "2026-11-02T10:00:00Z",
    )
    assert p.outcome.rated["balance_after"] == "-0.060000"


def test_a_lot_expiring_a_microsecond_after_the_call_pays_for_it(book):
    book.all(configure(at="2025-11-02T00:00:00Z"), funds("10", "f1", at="2025-11-02T10:00:00.000001Z"))
    p = book.apply(cdr("c1", "+442071234567", 60, at="2026-11-02T10:00:00Z"))
    assert types(p) == [] and lots(book) == [("f1", 9_940_000)]


def test_several_expired_lots_are_reported_in_spending_order(book):
    book.all(
        configure(at="2025-10-01T00:00:00Z"),
        funds("2", "later", at="2025-10-20T00:00:00Z"),
        funds("1", "sooner", at="2025-10-20T00:00:00Z", purchased_at="2025-10-10T00:00:00Z"),
    )
    p = book.apply(funds("5", "f3", at="2026-11-01T00:00:00Z"))
    assert [(e["type"], e.get("lot_id"), e["balance"]) for e in p.outcome.events] == [
        ("funds_expired", "sooner", "2.000000"),
        ("funds_expired", "later", "0.000000"),
        ("funds_added", "f3", "5.000000"),
    ]


# --- domestic minutes ----------------------------------------------------------------


def test_domestic_calls_use_the_months_included_minutes_first(book):
    book.all(configure(included_domestic_minutes=2), funds("1", "f1"))
    # 100 s -> 6 + ceil(94/6)*6 = 102 billable, all covered by the 120 included seconds
    a = book.apply(cdr("d1", "+12125550100", 100, call_type="domestic", at="2026-10-30T10:00:00Z"))
    # 30 s -> 30 billable, 18 left covered, 12 charged: 0.006 * 12/60 = 0.0012
    b = book.apply(cdr("d2", "+12125550100", 30, call_type="domestic", at="2026-10-30T11:00:00Z"))
    # a new month starts with all 120 seconds again
    c = book.apply(cdr("d3", "+12125550100", 60, call_type="domestic", at="2026-11-01T00:00:00Z"))
    got = [(p.outcome.rated["billable_seconds"], p.outcome.rated["covered_seconds"], p.outcome.rated["charge"]) for p in (a, b, c)]
    assert got == [(102, 102, "0.000000"), (30, 18, "0.001200"), (60, 60, "0.000000")]
    assert book.account().domestic_seconds_used == {"2026-10": 120, "2026-11": 60}


def test_included_minutes_apply_only_to_domestic_calls(book):
    book.all(configure(included_domestic_minutes=10), funds("1", "f1"))
    p = book.apply(cdr("c1", "+12125550100", 60, call_type="international"))
    assert (p.outcome.rated["covered_seconds"], p.outcome.rated["charge"]) == (0, "0.010000")


# --- crossings and their order --------------------------------------------------------


def test_one_record_crossing_low_threshold_and_zero_emits_events_in_spec_order(book):
    book.all(
        configure(at="2025-11-01T00:00:00Z", low_balance_threshold="5"),
        funds("1", "expiring", at="2025-11-02T10:00:00Z"),
        funds("6", "current", at="2026-11-01T00:00:00Z"),
        configure(
            cid="cfg-2",
            at="2026-11-01T00:00:00Z",
            auto_recharge={
                "enabled": True,
                "threshold": "2",
                "amount": "20",
                "payment_method": {"type": "card", "expires": "2030-01", "last4": "4242"},
            },
        ),
    )
    # before: 7.00 (>= 5). The 1.00 lot expires at the call; 7200 s = 120 min * 0.06 = 7.20.
    p = book.apply(cdr("c1", "+442071234567", 7200, at="2026-11-02T10:00:00Z"))
    assert [(e["type"], e["balance"]) for e in p.outcome.events] == [
        ("funds_expired", "6.000000"),
        ("low_balance", "-1.200000"),
        ("below_zero", "-1.200000"),
        ("auto_recharge_requested", "-1.200000"),
    ]
    assert p.outcome.events[1]["threshold"] == "5.000000"
    assert p.outcome.recharge_requests == [
        {
            "event_id": ledger.event_id("acme", "cdr", "c1", "recharge_request"),
            "request_id": "acme/recharge/1",
            "tenant_id": "acme",
            "amount": "20.000000",
            "currency": "USD",
            "payment_method": {"type": "card", "expires": "2030-01", "last4": "4242"},
            # v1.1: the end of the call, 10:00:00 + 7200 s
            "requested_at": "2026-11-02T12:00:00Z",
        }
    ]


def test_low_balance_is_emitted_only_on_the_downward_crossing(book):
    book.all(configure(low_balance_threshold="1"), funds("1.1", "f1"))
    a = book.apply(cdr("c1", "+442071234567", 60))  # 1.10 -> 1.04: above
    b = book.apply(cdr("c2", "+442071234567", 60))  # 1.04 -> 0.98: crosses
    c = book.apply(cdr("c3", "+442071234567", 60))  # 0.98 -> 0.92: already below
    assert (types(a), types(b), types(c)) == ([], ["low_balance"], [])


def test_landing_exactly_on_the_threshold_is_not_a_crossing(book):
    book.all(configure(low_balance_threshold="1"), funds("1.06", "f1"))
    assert types(book.apply(cdr("c1", "+442071234567", 60))) == []  # 1.06 -> 1.00
    assert types(book.apply(cdr("c2", "+442071234567", 1))) == ["low_balance"]  # 1.00 -> 0.94


def test_a_zero_threshold_turns_low_balance_events_off(book):
    book.all(configure(), funds("0.1", "f1"))
    assert types(book.apply(cdr("c1", "+442071234567", 60))) == []  # 0.10 -> 0.04


def test_reaching_exactly_zero_is_not_below_zero(book):
    book.all(configure(), funds("0.06", "f1"))
    assert types(book.apply(cdr("c1", "+442071234567", 60))) == []
    assert book.account().balance == 0


# --- auto-recharge ---------------------------------------------------------------------

CARD = {"type": "card", "expires": "2027-03"}


def _auto(book, threshold="5", amount="20", card=CARD):
    book.all(
        configure(),
        funds("6", "f1"),
        configure(cid="cfg-ar", auto_recharge={"enabled": True, "threshold": threshold, "amount": amount, "payment_method": card}),
    )


def test_auto_recharge_is_requested_once_below_its_threshold(book):
    _auto(book)
    a = book.apply(cdr("c1", "+442071234567", 120))  # 6.00 -> 5.88: not below 5
    b = book.apply(cdr("c2", "+442071234567", 60))  # -> 5.82
    c = book.apply(cdr("c3", "+442071234567", 60 * 14))  # 0.84 -> 4.98: request
    d = book.apply(cdr("c4", "+442071234567", 60))  # pending: no second request
    assert (types(a), types(b), types(c), types(d)) == ([], [], ["auto_recharge_requested"], [])
    assert book.account().pending_request_id == "acme/recharge/1"


def test_configuring_auto_recharge_below_its_threshold_requests_at_once(book):
    book.apply(configure())
    p = book.apply(configure(cid="cfg-ar", auto_recharge={"enabled": True, "threshold": "5", "amount": "20", "payment_method": CARD}))
    assert types(p) == ["auto_recharge_requested"]


def test_a_succeeded_payment_adds_an_auto_recharge_lot(book):
    _auto(book)
    book.apply(cdr("c1", "+442071234567", 60 * 17))  # 6.00 - 1.02 = 4.98
    p = book.apply(payment("acme/recharge/1", "succeeded", "pay-1", at="2026-11-02T10:30:00Z"))
    assert types(p) == ["auto_recharge_succeeded"]
    e = p.outcome.events[0]
    assert (e["amount"], e["request_id"], e["lot_id"], e["balance"], e["expires_at"]) == (
        "20.000000",
        "acme/recharge/1",
        "acme/recharge/1",
        "24.980000",
        "2027-11-02T10:30:00Z",
    )
    acct = book.account()
    assert acct.pending_request_id is None
    assert [(x.lot_id, x.remaining, x.source) for x in acct.lots] == [
        ("f1", 4_980_000, "manual"),
        ("acme/recharge/1", 20_000_000, "auto_recharge"),
    ]


def test_a_failed_payment_emits_its_reason_and_suspends_auto_recharge(book):
    _auto(book)
    book.apply(cdr("c1", "+442071234567", 60 * 17))
    p = book.apply(payment("acme/recharge/1", "failed", "pay-1", at="2026-11-02T10:30:00Z", reason="card_declined"))
    assert [(e["type"], e["reason"], e["request_id"]) for e in p.outcome.events] == [
        ("auto_recharge_failed", "card_declined", "acme/recharge/1")
    ]
    assert book.account().recharge_suspended
    assert types(book.apply(cdr("c2", "+442071234567", 60, at="2026-11-02T11:00:00Z"))) == []


def test_a_failed_payment_without_a_reason_reports_declined(book):
    _auto(book)
    book.apply(cdr("c1", "+442071234567", 60 * 17))
    p = book.apply(payment("acme/recharge/1", "failed", "pay-1", at="2026-11-02T10:30:00Z"))
    assert [(e["type"], e["reason"]) for e in p.outcome.events] == [("auto_recharge_failed", "declined")]


def test_a_command_behind_the_horizon_of_the_latest_command_is_too_late(book):
    book.all(configure(), funds("1", "f1", at="2026-11-20T00:00:00Z"))
    # 7 days before the latest command (2026-11-20T00:00Z) is the edge: one second older is refused
    edge = book.apply(funds("1", "f2", at="2026-11-13T00:00:00Z"))
    late = book.apply(funds("1", "f3", at="2026-11-12T23:59:59Z"))
    assert edge.outcome.status == "applied"
    assert (late.outcome.reason, late.reject["detail"]) == (
        "too_late",
        "occurred_at: 2026-11-12T23:59:59Z is more than the horizon before the tenant's latest command at 2026-11-20T00:00:00Z",
    )
    assert book.account().balance == 2_000_000


def test_a_json_number_amount_is_read_by_its_value(book):
    book.apply(configure())
    raw = b'{"command_id":"f1","tenant_id":"acme","command":"add_funds","occurred_at":"2026-11-01T00:00:00Z","amount":1E2}'
    p = book.apply(raw)
    assert [(e["type"], e["amount"]) for e in p.outcome.events] == [("funds_added", "100.000000")]
    p = book.apply(raw.replace(b'"f1"', b'"f2"').replace(b"1E2", b"0.1"))
    assert [(e["type"], e["amount"], e["balance"]) for e in p.outcome.events] == [("funds_added", "0.100000", "100.100000")]


def test_a_pending_request_older_than_an_hour_times_out_at_the_next_record(book):
    _auto(book)
    # 17 min from 10:00: the request is made at the call's end, 10:17:00 (v1.1)
    book.apply(cdr("c1", "+442071234567", 60 * 17, at="2026-11-02T10:00:00Z"))
    same_hour = book.apply(cdr("c2", "+442071234567", 60, at="2026-11-02T11:17:00Z"))  # exactly 1 h: not older
    late = book.apply(cdr("c3", "+442071234567", 60, at="2026-11-02T11:17:01Z"))
    assert types(same_hour) == []
    assert [(e["type"], e.get("reason"), e["request_id"]) for e in late.outcome.events] == [
        ("auto_recharge_failed", "timeout", "acme/recharge/1")
    ]
    acct = book.account()
    assert (acct.recharge_suspended, acct.pending_request_id) == (True, None)
    assert acct.timed_out_requests == {"acme/recharge/1": [20_000_000, parse_time("2026-11-02T11:17:01Z")]}


# --- late payment answers (SPEC v1.1) -------------------------------------------------------
# The set-up of each: 6.00 funded, threshold 5, amount 20; c1 (17 min at 0.06 = 1.02) leaves
# 4.98 and requests acme/recharge/1 at the call's end, 10:17:00.


def _timed_out_by_a_cdr(book):
    _auto(book)
    book.apply(cdr("c1", "+442071234567", 60 * 17, at="2026-11-02T10:00:00Z"))
    # 11:30 is 1 h 13 min after the request: c2 times it out, then costs 0.06 -> 4.92
    return book.apply(cdr("c2", "+442071234567", 60, at="2026-11-02T11:30:00Z"))


def test_a_late_success_after_a_timeout_by_another_record_is_credited_and_lifts_the_suspension(book):
    t = _timed_out_by_a_cdr(book)
    assert [(e["type"], e.get("reason")) for e in t.outcome.events] == [("auto_recharge_failed", "timeout")]
    p = book.apply(payment("acme/recharge/1", "succeeded", "pay-1", at="2026-11-02T11:40:00Z"))
    assert p.outcome.status == "applied"
    assert [(e["type"], e["balance"], e.get("amount"), e.get("lot_id"), e.get("expires_at")) for e in p.outcome.events] == [
        ("auto_recharge_succeeded", "24.920000", "20.000000", "acme/recharge/1", "2027-11-02T11:40:00Z"),
    ]
    acct = book.account()
    assert [(x.lot_id, x.remaining, x.source) for x in acct.lots] == [
        ("f1", 4_920_000, "manual"),
        ("acme/recharge/1", 20_000_000, "auto_recharge"),
    ]
    assert (acct.balance, acct.recharge_suspended, acct.pending_request_id, acct.timed_out_requests) == (
        24_920_000,
        False,
        None,
        {},
    )
    # The suspension is lifted: the next fall below 5 requests again (353 min * 0.06 = 21.18 -> 3.74).
    again = book.apply(cdr("c3", "+442071234567", 60 * 353, at="2026-11-02T12:00:00Z"))
    assert types(again) == ["auto_recharge_requested"]
    assert again.outcome.recharge_requests[0]["request_id"] == "acme/recharge/2"


def test_a_late_success_after_a_timeout_by_the_sweep_is_credited_in_spec_order(book):
    _auto(book, threshold="5")
    book.apply(configure(cid="cfg-low", low_balance_threshold="3"))
    book.apply(cdr("c1", "+442071234567", 60 * 17, at="2026-11-02T10:00:00Z"))  # 4.98, request 1 at 10:17
    swept = ledger.sweep(book.account(), parse_time("2026-11-02T11:17:01Z"))
    assert [(e["type"], e["cause"]["kind"]) for e in swept.events] == [("auto_recharge_failed", "sweep")]
    # 4.98 - 50 min * 0.06 = 1.98: crosses the low threshold 3; suspended, so no request
    low = book.apply(cdr("c2", "+442071234567", 60 * 50, at="2026-11-02T11:20:00Z"))
    assert types(low) == ["low_balance"]
    # The funds lot f1 (bought 2026-11-01) and the answer two days later: 1.98 + 20 = 21.98
    p = book.apply(payment("acme/recharge/1", "succeeded", "pay-1", at="2026-11-04T09:00:00Z"))
    assert [(e["type"], e["balance"]) for e in p.outcome.events] == [("auto_recharge_succeeded", "21.980000")]
    acct = book.account()
    assert (acct.balance, acct.recharge_suspended) == (21_980_000, False)
    assert acct.lots[-1].lot_id == "acme/recharge/1" and acct.lots[-1].purchased_at == parse_time("2026-11-04T09:00:00Z")


def test_a_late_success_that_restores_the_balance_reports_the_crossing_after_its_own_event(book):
    _auto(book, threshold="5")
    book.apply(cdr("c1", "+442071234567", 60 * 17, at="2026-11-02T10:00:00Z"))  # 4.98, request at 10:17
    # 11:20 times request 1 out; 100 min * 0.06 = 6.00 -> -1.02: below zero, no new request (suspended)
    below = book.apply(cdr("c2", "+442071234567", 60 * 100, at="2026-11-02T11:20:00Z"))
    assert types(below) == ["auto_recharge_failed", "below_zero"]
    p = book.apply(payment("acme/recharge/1", "succeeded", "pay-1", at="2026-11-02T13:00:00Z"))
    # 20 pays the 1.02 debt; the lot keeps 18.98
    assert [(e["type"], e["balance"]) for e in p.outcome.events] == [
        ("auto_recharge_succeeded", "18.980000"),
        ("balance_restored", "18.980000"),
    ]
    assert [(x.lot_id, x.remaining) for x in book.account().lots] == [("acme/recharge/1", 18_980_000)]


def test_a_late_success_after_a_later_failure_is_credited_and_the_suspension_stays(book):
    _timed_out_by_a_cdr(book)  # request 1 timed out, 4.92
    # auto_recharge sent again lifts the suspension; 4.92 < 5 requests 2 at once
    r = book.apply(
        configure(
            cid="cfg-2",
            at="2026-11-02T11:35:00Z",
            auto_recharge={"enabled": True, "threshold": "5", "amount": "20", "payment_method": CARD},
        )
    )
    assert r.outcome.recharge_requests[0]["request_id"] == "acme/recharge/2"
    book.apply(payment("acme/recharge/2", "failed", "pay-2", at="2026-11-02T11:36:00Z", reason="card_declined"))
    p = book.apply(payment("acme/recharge/1", "succeeded", "pay-1", at="2026-11-02T11:40:00Z"))
    assert [(e["type"], e["balance"], e["request_id"]) for e in p.outcome.events] == [
        ("auto_recharge_succeeded", "24.920000", "acme/recharge/1"),
    ]
    assert (book.account().balance, book.account().recharge_suspended) == (24_920_000, True)


def test_a_late_failure_is_applied_and_writes_nothing(book):
    _timed_out_by_a_cdr(book)
    p = book.apply(payment("acme/recharge/1", "failed", "pay-1", at="2026-11-02T11:40:00Z", reason="card_declined"))
    assert (p.outcome.status, p.outcome.events, p.outcome.recharge_requests, p.reject) == ("applied", [], [], None)
    acct = book.account()
    assert (acct.balance, acct.recharge_suspended, acct.timed_out_requests) == (4_920_000, True, {})
    assert "pay-1" in acct.seen_commands


def test_a_second_late_success_for_one_request_is_unknown_request(book):
    _timed_out_by_a_cdr(book)
    book.apply(payment("acme/recharge/1", "succeeded", "pay-1", at="2026-11-02T11:40:00Z"))
    p = book.apply(payment("acme/recharge/1", "succeeded", "pay-1b", at="2026-11-02T11:41:00Z"))
    assert (p.outcome.status, p.outcome.reason, p.reject["detail"]) == (
        "rejected",
        "unknown_request",
        "request_id: 'acme/recharge/1' is neither the pending recharge request nor one that timed out",
    )
    assert book.account().balance == 24_920_000
    # the same command again is a duplicate, not a second credit
    assert book.apply(payment("acme/recharge/1", "succeeded", "pay-1", at="2026-11-02T11:40:00Z")).outcome.status == "duplicate"


def test_a_timed_out_request_is_forgotten_after_the_horizon(book):
    _timed_out_by_a_cdr(book)  # timed out at 11:30 on 2026-11-02
    # 7 days and 1 h of event time later the tenant's clock has moved past the horizon
    book.apply(cdr("c9", "+442071234567", 60, at="2026-11-09T12:30:01Z"))
    assert book.account().timed_out_requests == {}
    p = book.apply(payment("acme/recharge/1", "succeeded", "pay-1", at="2026-11-09T12:31:00Z"))
    assert p.outcome.reason == "unknown_request"


def test_a_two_hour_call_requests_at_its_end_and_an_answer_20_minutes_later_is_on_time(book):
    _auto(book)
    # 2 h at 0.06 = 7.20: 6.00 -> -1.20; the request is made at 12:00, the call's end
    p = book.apply(cdr("c1", "+442071234567", 7200, at="2026-11-02T10:00:00Z"))
    assert p.outcome.recharge_requests[0]["requested_at"] == "2026-11-02T12:00:00Z"
    assert book.account().pending_requested_at == parse_time("2026-11-02T12:00:00Z")
    ok = book.apply(payment("acme/recharge/1", "succeeded", "pay-1", at="2026-11-02T12:20:00Z"))
    assert [(e["type"], e["balance"]) for e in ok.outcome.events] == [
        ("auto_recharge_succeeded", "18.800000"),
        ("balance_restored", "18.800000"),
    ]


def test_a_requests_own_answer_more_than_an_hour_late_is_applied_as_on_time(book):
    _auto(book)
    book.apply(cdr("c1", "+442071234567", 60 * 17, at="2026-11-02T10:00:00Z"))  # 4.98, request at 10:17
    p = book.apply(payment("acme/recharge/1", "succeeded", "pay-1", at="2026-11-02T11:17:01Z"))
    assert p.outcome.status == "applied"
    assert [(e["type"], e["balance"], e["cause"]) for e in p.outcome.events] == [
        ("auto_recharge_succeeded", "24.980000", {"kind": "command", "id": "pay-1"})
    ]
    acct = book.account()
    assert (acct.pending_request_id, acct.recharge_suspended, acct.timed_out_requests) == (None, False, {})


def test_an_expired_card_fails_the_recharge_and_suspends(book):
    _auto(book, card={"type": "card", "expires": "2026-10"})
    p = book.apply(cdr("c1", "+442071234567", 60 * 17, at="2026-11-02T10:00:00Z"))
    assert [(e["type"], e.get("reason")) for e in p.outcome.events] == [("auto_recharge_failed", "card_expired")]
    assert p.outcome.recharge_requests == []
    assert book.account().recharge_suspended


def test_a_card_is_good_through_its_expiry_month(book):
    _auto(book, card={"type": "card", "expires": "2026-11"})
    p = book.apply(cdr("c1", "+442071234567", 60 * 17, at="2026-11-02T23:59:59Z"))
    assert types(p) == ["auto_recharge_requested"]


def test_sending_auto_recharge_lifts_a_suspension_and_requests_at_once(book):
    _auto(book, card={"type": "card", "expires": "2026-10"})
    book.apply(cdr("c1", "+442071234567", 60 * 17, at="2026-11-02T10:00:00Z"))  # card_expired
    p = book.apply(
        configure(
            cid="cfg-2",
            at="2026-11-02T12:00:00Z",
            auto_recharge={"enabled": True, "threshold": "5", "amount": "20", "payment_method": CARD},
        )
    )
    assert types(p) == ["auto_recharge_requested"]
    assert p.outcome.recharge_requests[0]["request_id"] == "acme/recharge/1"
    assert not book.account().recharge_suspended


def test_request_ids_count_from_one_per_tenant(book):
    _auto(book)
    book.apply(cdr("c1", "+442071234567", 60 * 17))
    book.apply(payment("acme/recharge/1", "succeeded", "pay-1", at="2026-11-02T10:30:00Z"))  # 24.98
    p = book.apply(cdr("c2", "+442071234567", 60 * 400, at="2026-11-02T11:00:00Z"))  # -24.00 -> 0.98
    assert p.outcome.recharge_requests[0]["request_id"] == "acme/recharge/2"


# --- duplicates, horizon, clock ----------------------------------------------------------


def test_a_cdr_applied_twice_is_charged_once(book):
    book.all(configure(), funds("1", "f1"))
    first = book.apply(cdr("c1", "+442071234567", 60))
    again = book.apply(cdr("c1", "+442071234567", 60))
    assert (first.outcome.status, again.outcome.status) == ("applied", "duplicate")
    assert (again.outcome.rated, again.outcome.events, again.reject) == (None, [], None)
    assert book.account().balance == 940_000


def test_a_command_applied_twice_credits_once(book):
    book.all(configure(), funds("1", "f1"))
    assert book.apply(funds("1", "f1")).outcome.status == "duplicate"
    assert book.account().balance == 1_000_000


def test_a_cdr_older_than_the_horizon_is_too_late(book):
    book.all(configure(), funds("1", "f1"), cdr("c1", "+442071234567", 60, at="2026-11-20T10:00:00Z"))
    edge = book.apply(cdr("c2", "+442071234567", 60, at="2026-11-13T10:00:00Z"))  # exactly 7 days
    late = book.apply(cdr("c3", "+442071234567", 60, at="2026-11-13T09:59:59Z"))
    assert edge.outcome.status == "applied"
    assert (late.outcome.status, late.outcome.reason) == ("rejected", "too_late")
    assert late.reject["detail"].startswith("started_at: 2026-11-13T09:59:59Z is more than the horizon")


def test_a_record_more_than_a_day_after_the_processing_clock_is_invalid_timestamp(book):
    book.all(configure(), funds("1", "f1"))
    ok = book.apply(cdr("c1", "+442071234567", 60, at="2026-11-26T12:00:00Z"))  # NOW + 24 h
    bad = book.apply(cdr("c2", "+442071234567", 60, at="2026-11-26T12:00:01Z"))
    assert ok.outcome.status == "applied"
    assert (bad.outcome.reason, bad.reject["detail"]) == (
        "invalid_timestamp",
        "started_at: 2026-11-26T12:00:01Z is more than 24 hours after the processing clock 2026-11-25T12:00:00Z",
    )


def test_ids_older_than_the_horizon_are_forgotten(book):
    book.all(configure(), funds("1", "f1"), cdr("c1", "+442071234567", 60, at="2026-11-01T10:00:00Z"))
    book.apply(cdr("c2", "+442071234567", 60, at="2026-11-20T10:00:00Z"))
    assert set(book.account().seen_cdrs) == {"c2"}


# --- every reject reason the ledger decides --------------------------------------------


def test_records_of_a_tenant_without_account_are_unknown_tenant(book):
    assert book.apply(cdr("c1", "+442071234567", 60)).outcome.reason == "unknown_tenant"
    assert book.apply(funds("1", "f1")).outcome.reason == "unknown_tenant"
    assert book.apply(payment("x", "failed", "p1", at="2026-11-02T00:00:00Z")).outcome.reason == "unknown_tenant"


def test_configuring_an_unloaded_plan_is_unknown_rate_plan(book):
    p = book.apply(configure(rate_plan="gold"))
    assert (p.outcome.reason, p.reject["detail"]) == ("unknown_rate_plan", "rate_plan: no plan 'gold' is loaded")
    assert book.engine.accounts == {}


def test_account_creation_needs_a_rate_plan(book):
    p = book.apply({"command_id": "c", "tenant_id": "acme", "command": "configure_account", "occurred_at": "2026-11-01T00:00:00Z"})
    assert (p.outcome.reason, p.reject["detail"]) == ("invalid_record", "rate_plan: required when the account is created")


def test_the_account_currency_never_changes(book):
    book.apply(configure())
    p = book.apply(configure(cid="cfg-2", rate_plan="test-eur"))
    assert (p.outcome.reason, p.reject["detail"]) == (
        "currency_mismatch",
        "rate_plan: plan 'test-eur' is in EUR, the account in USD",
    )
    assert book.apply(funds("1", "f1", currency="EUR")).outcome.reason == "currency_mismatch"
    assert book.account().rate_plan == "test-usd" and book.account().balance == 0


def test_a_destination_without_a_rate_is_no_rate(book):
    book.apply(configure())
    p = book.apply(cdr("c1", "+33123456789", 60))
    assert (p.outcome.reason, p.reject["detail"]) == (
        "no_rate",
        "to: no international rate in plan 'test-usd' for +33123456789 at 2026-11-02T10:00:00Z",
    )


def test_a_payment_result_for_another_id_is_unknown_request(book):
    _auto(book)
    book.apply(cdr("c1", "+442071234567", 60 * 17))
    p = book.apply(payment("acme/recharge/9", "succeeded", "pay-1", at="2026-11-02T10:30:00Z"))
    assert (p.outcome.reason, p.reject["detail"]) == (
        "unknown_request",
        "request_id: 'acme/recharge/9' is neither the pending recharge request nor one that timed out",
    )


def test_a_rejected_record_changes_nothing(book):
    book.all(configure(low_balance_threshold="1"), funds("1", "f1"))
    before = ledger.Account(**{f: getattr(book.account(), f) for f in ledger.Account.__slots__})
    snapshot = repr(before)
    book.apply(cdr("c1", "+33123456789", 60))
    book.apply(cdr("c2", "+442071234567", 60, at="2027-01-01T00:00:00Z"))
    assert repr(book.account()) == snapshot


# --- sweep and event ids ------------------------------------------------------------------


def test_the_wall_clock_sweep_expires_lots_without_traffic(book):
    book.all(configure(at="2025-11-02T00:00:00Z", low_balance_threshold="1"), funds("3", "f1", at="2025-11-02T10:00:00Z"))
    acct = book.account()
    assert ledger.sweep(acct, parse_time("2026-11-02T09:59:59Z")) is None
    out = ledger.sweep(acct, parse_time("2026-11-02T10:00:00Z"))
    assert [(e["type"], e["cause"], e["balance"]) for e in out.events] == [
        ("funds_expired", {"kind": "sweep", "id": "f1"}, "0.000000"),
        ("low_balance", {"kind": "sweep", "id": "f1"}, "0.000000"),
    ]
    assert ledger.sweep(acct, parse_time("2026-11-03T00:00:00Z")) is None


def test_the_sweep_times_out_a_pending_recharge(book):
    _auto(book)
    book.apply(cdr("c1", "+442071234567", 60 * 17, at="2026-11-02T10:00:00Z"))
    # requested at the call's end, 10:17:00; exactly an hour later is not yet a timeout
    assert ledger.sweep(book.account(), parse_time("2026-11-02T11:17:00Z")) is None
    out = ledger.sweep(book.account(), parse_time("2026-11-02T11:17:01Z"))
    assert [(e["type"], e["reason"], e["cause"]["kind"]) for e in out.events] == [("auto_recharge_failed", "timeout", "sweep")]


def test_event_ids_are_a_pure_function_of_tenant_cause_and_type(tmp_path):
    tables = write_tables(str(tmp_path / "r"))
    runs = []
    for _ in range(2):
        b = Book(tables)
        b.all(configure(low_balance_threshold="1"), funds("1", "f1"))
        runs.append(b.apply(cdr("c1", "+442071234567", 60)))
    assert runs[0].outcome.rated["event_id"] == runs[1].outcome.rated["event_id"]
    assert runs[0].outcome.events[0]["event_id"] == ledger.event_id("acme", "cdr", "c1", "low_balance")
    assert ledger.event_id("acme", "cdr", "c1", "low_balance") != ledger.event_id("acme", "cdr", "c1", "below_zero")
    assert ledger.event_id("acme", "cdr", "c1", "x") != ledger.event_id("acme2", "cdr", "c1", "x")
