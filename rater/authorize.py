"""Pre-call authorization (SPEC 10): may a tenant place this call now, and for how long.

Pure, like the ledger: an account, the rate tables and the processing clock in, the body
of the answer out. No I/O; the worker's view (``rater/web.py``) reads the account from
the store and the clock from the wall, and serves what this returns.

Rules, and the decisions SPEC 10 leaves open (``docs/decisions.md``, "Authorize"):

1. The balance is the balance *at the processing clock*: lots whose ``expires_at`` is at
   or before it are left out even when the wall-clock sweep has not forfeited them yet,
   because a call placed now would find them gone (SPEC 6, expiry before a record).
2. Without ``to``: ``international`` and ``toll_free`` are refused while that balance is
   below zero (``below_zero``); other types are always allowed.
3. With ``to``: the call is rated as SPEC 4 would rate a CDR starting at the clock (the
   plan's longest prefix among the rows in force then). No row: refused, ``no_rate``
   (the CDR would be rejected, so the platform must not connect it). For
   ``international`` and ``toll_free``, ``max_seconds`` is the longest duration whose
   charge keeps the balance at or above zero (``rates.longest_affordable``); below zero
   it is 0 and the call is refused ``below_zero``; at or above zero with a
   ``max_seconds`` of 0 (the fee or the first increment costs more than the balance,
   a zero balance) it is refused ``insufficient_funds``. Other types are never
   blocked: ``max_seconds`` is null and the call is allowed, whatever the balance and
   the included domestic minutes left.
"""

from __future__ import annotations

from typing import Any

from .ledger import BLOCKED_BELOW_ZERO, Account
from .money import format_money
from .rates import Rate, RateTables, longest_affordable
from .records import E164_RE

CALL_TYPES = ("conference_dialout", "international", "toll_free", "domestic")


class BadNumber(ValueError):
    """A ``to`` that is not an E.164 number; the message says why."""


def parse_to(text: str) -> str:
    """``to`` from a query string, as E.164 (``+`` then 2 to 15 digits, the first not 0).

    ``%2B447700900123`` arrives here decoded as ``+447700900123``. A ``+`` sent raw is
    decoded by the form rules of query strings as a space: a single leading space
    before the digits is taken as that ``+``, since nothing else can have produced it."""
    number = "+" + text[1:] if text[:1] == " " else text
    if not E164_RE.fullmatch(number):
        shown = text[:40]
        raise BadNumber(f"to {shown!r} is not an E.164 number: '+' (sent as %2B) then 2 to 15 digits, the first not 0")
    return number


def balance_at(acct: Account, now: int) -> int:
    """The balance once the lots expired at ``now`` are forfeited (rule 1)."""
    return acct.balance - sum(lot.remaining for lot in acct.lots if lot.expires_at <= now)


def rate_view(rate: Rate) -> dict[str, Any]:
    return {
        "plan": rate.plan,
        "prefix": rate.prefix,
        "rate_per_minute": rate.rate_text,
        "connection_fee": rate.fee_text,
        "first_increment": rate.first_increment,
        "next_increment": rate.next_increment,
        "currency": rate.currency,
    }


def authorize(acct: Account, call_type: str, to: str | None, tables: RateTables, now: int) -> dict[str, Any]:
    """The answer for a call of ``call_type`` (to ``to``, E.164, when given) at ``now``
    (UTC microseconds). ``call_type`` is one of ``CALL_TYPES``; ``to`` already checked."""
    balance = balance_at(acct, now)
    blocked = call_type in BLOCKED_BELOW_ZERO
    body: dict[str, Any] = {"allowed": True, "reason": "ok", "balance": format_money(balance), "currency": acct.currency}
    if to is None:
        if blocked and balance < 0:
            body["allowed"], body["reason"] = False, "below_zero"
        return body
    plan = tables.get(acct.rate_plan)
    rate = plan.lookup(call_type, to[1:], now) if plan is not None else None
    if rate is None:
        body["allowed"] = False
        body["reason"] = "no_rate" if plan is not None else "unknown_rate_plan"
        body["rate"] = None
        body["max_seconds"] = None
        return body
    body["rate"] = rate_view(rate)
    if not blocked:
        body["max_seconds"] = None
        return body
    if balance < 0:
        body["allowed"], body["reason"], body["max_seconds"] = False, "below_zero", 0
        return body
    seconds = longest_affordable(rate, balance)
    body["max_seconds"] = seconds
    if seconds == 0:
        body["allowed"], body["reason"] = False, "insufficient_funds"
    return body
