"""The text of a notification (rater/notify/messages.py): exact subjects and bodies,
written out by hand from the events of the worked example (examples/worked-example.expected)."""

from __future__ import annotations

import pytest

from rater.notify.messages import (
    DEFAULT_TYPES,
    EventError,
    call_types_words,
    parse_event,
    readable_money,
    render_email,
    selected,
)

BELOW_ZERO = {
    "event_id": "26e7e815a6c44fd331f9c87acf0c7a1c",
    "type": "below_zero",
    "tenant_id": "acme",
    "occurred_at": "2026-11-24T10:00:00Z",
    "cause": {"kind": "cdr", "id": "acme-0005"},
    "balance": "-12.084000",
    "currency": "USD",
    "blocked_call_types": ["international", "toll_free"],
}
LOW = {
    "event_id": "c165c2cff650d00f07d0b35c58e45853",
    "type": "low_balance",
    "tenant_id": "acme",
    "occurred_at": "2026-11-24T10:00:00Z",
    "cause": {"kind": "cdr", "id": "acme-0005"},
    "balance": "-12.084000",
    "currency": "USD",
    "threshold": "5.000000",
}
SUCCEEDED = {
    "event_id": "f98a1893868fb80c69af49223b13e794",
    "type": "auto_recharge_succeeded",
    "tenant_id": "acme",
    "occurred_at": "2026-11-24T10:20:00Z",
    "cause": {"kind": "command", "id": "pay-5521"},
    "balance": "12.916000",
    "currency": "USD",
    "amount": "25.000000",
    "request_id": "acme/recharge/1",
    "lot_id": "acme/recharge/1",
    "expires_at": "2027-11-24T10:20:00Z",
}


def failed(reason: str | None) -> dict:
    e = {
        "event_id": "e1",
        "type": "auto_recharge_failed",
        "tenant_id": "globex",
        "occurred_at": "2026-11-24T11:00:00Z",
        "cause": {"kind": "cdr", "id": "g-9"},
        "balance": "1.500000",
        "currency": "EUR",
        "request_id": "globex/recharge/2",
    }
    if reason is not None:
        e["reason"] = reason
    return e


def test_readable_money_keeps_two_decimals_and_every_significant_digit():
    assert readable_money(25_000_000) == "25.00"
    assert readable_money(12_916_000) == "12.916"
    assert readable_money(-92_000) == "-0.092"
    assert readable_money(31_500) == "0.0315"
    assert readable_money(1) == "0.000001"
    assert readable_money(0) == "0.00"
    assert readable_money(1_234_567_500_000) == "1,234,567.50"


def test_call_types_are_named_in_words():
    assert call_types_words(["international", "toll_free"]) == "international and toll-free"
    assert call_types_words(["international"]) == "international"
    assert call_types_words(["international", "toll_free", "conference_dialout"]) == ("international, toll-free and conference dial-out")


def test_below_zero_names_tenant_balance_currency_and_blocked_call_types():
    email = render_email(parse_event(BELOW_ZERO))
    assert email.subject == "[rater] acme: balance below zero (-12.084 USD), international and toll-free calls blocked"
    assert email.text == (
        "The prepaid credit of acme is below zero: -12.084 USD.\n"
        "Blocked call types: international and toll-free calls are refused until funds are added.\n"
        "Other calls go on and are charged; the debt is paid first from the next funds.\n"
        "\n"
        "Tenant: acme\n"
        "Event: below_zero at 2026-11-24T10:00:00Z\n"
        "Event id: 26e7e815a6c44fd331f9c87acf0c7a1c\n"
    )


def test_low_balance_names_the_threshold():
    email = render_email(parse_event(LOW))
    assert email.subject == "[rater] acme: balance low (-12.084 USD, threshold 5.00 USD)"
    assert email.text.splitlines()[:2] == [
        "The prepaid credit of acme fell below 5.00 USD: -12.084 USD.",
        "Add funds to keep every call type available.",
    ]


def test_auto_recharge_succeeded_names_amount_and_new_balance():
    email = render_email(parse_event(SUCCEEDED))
    assert email.subject == "[rater] acme: auto-recharge added 25.00 USD"
    assert email.text == (
        "Auto-recharge added 25.00 USD to the prepaid credit of acme.\n"
        "Balance now: 12.916 USD.\n"
        "Recharge request: acme/recharge/1.\n"
        "\n"
        "Tenant: acme\n"
        "Event: auto_recharge_succeeded at 2026-11-24T10:20:00Z\n"
        "Event id: f98a1893868fb80c69af49223b13e794\n"
    )


@pytest.mark.parametrize(
    "reason, words",
    [
        ("card_expired", "the card on file has expired"),
        ("declined", "the payment was declined"),
        ("timeout", "the payment service did not answer within an hour"),
        ("insufficient_funds", "the payment service answered: insufficient_funds"),
    ],
)
def test_auto_recharge_failed_says_why(reason, words):
    email = render_email(parse_event(failed(reason)))
    assert email.subject == f"[rater] globex: auto-recharge failed ({words})"
    assert email.text.splitlines()[:4] == [
        f"Auto-recharge of the prepaid credit of globex failed: {words}.",
        f"Reason code: {reason}.",
        "Balance now: 1.50 EUR.",
        "Auto-recharge is suspended until its settings are saved again (for an expired card: with a new card).",
    ]


def test_auto_recharge_failed_without_reason_is_a_decline():
    email = render_email(parse_event(failed(None)))
    assert email.subject == "[rater] globex: auto-recharge failed (the payment was declined)"
    assert "Reason code: declined." in email.text


def test_the_default_types_are_the_four_an_administrator_expects():
    assert set(DEFAULT_TYPES) == {"auto_recharge_succeeded", "auto_recharge_failed", "below_zero", "low_balance"}
    types = frozenset(DEFAULT_TYPES)
    assert selected(parse_event(BELOW_ZERO), types)
    restored = dict(BELOW_ZERO, type="balance_restored")
    del restored["blocked_call_types"]
    assert not selected(parse_event(restored), types)
    assert selected(parse_event(restored), frozenset({"balance_restored"}))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"event_id": None}, "event_id is missing or not a non-empty string"),
        ({"tenant_id": ""}, "tenant_id is missing or not a non-empty string"),
        ({"type": "party"}, "type 'party' is not a balance event type"),
        ({"balance": "1.2345678"}, "balance has more than 6 fractional digits: '1.2345678'"),
    ],
)
def test_an_event_without_what_a_notification_needs_is_refused_naming_the_field(change, message):
    with pytest.raises(EventError) as exc:
        parse_event({**BELOW_ZERO, **change})
    assert str(exc.value) == message


def test_a_non_object_is_refused():
    with pytest.raises(EventError, match="not a JSON object"):
        parse_event([1, 2])
