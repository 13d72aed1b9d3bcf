"""The ledger of a tenant (SPEC 4 to 7): one record in, the account's change and its outputs out.

Theory of operation
===================

Everything that decides money lives in this file. ``apply(account, record, ...)`` takes
one validated record (``records.Cdr`` or ``records.Command``), the tenant's account (or
None), the rate tables and the processing clock, and returns an ``Outcome``: applied,
duplicate or rejected, with the outputs to write. ``sweep(account, now)`` is the same for
the wall-clock expiry and recharge timeout. Nothing here reads a file, a socket or a
clock: the Kafka worker, ``rater rate`` and the tests are drivers around these two
functions, so all modes follow one set of rules.

Invariants, and where each is enforced:

1. **Money is conserved.** ``balance = sum(lot.remaining) - debt``, and the only changes
   to either are ``_debit`` (a charge), ``_credit`` (funds added or recharged) and
   ``_expire`` (lots forfeited). Each emits the output that reports its amount, so
   ``funds added - charges - funds expired = balance`` over any stream.
2. **A record is applied at most once.** ``apply`` checks the record's id against the
   ids the account remembers before anything changes, and remembers the id in the same
   account value it changes (``_remember``); a driver that stores the account stores both
   at once. Ids are forgotten only past the horizon, where a record is ``too_late`` anyway.
3. **A rejected record changes nothing.** Every check that can reject runs before the
   first mutation of the account (the "Checks" block of ``_apply_cdr`` and
   ``_apply_command``), with no exception (SPEC v1.1: a request's own answer is never
   what times it out, so an answer is applied or rejected whole).
6. **A charged card is never lost** (SPEC v1.1). A request that times out is kept in
   ``timed_out_requests`` for the horizon; a late ``succeeded`` for it credits its lot
   once (``_check_payment_result`` finds it, ``_apply_late_answer`` takes it out).
4. **Events follow crossings.** The balance before a record (before expiry) is compared
   with the balance after all its effects in ``_finish``, which also emits the
   auto-recharge request, so the event order of SPEC 6 is the order of the code in
   ``_finish``.
5. **Outputs are a pure function of (account, record).** Event ids hash the tenant, the
   cause and the type (``event_id``), so a replay writes the same ids.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

from rater.core.money import format_money
from rater.core.rates import RateTables, billable_seconds, charge
from rater.core.records import Cdr, Command, Invalid, Record
from rater.core.timeutil import DAY, HOUR, SECOND, add_months, format_time, month_key, previous_month_key, utc_text

DEFAULT_HORIZON = 7 * DAY
FUTURE_LIMIT = 24 * HOUR  # a record more than this after the processing clock is refused
RECHARGE_TIMEOUT = HOUR
LOT_LIFETIME_MONTHS = 12
BLOCKED_BELOW_ZERO = ("international", "toll_free")
PRUNE_EVERY = HOUR  # forget old ids when the watermark has moved this far


@dataclass(slots=True)
class Lot:
    lot_id: str
    remaining: int
    purchased_at: int
    expires_at: int
    source: str  # "manual" or "auto_recharge"

    def sort_key(self) -> tuple[int, int, str]:
        return (self.expires_at, self.purchased_at, self.lot_id)


@dataclass(slots=True)
class Account:
    tenant_id: str
    rate_plan: str
    currency: str
    low_balance_threshold: int = 0
    included_domestic_minutes: int = 0
    # The configuration as last sent (SPEC 5): enabled, threshold, amount, payment_method.
    auto_recharge: dict[str, Any] | None = None
    # Runtime state of auto-recharge, kept across configuration changes.
    recharge_suspended: bool = False
    pending_request_id: str | None = None
    pending_requested_at: int = 0
    pending_amount: int = 0
    recharge_count: int = 0
    # Requests that timed out, kept for the horizon so that a late answer is still
    # credited (SPEC v1.1): request_id -> [amount, event time of the timeout].
    timed_out_requests: dict[str, list[int]] = field(default_factory=dict)
    # The request whose timeout caused the suspension in force, if that is its cause: a
    # late ``succeeded`` for it lifts the suspension; a failure or an expired card does not
    # set it, so their suspension stays.
    suspended_by: str | None = None
    lots: list[Lot] = field(default_factory=list)  # sorted in spending order
    debt: int = 0
    domestic_seconds_used: dict[str, int] = field(default_factory=dict)  # "YYYY-MM" -> s
    seen_cdrs: dict[str, int] = field(default_factory=dict)  # cdr_id -> started_at
    seen_commands: dict[str, int] = field(default_factory=dict)  # command_id -> occurred_at
    cdr_watermark: int = -(2**62)  # latest started_at applied
    command_watermark: int = -(2**62)  # latest occurred_at applied
    pruned_at: int = -(2**62)
    # Older ids moved out of the account by the Kafka worker (``rater/core/idsegments.py``):
    # [segment number, latest event time in it]. The ledger never reads these.
    id_segments: list[list[int]] = field(default_factory=list)
    next_segment: int = 0
    # Set by the Kafka worker on an account it loaded: (account, cdr_id) -> whether the id
    # is among those moved out of ``seen_cdrs`` (``IdSegments.seen_before``). Not state:
    # never stored, never compared.
    older_seen: Callable[[Account, str], bool] | None = field(default=None, compare=False, repr=False)

    @property
    def balance(self) -> int:
        total = -self.debt
        for lot in self.lots:
            total += lot.remaining
        return total


@dataclass(slots=True)
class Outcome:
    """What one record did. ``status`` is ``applied``, ``duplicate`` or ``rejected``."""

    status: str
    account: Account | None = None
    rated: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    recharge_requests: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    detail: str = ""
    charge: int = 0
    billable_seconds: int = 0


def event_id(tenant_id: str, kind: str, cause_id: str, type_: str, extra: str = "") -> str:
    """A pure function of the tenant, the cause and the type (SPEC 7)."""
    h = hashlib.blake2b(f"{tenant_id}\x1f{kind}\x1f{cause_id}\x1f{type_}\x1f{extra}".encode(), digest_size=16)
    return h.hexdigest()


class _Emitter:
    """Collects the balance events of one cause, in the order they happen."""

    __slots__ = ("account", "kind", "cause_id", "occurred_at", "_text", "events")

    def __init__(self, account: Account, kind: str, cause_id: str, occurred_at: int, text: str | None = None):
        self.account = account
        self.kind = kind
        self.cause_id = cause_id
        self.occurred_at = occurred_at
        self._text = text
        self.events: list[dict[str, Any]] = []

    @property
    def occurred_text(self) -> str:
        if self._text is None:
            self._text = format_time(self.occurred_at)
        return self._text

    def emit(self, type_: str, extra: str = "", **fields: Any) -> None:
        acct = self.account
        event = {
            "event_id": event_id(acct.tenant_id, self.kind, self.cause_id, type_, extra),
            "type": type_,
            "tenant_id": acct.tenant_id,
            "occurred_at": self.occurred_text,
            "cause": {"kind": self.kind, "id": self.cause_id},
            "balance": format_money(acct.balance),
            "currency": acct.currency,
        }
        event.update(fields)
        self.events.append(event)


def _expire(acct: Account, at: int, em: _Emitter) -> None:
    """Forfeit every lot with ``expires_at <= at``; the lots are in spending order."""
    lots = acct.lots
    while lots and lots[0].expires_at <= at:
        lot = lots.pop(0)
        if lot.remaining:
            em.emit(
                "funds_expired",
                lot.lot_id,
                amount=format_money(lot.remaining),
                lot_id=lot.lot_id,
                expires_at=format_time(lot.expires_at),
            )


def _timeout(acct: Account, at: int, em: _Emitter, answer_to: str | None = None) -> None:
    """Time out the pending request if it is more than an hour old at ``at``; never when
    the record is that request's own answer (``answer_to``), which is applied as on time."""
    if acct.pending_request_id is not None and acct.pending_request_id != answer_to and at - acct.pending_requested_at > RECHARGE_TIMEOUT:
        request_id = acct.pending_request_id
        acct.pending_request_id = None
        acct.recharge_suspended = True
        acct.suspended_by = request_id
        acct.timed_out_requests[request_id] = [acct.pending_amount, at]
        em.emit("auto_recharge_failed", request_id, request_id=request_id, reason="timeout")


def _debit(acct: Account, amount: int) -> None:
    lots = acct.lots
    while amount and lots:
        lot = lots[0]
        if lot.remaining > amount:
            lot.remaining -= amount
            return
        amount -= lot.remaining
        lots.pop(0)
    acct.debt += amount


def _credit(acct: Account, amount: int, lot_id: str, purchased_at: int, source: str) -> Lot:
    """Pay debt first; the rest becomes a lot (left out of ``lots`` when nothing is left)."""
    paid = min(acct.debt, amount)
    acct.debt -= paid
    lot = Lot(lot_id, amount - paid, purchased_at, add_months(purchased_at, LOT_LIFETIME_MONTHS), source)
    if lot.remaining:
        keys = [x.sort_key() for x in acct.lots]
        acct.lots.insert(bisect.bisect_right(keys, lot.sort_key()), lot)
    return lot


def _finish(
    acct: Account, before: int, at: int, em: _Emitter, out: Outcome, after: int | None = None, requested_at: int | None = None
) -> None:
    """Crossings, then auto-recharge: the tail of SPEC 6's order of events. ``after`` is
    the balance after the record's effects, when the caller has it; ``requested_at`` the
    time a request made now carries, when it is not the event time (a CDR's end, v1.1)."""
    if after is None:
        after = acct.balance
    threshold = acct.low_balance_threshold
    if after < before:
        if threshold > 0 and before >= threshold > after:
            em.emit("low_balance", threshold=format_money(threshold))
        if before >= 0 > after:
            em.emit("below_zero", blocked_call_types=list(BLOCKED_BELOW_ZERO))
    elif before < 0 <= after:
        em.emit("balance_restored")
    ar = acct.auto_recharge
    if ar is not None and ar["enabled"] and not acct.recharge_suspended and acct.pending_request_id is None and after < ar["threshold"]:
        method = ar["payment_method"]
        request_month = month_key(at)
        if method["expires"] < request_month:  # "YYYY-MM" strings order as months do
            acct.recharge_suspended = True
            acct.suspended_by = None
            em.emit("auto_recharge_failed", "card_expired", reason="card_expired")
            return
        acct.recharge_count += 1
        request_id = f"{acct.tenant_id}/recharge/{acct.recharge_count}"
        acct.pending_request_id = request_id
        acct.pending_requested_at = at if requested_at is None else requested_at
        acct.pending_amount = ar["amount"]
        amount = format_money(ar["amount"])
        em.emit("auto_recharge_requested", amount=amount, request_id=request_id)
        out.recharge_requests.append(
            {
                "event_id": event_id(acct.tenant_id, em.kind, em.cause_id, "recharge_request"),
                "request_id": request_id,
                "tenant_id": acct.tenant_id,
                "amount": amount,
                "currency": acct.currency,
                "payment_method": dict(method),
                "requested_at": em.occurred_text if requested_at is None else format_time(requested_at),
            }
        )


def _remember(seen: dict[str, int], record_id: str, at: int, acct: Account, horizon: int) -> None:
    seen[record_id] = at
    watermark = max(acct.cdr_watermark, acct.command_watermark)
    if watermark - acct.pruned_at >= PRUNE_EVERY:
        # Deterministic in the record sequence, so split runs prune exactly like one run.
        acct.pruned_at = watermark
        for s, mark in ((acct.seen_cdrs, acct.cdr_watermark), (acct.seen_commands, acct.command_watermark)):
            cutoff = mark - horizon
            stale = [k for k, t in s.items() if t < cutoff]
            for k in stale:
                del s[k]
        # A timed-out request is kept for the horizon of the tenant's event time after
        # its timeout (SPEC v1.1), on the same deterministic schedule as the ids.
        cutoff = watermark - horizon
        for k in [k for k, (_, t) in acct.timed_out_requests.items() if t < cutoff]:
            del acct.timed_out_requests[k]


def _reject(reason: str, detail: str) -> Outcome:
    return Outcome("rejected", reason=reason, detail=detail)


def apply(
    account: Account | None,
    record: Record,
    tables: RateTables,
    now: int,
    horizon: int = DEFAULT_HORIZON,
) -> Outcome:
    """Apply one record to its tenant's account (mutated in place when applied)."""
    if record.event_time > now + FUTURE_LIMIT:
        name = "started_at" if record.kind == "cdr" else "occurred_at"
        return _reject(
            "invalid_timestamp",
            f"{name}: {format_time(record.event_time)} is more than 24 hours after the processing clock {format_time(now)}",
        )
    if record.kind == "cdr":
        return _apply_cdr(account, record, tables, horizon)  # type: ignore[arg-type]
    return _apply_command(account, record, tables, horizon)  # type: ignore[arg-type]


def _apply_cdr(acct: Account | None, cdr: Cdr, tables: RateTables, horizon: int) -> Outcome:
    # Checks: nothing changes until all have passed.
    if acct is None:
        return _reject("unknown_tenant", f"tenant_id: no account for {cdr.tenant_id!r}")
    if cdr.cdr_id in acct.seen_cdrs or (acct.older_seen is not None and acct.older_seen(acct, cdr.cdr_id)):
        return Outcome("duplicate", account=acct)
    at = cdr.started_at
    if at < acct.cdr_watermark - horizon:
        return _reject(
            "too_late",
            f"started_at: {format_time(at)} is more than the horizon before the tenant's latest call at {format_time(acct.cdr_watermark)}",
        )
    plan = tables.plans.get(acct.rate_plan)
    if plan is None:
        return _reject("unknown_rate_plan", f"rate_plan: the account's plan {acct.rate_plan!r} is not loaded")
    rate = plan.lookup(cdr.call_type, cdr.to[1:], at)
    if rate is None:
        return _reject(
            "no_rate",
            f"to: no {cdr.call_type} rate in plan {acct.rate_plan!r} for {cdr.to} at {format_time(at)}",
        )

    # Effects.
    out = Outcome("applied", account=acct)
    before = acct.balance
    started_text = utc_text(cdr.started_at_text, at)
    em = _Emitter(acct, "cdr", cdr.cdr_id, at, started_text)
    _expire(acct, at, em)
    _timeout(acct, at, em)
    billable = billable_seconds(cdr.duration, rate.first_increment, rate.next_increment)
    covered = 0
    if cdr.call_type == "domestic" and billable:
        month = month_key(at)
        used = acct.domestic_seconds_used.get(month, 0)
        covered = min(max(acct.included_domestic_minutes * 60 - used, 0), billable)
        if covered:
            acct.domestic_seconds_used[month] = used + covered
            previous = previous_month_key(month)
            for m in [m for m in acct.domestic_seconds_used if m < previous]:
                del acct.domestic_seconds_used[m]
    amount = charge(rate, billable - covered)
    _debit(acct, amount)
    after = acct.balance
    out.charge = amount
    out.billable_seconds = billable
    out.rated = {
        "event_id": event_id(acct.tenant_id, "cdr", cdr.cdr_id, "rated_cdr"),
        "cdr_id": cdr.cdr_id,
        "tenant_id": acct.tenant_id,
        "call_type": cdr.call_type,
        "to": cdr.to,
        "from": cdr.from_,
        "started_at": started_text,
        "duration_seconds": cdr.duration,
        "billable_seconds": billable,
        "covered_seconds": covered,
        "rate_plan": acct.rate_plan,
        "rate_prefix": rate.prefix,
        "rate_per_minute": rate.rate_text,
        "connection_fee": rate.fee_text,
        "charge": format_money(amount),
        "currency": acct.currency,
        "balance_after": format_money(after),
        "attributes": cdr.attributes,
    }
    _finish(acct, before, at, em, out, after, requested_at=at + cdr.duration * SECOND)
    out.events = em.events
    if at > acct.cdr_watermark:
        acct.cdr_watermark = at
    _remember(acct.seen_cdrs, cdr.cdr_id, at, acct, horizon)
    return out


def _apply_command(acct: Account | None, cmd: Command, tables: RateTables, horizon: int) -> Outcome:
    f = cmd.fields
    at = cmd.occurred_at
    # Checks: nothing changes until all have passed.
    if acct is None and cmd.command != "configure_account":
        return _reject("unknown_tenant", f"tenant_id: no account for {cmd.tenant_id!r}")
    if acct is not None:
        if cmd.command_id in acct.seen_commands:
            return Outcome("duplicate", account=acct)
        if at < acct.command_watermark - horizon:
            return _reject(
                "too_late",
                f"occurred_at: {format_time(at)} is more than the horizon before the tenant's "
                f"latest command at {format_time(acct.command_watermark)}",
            )
    if cmd.command == "configure_account":
        rejected = _check_configure(acct, cmd, tables)
    elif cmd.command == "add_funds":
        rejected = _check_add_funds(acct, cmd)  # type: ignore[arg-type]
    else:
        rejected = _check_payment_result(acct, cmd)  # type: ignore[arg-type]
    if rejected is not None:
        return rejected

    # Effects.
    if acct is None:
        plan = tables.plans[f["rate_plan"]]
        acct = Account(tenant_id=cmd.tenant_id, rate_plan=plan.plan_id, currency=plan.currency)
    out = Outcome("applied", account=acct)
    before = acct.balance
    em = _Emitter(acct, "command", cmd.command_id, at)
    _expire(acct, at, em)
    _timeout(acct, at, em, f.get("request_id") if cmd.command == "payment_result" else None)
    if cmd.command == "configure_account":
        if "rate_plan" in f:
            acct.rate_plan = f["rate_plan"]
        if "low_balance_threshold" in f:
            acct.low_balance_threshold = f["low_balance_threshold"]
        if "included_domestic_minutes" in f:
            acct.included_domestic_minutes = f["included_domestic_minutes"]
        if "auto_recharge" in f:
            acct.auto_recharge = f["auto_recharge"]
            acct.recharge_suspended = False
            acct.suspended_by = None
    elif cmd.command == "add_funds":
        purchased_at = f.get("purchased_at", at)
        lot = _credit(acct, f["amount"], cmd.command_id, purchased_at, "manual")
        em.emit(
            "funds_added",
            amount=format_money(f["amount"]),
            lot_id=lot.lot_id,
            expires_at=format_time(lot.expires_at),
        )
    elif f["request_id"] != acct.pending_request_id:
        _apply_late_answer(acct, f["request_id"], f["status"], at, em)
    elif f["status"] == "succeeded":
        request_id = acct.pending_request_id
        acct.pending_request_id = None
        _credit_recharge(acct, request_id, acct.pending_amount, at, em)
    else:
        request_id = acct.pending_request_id
        acct.pending_request_id = None
        acct.recharge_suspended = True
        acct.suspended_by = None
        em.emit("auto_recharge_failed", request_id=request_id, reason=f.get("reason", "declined"))
    _finish(acct, before, at, em, out)
    out.events = em.events
    if at > acct.command_watermark:
        acct.command_watermark = at
    _remember(acct.seen_commands, cmd.command_id, at, acct, horizon)
    return out


def _check_configure(acct: Account | None, cmd: Command, tables: RateTables) -> Outcome | None:
    f = cmd.fields
    plan_id = f.get("rate_plan")
    if acct is None and plan_id is None:
        return _reject("invalid_record", "rate_plan: required when the account is created")
    if plan_id is not None:
        plan = tables.plans.get(plan_id)
        if plan is None:
            return _reject("unknown_rate_plan", f"rate_plan: no plan {plan_id!r} is loaded")
        if acct is not None and plan.currency != acct.currency:
            return _reject(
                "currency_mismatch",
                f"rate_plan: plan {plan_id!r} is in {plan.currency}, the account in {acct.currency}",
            )
        currency = plan.currency
    else:
        currency = acct.currency  # type: ignore[union-attr]
    if "currency" in f and f["currency"] != currency:
        return _reject("currency_mismatch", f"currency: {f['currency']} is not the account's currency {currency}")
    return None


def _check_add_funds(acct: Account, cmd: Command) -> Outcome | None:
    f = cmd.fields
    if "currency" in f and f["currency"] != acct.currency:
        return _reject("currency_mismatch", f"currency: {f['currency']} is not the account's currency {acct.currency}")
    purchased_at = f.get("purchased_at", cmd.occurred_at)
    if add_months(purchased_at, LOT_LIFETIME_MONTHS) <= cmd.occurred_at:
        return _reject(
            "invalid_record",
            f"purchased_at: funds bought at {format_time(purchased_at)} have expired by occurred_at",
        )
    return None


def _check_payment_result(acct: Account, cmd: Command) -> Outcome | None:
    request_id = cmd.fields["request_id"]
    if acct.pending_request_id != request_id and request_id not in acct.timed_out_requests:
        return _reject(
            "unknown_request",
            f"request_id: {request_id!r} is neither the pending recharge request nor one that timed out",
        )
    return None


def _credit_recharge(acct: Account, request_id: str, amount: int, at: int, em: _Emitter) -> None:
    lot = _credit(acct, amount, request_id, at, "auto_recharge")
    em.emit(
        "auto_recharge_succeeded",
        amount=format_money(amount),
        request_id=request_id,
        lot_id=lot.lot_id,
        expires_at=format_time(lot.expires_at),
    )


def _apply_late_answer(acct: Account, request_id: str, status: str, at: int, em: _Emitter) -> None:
    """The answer to a request that timed out (SPEC v1.1): the first answer settles it.

    ``succeeded``: the card was charged, so the lot is added as on time, and the
    suspension is lifted when this request's timeout is what caused it. ``failed``: the
    request had already failed; nothing is written. Either way the request is forgotten,
    so a second answer for it is ``unknown_request`` and a card never credits twice.
    """
    amount, _ = acct.timed_out_requests.pop(request_id)
    if status != "succeeded":
        return
    _credit_recharge(acct, request_id, amount, at, em)
    if acct.suspended_by == request_id:
        acct.recharge_suspended = False
        acct.suspended_by = None


def sweep(acct: Account, now: int) -> Outcome | None:
    """The wall-clock sweep: expire lots and time out a pending recharge with no traffic.

    Returns None when nothing is due, so a driver can sweep every account cheaply.
    """
    due_lot = acct.lots[0] if acct.lots and acct.lots[0].expires_at <= now else None
    due_request = acct.pending_request_id is not None and now - acct.pending_requested_at > RECHARGE_TIMEOUT
    if due_lot is None and not due_request:
        return None
    # One cause for the whole sweep, named after the first thing it settles.
    cause_id = due_lot.lot_id if due_lot is not None else acct.pending_request_id
    out = Outcome("applied", account=acct)
    before = acct.balance
    em = _Emitter(acct, "sweep", cause_id or "", now)
    _expire(acct, now, em)
    _timeout(acct, now, em)
    _finish(acct, before, now, em, out)
    out.events = em.events
    return out


__all__ = ["Account", "Lot", "Outcome", "apply", "sweep", "event_id", "Invalid"]
