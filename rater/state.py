"""Accounts to and from plain data: the stored form, the public view, the state file.

Two shapes: the *stored* form (``to_stored``/``from_stored``) keeps everything the
ledger needs to continue, ids remembered for duplicates included, in compact JSON-able
types (ints for money and times); the *view* (``to_view``) is the account as SPEC 9
``balances.json`` and ``GET /tenants/<id>`` show it, with money and times in wire format.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import orjson

from .ledger import Account, Lot
from .money import format_money
from .timeutil import format_time

STATE_VERSION = 1


class StateError(ValueError):
    """A state file that cannot be read; the message names the file and the problem."""


def to_stored(a: Account) -> dict[str, Any]:
    return {
        "t": a.tenant_id,
        "p": a.rate_plan,
        "c": a.currency,
        "lbt": a.low_balance_threshold,
        "idm": a.included_domestic_minutes,
        "ar": a.auto_recharge,
        "rs": a.recharge_suspended,
        "pr": a.pending_request_id,
        "pra": a.pending_requested_at,
        "pam": a.pending_amount,
        "rc": a.recharge_count,
        "tor": a.timed_out_requests,
        "sb": a.suspended_by,
        "lots": [[x.lot_id, x.remaining, x.purchased_at, x.expires_at, x.source] for x in a.lots],
        "debt": a.debt,
        "dom": a.domestic_seconds_used,
        "sc": a.seen_cdrs,
        "sm": a.seen_commands,
        "cw": a.cdr_watermark,
        "mw": a.command_watermark,
        "pa": a.pruned_at,
        "sg": a.id_segments,
        "ns": a.next_segment,
    }


def from_stored(d: dict[str, Any]) -> Account:
    return Account(
        tenant_id=d["t"],
        rate_plan=d["p"],
        currency=d["c"],
        low_balance_threshold=d["lbt"],
        included_domestic_minutes=d["idm"],
        auto_recharge=d["ar"],
        recharge_suspended=d["rs"],
        pending_request_id=d["pr"],
        pending_requested_at=d["pra"],
        pending_amount=d["pam"],
        recharge_count=d["rc"],
        # Absent from accounts written before SPEC v1.1: nothing had timed out there that a
        # late answer could still credit.
        timed_out_requests={k: list(v) for k, v in d.get("tor", {}).items()},
        suspended_by=d.get("sb"),
        lots=[Lot(*x) for x in d["lots"]],
        debt=d["debt"],
        domestic_seconds_used=dict(d["dom"]),
        seen_cdrs=dict(d["sc"]),
        seen_commands=dict(d["sm"]),
        cdr_watermark=d["cw"],
        command_watermark=d["mw"],
        pruned_at=d["pa"],
        id_segments=d.get("sg", []),
        next_segment=d.get("ns", 0),
    )


def encode_account(a: Account, judged: dict[str, int] | None = None) -> bytes:
    """The stored form as bytes. ``judged`` (the Kafka worker's): per input topic, the
    last offset of the account's partition that the batch writing this value had judged
    (``rater/applied.py``); ``decode_account`` ignores it."""
    d = to_stored(a)
    if judged:
        d["in"] = judged
    return orjson.dumps(d)


def decode_account(data: bytes) -> Account:
    return from_stored(orjson.loads(data))


def decode_judged(data: bytes) -> tuple[Account, dict[str, int]]:
    """``decode_account`` and the ``judged`` offsets the value was written with ({} if none)."""
    d = orjson.loads(data)
    return from_stored(d), d.get("in") or {}


def to_view(a: Account) -> dict[str, Any]:
    ar = a.auto_recharge
    auto: dict[str, Any] | None = None
    if ar is not None or a.pending_request_id is not None or a.recharge_suspended:
        ar = ar or {"enabled": False, "threshold": 0, "amount": 0, "payment_method": None}
        auto = {
            "enabled": ar["enabled"],
            "threshold": format_money(ar["threshold"]),
            "amount": format_money(ar["amount"]),
            "payment_method": ar["payment_method"],
            "suspended": a.recharge_suspended,
            "pending_request_id": a.pending_request_id,
        }
    return {
        "tenant_id": a.tenant_id,
        "balance": format_money(a.balance),
        "currency": a.currency,
        "debt": format_money(a.debt),
        "rate_plan": a.rate_plan,
        "lots": [
            {
                "lot_id": x.lot_id,
                "remaining": format_money(x.remaining),
                "purchased_at": format_time(x.purchased_at),
                "expires_at": format_time(x.expires_at),
                "source": x.source,
            }
            for x in a.lots
        ],
        "low_balance_threshold": format_money(a.low_balance_threshold),
        "included_domestic_minutes": a.included_domestic_minutes,
        "auto_recharge": auto,
        "domestic_seconds_used": dict(sorted(a.domestic_seconds_used.items())),
    }


def write_atomic(path: str, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, rename: a crash leaves the old
    file or the new one, never half of either."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save_state(path: str, accounts: dict[str, Account]) -> None:
    body = {
        "version": STATE_VERSION,
        "accounts": {tid: to_stored(a) for tid, a in sorted(accounts.items())},
    }
    write_atomic(path, orjson.dumps(body))


def load_state(path: str) -> dict[str, Account]:
    """Accounts from a state file; a missing file is an empty state (the first run)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateError(f"{path}: cannot read the state file ({exc.strerror})") from None
    try:
        body = orjson.loads(data)
        if body.get("version") != STATE_VERSION:
            raise StateError(f"{path}: state version {body.get('version')!r}, expected {STATE_VERSION}")
        return {tid: from_stored(d) for tid, d in body["accounts"].items()}
    except StateError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise StateError(f"{path}: not a rater state file ({exc})") from None
