"""What a notification says: a balance event in, an email's subject and text out (SPEC 11).

Pure: no SMTP, no Kafka, no clock. The consumer decodes an event with
:func:`parse_event`, asks :func:`selected` whether its type is wanted, and renders it with
:func:`render_email`; the webhook channel sends the event's own JSON and needs nothing here.

Amounts are read from the wire (6-decimal strings) into integer micro-units and written
back for people with :func:`readable_money`: at least two decimals, more only when the
amount has them (``25.000000`` -> ``25.00``, ``0.031500`` -> ``0.0315``). No float is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rater.core.money import MICRO, MoneyError, parse_money

# The types an administrator expects to hear about (SPEC 11); ``--types`` changes the set.
DEFAULT_TYPES = ("auto_recharge_succeeded", "auto_recharge_failed", "below_zero", "low_balance")
ALL_TYPES = (
    "funds_added",
    "funds_expired",
    "low_balance",
    "below_zero",
    "balance_restored",
    "auto_recharge_requested",
    "auto_recharge_succeeded",
    "auto_recharge_failed",
)

_CALL_TYPE_WORDS = {
    "international": "international",
    "toll_free": "toll-free",
    "conference_dialout": "conference dial-out",
    "domestic": "domestic",
}

_REASON_WORDS = {
    "card_expired": "the card on file has expired",
    "declined": "the payment was declined",
    "timeout": "the payment service did not answer within an hour",
}


class EventError(ValueError):
    """An event this consumer cannot notify about; the message names the field."""


@dataclass(frozen=True)
class Event:
    """The fields of a balance event that notifications use; ``raw`` is the decoded JSON."""

    event_id: str
    type: str
    tenant_id: str
    occurred_at: str
    balance: int
    currency: str
    raw: dict[str, Any]

    def money(self, field: str) -> int | None:
        value = self.raw.get(field)
        if value is None:
            return None
        try:
            return parse_money(value)
        except MoneyError as exc:
            raise EventError(f"{field} {exc}") from None


@dataclass(frozen=True)
class Email:
    subject: str
    text: str


def parse_event(value: Any) -> Event:
    """Check the fields every notification needs; anything else is kept in ``raw``."""
    if not isinstance(value, dict):
        raise EventError("the event is not a JSON object")
    for field in ("event_id", "type", "tenant_id", "occurred_at", "currency"):
        v = value.get(field)
        if not isinstance(v, str) or not v:
            raise EventError(f"{field} is missing or not a non-empty string")
    if value["type"] not in ALL_TYPES:
        raise EventError(f"type {value['type'][:40]!r} is not a balance event type")
    if "balance" not in value:
        raise EventError("balance is missing")
    try:
        balance = parse_money(value["balance"])
    except MoneyError as exc:
        raise EventError(f"balance {exc}") from None
    return Event(value["event_id"], value["type"], value["tenant_id"], value["occurred_at"], balance, value["currency"], value)


def selected(event: Event, types: frozenset[str]) -> bool:
    return event.type in types


def readable_money(micro: int) -> str:
    """``25000000`` -> ``"25.00"``, ``-92000`` -> ``"-0.092"``, ``31500`` -> ``"0.0315"``."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    digits = str(frac).rjust(6, "0").rstrip("0").ljust(2, "0")
    return f"{sign}{whole:,}.{digits}"


def reason_words(reason: str | None) -> str:
    """A failure reason as a sentence part; an unknown reason (the payment service's own) verbatim."""
    if not reason:
        return _REASON_WORDS["declined"]
    return _REASON_WORDS.get(reason, f"the payment service answered: {reason}")


def call_types_words(types: Any) -> str:
    """``["international", "toll_free"]`` -> ``"international and toll-free"``."""
    words = [_CALL_TYPE_WORDS.get(t, str(t)) for t in (types if isinstance(types, list) else [])]
    if not words:
        return "no"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def render_email(event: Event) -> Email:
    """The subject and plain text of the email about ``event``."""
    cur = event.currency
    bal = f"{readable_money(event.balance)} {cur}"
    t = event.tenant_id
    amount = event.money("amount")
    amt = f"{readable_money(amount)} {cur}" if amount is not None else "an amount"
    request = event.raw.get("request_id")
    lines: list[str]
    if event.type == "auto_recharge_succeeded":
        subject = f"{t}: auto-recharge added {amt}"
        lines = [f"Auto-recharge added {amt} to the prepaid credit of {t}.", f"Balance now: {bal}."]
    elif event.type == "auto_recharge_failed":
        reason = event.raw.get("reason")
        why = reason_words(reason if isinstance(reason, str) else None)
        subject = f"{t}: auto-recharge failed ({why})"
        lines = [
            f"Auto-recharge of the prepaid credit of {t} failed: {why}.",
            f"Reason code: {reason or 'declined'}.",
            f"Balance now: {bal}.",
            "Auto-recharge is suspended until its settings are saved again (for an expired card: with a new card).",
        ]
    elif event.type == "below_zero":
        blocked = call_types_words(event.raw.get("blocked_call_types"))
        subject = f"{t}: balance below zero ({bal}), {blocked} calls blocked"
        lines = [
            f"The prepaid credit of {t} is below zero: {bal}.",
            f"Blocked call types: {blocked} calls are refused until funds are added.",
            "Other calls go on and are charged; the debt is paid first from the next funds.",
        ]
    elif event.type == "low_balance":
        threshold = event.money("threshold")
        thr = f"{readable_money(threshold)} {cur}" if threshold is not None else "the threshold"
        subject = f"{t}: balance low ({bal}, threshold {thr})"
        lines = [f"The prepaid credit of {t} fell below {thr}: {bal}.", "Add funds to keep every call type available."]
    elif event.type == "funds_added":
        subject = f"{t}: {amt} added"
        lines = [f"{amt} were added to the prepaid credit of {t}.", f"Balance now: {bal}."]
    elif event.type == "funds_expired":
        subject = f"{t}: {amt} expired"
        lines = [f"{amt} of the prepaid credit of {t} expired unused (lot {event.raw.get('lot_id')}).", f"Balance now: {bal}."]
    elif event.type == "balance_restored":
        subject = f"{t}: balance restored ({bal})"
        lines = [f"The prepaid credit of {t} is at or above zero again: {bal}.", "All call types are allowed again."]
    else:  # auto_recharge_requested
        subject = f"{t}: auto-recharge of {amt} requested"
        lines = [f"The balance of {t} is {bal}, below the auto-recharge threshold; {amt} were requested from the payment service."]
    if isinstance(request, str):
        lines.append(f"Recharge request: {request}.")
    lines += ["", f"Tenant: {t}", f"Event: {event.type} at {event.occurred_at}", f"Event id: {event.event_id}"]
    return Email(subject=f"[rater] {subject}", text="\n".join(lines) + "\n")
