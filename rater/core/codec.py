"""Accounts to and from plain data: the stored form and the public view (no I/O).

The state file of ``rater rate`` that holds them is ``rater/statefile.py``.

Two shapes: the *stored* form keeps everything the ledger needs to continue, ids
remembered for duplicates included, with ints for money and times; the *view*
(``to_view``) is the account as SPEC 9 ``balances.json`` and ``GET /tenants/<id>`` show
it, with money and times in wire format.

The stored form as bytes (``encode_account``/``decode_account``: the worker's table and
changelog) is format 2, binary (its layout below ``decode_judged``), or format 1, the
JSON of ``to_stored``; a reader tells them apart by the first byte and reads both. The
state file of ``rater rate`` keeps ``to_stored``'s plain data (``rater/statefile.py``).
"""

from __future__ import annotations

from typing import Any

import orjson

from rater.core.ledger import Account, Lot
from rater.core.money import format_money
from rater.core.timeutil import format_time


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


FORMAT = 2  # what ``encode_account`` writes unless told otherwise (``format=1``)


def encode_account(a: Account, judged: dict[str, int] | None = None, format: int = FORMAT) -> bytes:
    """The stored form as bytes, in ``format`` (2, or 1 for workers that read only format 1
    during a rolling upgrade: ``--account-format``). ``judged`` (the Kafka worker's): per
    input topic, the last offset of the account's partition that the batch writing this
    value had judged (``rater/core/applied.py``); ``decode_account`` ignores it."""
    if format == 2:
        return _encode2(a, judged)
    if format != 1:
        raise ValueError(f"account format {format} is not known (1 or 2)")
    d = to_stored(a)
    if judged:
        d["in"] = judged
    return orjson.dumps(d)


def decode_account(data: bytes) -> Account:
    return decode_judged(data)[0]


def decode_judged(data: bytes) -> tuple[Account, dict[str, int]]:
    """``decode_account`` and the ``judged`` offsets the value was written with ({} if none)."""
    if data[:1] == b"\x02":
        return _decode2(data)
    if data[:1] != b"{":
        raise ValueError(f"account format version {data[0] if data else 'none (an empty value)'} is not known")
    d = orjson.loads(data)
    return from_stored(d), d.get("in") or {}


# Format 2: the fields of format 1 in binary, in format 1's order but for the judged
# offsets, which come first. After the version byte 0x02 each field is one of:
#   uint   unsigned LEB128 varint (at most 128 bits);
#   int    a signed integer as zigzag (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...), then a uint;
#   str    uint byte length, then the UTF-8 bytes;
#   opt    0x00 for none, or 0x01 then the value;
#   map    uint count, then per entry a str and an int: the entry's value minus the value
#          of the entry before it (the first: minus 0). Recent ids are added in time
#          order mostly, so their times take 1 to 4 bytes instead of 16 digits.
# The fields: in (the judged offsets, read alone by ``judged_of``): uint count, per topic
# str, offset int; t str, p str, c str, lbt int, idm int; ar: 0x00 none, or 0x01 then
# enabled (0x00/0x01), threshold int, amount int and payment_method (0x00 none, 0x01 a
# card: expires str, 0x02 a card: expires str, last4 str); rs (0x00/0x01), pr opt str, pra
# int, pam int, rc int; tor: uint count, per request id str, amount int, timed out at int;
# sb opt str; lots: uint count, per lot id str, remaining int, purchased_at int,
# expires_at int, source str; debt int, dom map, sc map, sm map, cw int, mw int, pa int;
# sg: uint count, per n int, latest int; ns int. Integers are limited to what the native
# engine holds (i128; a map's values i64). The native codec (native/src/codec.rs) writes
# the same bytes.

_I128 = 1 << 127
_I64 = 1 << 63  # the values of a map (times, counts): 64-bit in the native engine


def _uint(out: bytearray, v: int) -> None:
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _int(out: bytearray, v: int) -> None:
    if not -_I128 <= v < _I128:
        raise ValueError(f"an account integer out of range: {v}")
    _uint(out, v << 1 if v >= 0 else ((-v) << 1) - 1)


def _str(out: bytearray, s: str) -> None:
    b = s.encode()
    _uint(out, len(b))
    out += b


def _opt_str(out: bytearray, s: str | None) -> None:
    if s is None:
        out.append(0)
    else:
        out.append(1)
        _str(out, s)


def _map(out: bytearray, m: dict[str, int]) -> None:
    _uint(out, len(m))
    prev = 0
    for k, v in m.items():
        _str(out, k)
        if not -_I64 <= v < _I64:
            raise ValueError(f"an account time or count out of range: {v}")
        _int(out, v - prev)
        prev = v


def _encode2(a: Account, judged: dict[str, int] | None) -> bytes:
    out = bytearray(b"\x02")
    judged = judged or {}
    _uint(out, len(judged))
    for topic, offset in judged.items():
        _str(out, topic)
        _int(out, offset)
    _str(out, a.tenant_id)
    _str(out, a.rate_plan)
    _str(out, a.currency)
    _int(out, a.low_balance_threshold)
    _int(out, a.included_domestic_minutes)
    ar = a.auto_recharge
    if ar is None:
        out.append(0)
    else:
        out.append(1)
        out.append(1 if ar["enabled"] else 0)
        _int(out, ar["threshold"])
        _int(out, ar["amount"])
        pm = ar["payment_method"]
        if pm is None:
            out.append(0)
        else:
            last4 = pm.get("last4")
            out.append(1 if last4 is None else 2)
            _str(out, pm["expires"])
            if last4 is not None:
                _str(out, last4)
    out.append(1 if a.recharge_suspended else 0)
    _opt_str(out, a.pending_request_id)
    _int(out, a.pending_requested_at)
    _int(out, a.pending_amount)
    _int(out, a.recharge_count)
    _uint(out, len(a.timed_out_requests))
    for rid, (amount, at) in a.timed_out_requests.items():
        _str(out, rid)
        _int(out, amount)
        _int(out, at)
    _opt_str(out, a.suspended_by)
    _uint(out, len(a.lots))
    for x in a.lots:
        _str(out, x.lot_id)
        _int(out, x.remaining)
        _int(out, x.purchased_at)
        _int(out, x.expires_at)
        _str(out, x.source)
    _int(out, a.debt)
    _map(out, a.domestic_seconds_used)
    _map(out, a.seen_cdrs)
    _map(out, a.seen_commands)
    _int(out, a.cdr_watermark)
    _int(out, a.command_watermark)
    _int(out, a.pruned_at)
    _uint(out, len(a.id_segments))
    for n, latest in a.id_segments:
        _int(out, n)
        _int(out, latest)
    _int(out, a.next_segment)
    return bytes(out)


class _Reader:
    """Format 2's fields read in order; a value that ends early or runs on is refused."""

    def __init__(self, data: bytes):
        self.data = data
        self.at = 1

    def byte(self, what: str, most: int = 1) -> int:
        if self.at >= len(self.data):
            raise ValueError(f"account format 2: ends inside {what}")
        b = self.data[self.at]
        if b > most:
            raise ValueError(f"account format 2: {what}: {b} is not 0 to {most}")
        self.at += 1
        return b

    def uint(self, what: str) -> int:
        v = shift = 0
        while True:
            if self.at >= len(self.data):
                raise ValueError(f"account format 2: ends inside {what}")
            b = self.data[self.at]
            self.at += 1
            if shift == 126 and b > 3:
                raise ValueError(f"account format 2: {what}: a varint past 128 bits")
            v |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        return v

    def int(self, what: str) -> int:
        z = self.uint(what)
        return z >> 1 if not z & 1 else -((z + 1) >> 1)

    def str(self, what: str) -> str:
        n = self.uint(what)
        end = self.at + n
        if end > len(self.data):
            raise ValueError(f"account format 2: ends inside {what}")
        try:
            s = self.data[self.at : end].decode()
        except UnicodeDecodeError:
            raise ValueError(f"account format 2: {what}: not UTF-8") from None
        self.at = end
        return s

    def opt_str(self, what: str) -> str | None:
        return self.str(what) if self.byte(what) else None

    def map(self, what: str) -> dict[str, int]:
        out: dict[str, int] = {}
        prev = 0
        for _ in range(self.uint(what)):
            k = self.str(what)
            prev += self.int(what)
            if not -_I64 <= prev < _I64:
                raise ValueError(f"account format 2: {what}: out of range")
            out[k] = prev
        return out


def _judged2(r: _Reader) -> dict[str, int]:
    judged = {}
    for _ in range(r.uint("in")):
        topic = r.str("in")
        judged[topic] = r.int("in")
    return judged


def judged_of(data: bytes) -> dict[str, int]:
    """The judged offsets of a stored account (``decode_judged``'s second part), without
    decoding the account where the format allows: format 2 writes them first. The worker's
    replay check reads them for every account it reads while a partition may hold records
    a crashed batch judged."""
    if data[:1] == b"\x02":
        return _judged2(_Reader(data))
    return decode_judged(data)[1]


def _decode2(data: bytes) -> tuple[Account, dict[str, int]]:
    r = _Reader(data)
    judged = _judged2(r)
    tenant, plan, currency = r.str("t"), r.str("p"), r.str("c")
    lbt, idm = r.int("lbt"), r.int("idm")
    ar: dict[str, Any] | None = None
    if r.byte("ar"):
        enabled = bool(r.byte("ar.enabled"))
        threshold, amount = r.int("ar.threshold"), r.int("ar.amount")
        kind = r.byte("ar.payment_method", 2)
        pm: dict[str, str] | None = None
        if kind:
            pm = {"type": "card", "expires": r.str("ar.payment_method.expires")}
            if kind == 2:
                pm["last4"] = r.str("ar.payment_method.last4")
        ar = {"enabled": enabled, "threshold": threshold, "amount": amount, "payment_method": pm}
    rs = bool(r.byte("rs"))
    pr = r.opt_str("pr")
    pra, pam, rc = r.int("pra"), r.int("pam"), r.int("rc")
    tor = {}
    for _ in range(r.uint("tor")):
        rid = r.str("tor")
        tor[rid] = [r.int("tor"), r.int("tor")]
    sb = r.opt_str("sb")
    lots = [Lot(r.str("lots"), r.int("lots"), r.int("lots"), r.int("lots"), r.str("lots")) for _ in range(r.uint("lots"))]
    debt = r.int("debt")
    dom, sc, sm = r.map("dom"), r.map("sc"), r.map("sm")
    cw, mw, pa = r.int("cw"), r.int("mw"), r.int("pa")
    sg = [[r.int("sg"), r.int("sg")] for _ in range(r.uint("sg"))]
    ns = r.int("ns")
    if r.at != len(data):
        raise ValueError(f"account format 2: {len(data) - r.at} bytes after the last field")
    acct = Account(
        tenant_id=tenant,
        rate_plan=plan,
        currency=currency,
        low_balance_threshold=lbt,
        included_domestic_minutes=idm,
        auto_recharge=ar,
        recharge_suspended=rs,
        pending_request_id=pr,
        pending_requested_at=pra,
        pending_amount=pam,
        recharge_count=rc,
        timed_out_requests=tor,
        suspended_by=sb,
        lots=lots,
        debt=debt,
        domestic_seconds_used=dom,
        seen_cdrs=sc,
        seen_commands=sm,
        cdr_watermark=cw,
        command_watermark=mw,
        pruned_at=pa,
        id_segments=sg,
        next_segment=ns,
    )
    return acct, judged


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
