"""One input record's bytes to its outputs: the step every driver shares.

``Engine.process`` decodes (``records``), applies (``ledger``) and turns a refusal into
the reject record of SPEC 8. It holds the accounts in a dict the driver owns; the
offline command keeps them in memory, the Kafka worker loads and stores them around
each batch. The processing clock is an argument, never read here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from rater.core import ledger
from rater.core.bounds import DEFAULT_MAX_RECORD_BYTES, raw_fields, too_large_detail
from rater.core.codec import to_view
from rater.core.ledger import Account, Outcome
from rater.core.rates import RateTables
from rater.core.records import Invalid, decode
from rater.core.routing import KINDS, outputs_of


@dataclass(slots=True)
class Tally:
    """Counts for the summary and the metrics."""

    outcomes: Counter = field(default_factory=Counter)  # (kind, status) -> n
    reasons: Counter = field(default_factory=Counter)
    charged: Counter = field(default_factory=Counter)  # (currency, call_type) -> micro
    billable: Counter = field(default_factory=Counter)  # call_type -> seconds
    events: Counter = field(default_factory=Counter)  # type -> n
    recharge_failures: Counter = field(default_factory=Counter)  # auto_recharge_failed reason -> n

    def add(self, kind: str, out: Outcome, call_type: str | None, currency: str | None) -> None:
        self.outcomes[(kind, out.status)] += 1
        if out.status == "rejected":
            self.reasons[out.reason] += 1
        if out.rated is not None:
            self.charged[(currency, call_type)] += out.charge
            self.billable[call_type] += out.billable_seconds
        for e in out.events:
            self.count_event(e)

    def count_event(self, e: dict[str, Any]) -> None:
        self.events[e["type"]] += 1
        if e["type"] == "auto_recharge_failed":
            self.recharge_failures[e.get("reason", "")] += 1


def reject_record(reason: str, detail: str, raw: bytes, source: dict[str, Any], tenant_id: str | None) -> dict[str, Any]:
    """The reject of SPEC 8; ``raw`` is cut to a bounded size (``rater/core/bounds.py``)."""
    where = "\x1f".join(str(v) for v in source.values())
    return {
        "event_id": ledger.event_id(tenant_id or "", "reject", where, "reject"),
        "reason": reason,
        "detail": detail,
        "tenant_id": tenant_id,
        "source": source,
        **raw_fields(raw),
    }


@dataclass(slots=True)
class Processed:
    kind: str  # "cdr", "command" or "unknown" (not decodable)
    tenant_id: str | None
    outcome: Outcome
    reject: dict[str, Any] | None = None


class Engine:
    def __init__(
        self,
        tables: RateTables,
        accounts: dict[str, Account] | None = None,
        horizon: int = ledger.DEFAULT_HORIZON,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ):
        self.tables = tables
        self.accounts: dict[str, Account] = accounts if accounts is not None else {}
        self.horizon = horizon
        self.max_record_bytes = max_record_bytes
        self.tally = Tally()

    def process(self, raw: bytes | None, key: str | None, source: dict[str, Any], now: int) -> Processed:
        """``raw`` None: a Kafka record with a null value (a tombstone), rejected as such."""
        try:
            if raw is not None and len(raw) > self.max_record_bytes:  # before decoding: its outputs could not be written
                raise Invalid("invalid_record", too_large_detail(len(raw), self.max_record_bytes))
            record = decode(raw, key)
        except Invalid as exc:
            out = Outcome("rejected", reason=exc.reason, detail=exc.detail)
            self.tally.add("unknown", out, None, None)
            return Processed("unknown", exc.tenant_id, out, reject_record(exc.reason, exc.detail, raw or b"", source, exc.tenant_id))
        tenant = record.tenant_id
        acct = self.accounts.get(tenant)
        out = ledger.apply(acct, record, self.tables, now, self.horizon)
        if out.status == "applied" and acct is None:
            self.accounts[tenant] = out.account  # type: ignore[assignment]
        account = out.account
        self.tally.add(
            record.kind,
            out,
            getattr(record, "call_type", None),
            account.currency if account is not None else None,
        )
        reject = None
        if out.status == "rejected":
            reject = reject_record(out.reason, out.detail, raw, source, tenant)
        return Processed(record.kind, tenant, out, reject)

    # The interface the native engine shares (rater/core/native_engine.py): encoded outputs.

    name = "python"

    def process_bytes(self, raw: bytes, key: str | None, source: dict[str, Any], now: int):
        """One record: (status, reason, detail, rated, events, requests, reject), outputs
        encoded as the drivers write them."""
        p = self.process(raw, key, source, now)
        o = p.outcome
        dumps = orjson.dumps
        return (
            o.status,
            o.reason,
            o.detail,
            dumps(o.rated) if o.rated is not None else None,
            [dumps(e) for e in o.events],
            [dumps(r) for r in o.recharge_requests],
            dumps(p.reject) if p.reject is not None else None,
        )

    def rate_lines(self, data: bytes, path: str, first_line: int, now: int):
        """Whole JSON lines of one input file, as ``rater rate`` reads them (a line's
        trailing CR/LF stripped, blank lines skipped but counted): (records, rated,
        events, requests, rejects), each output newline-terminated JSON lines."""
        dumps = orjson.dumps
        nl = orjson.OPT_APPEND_NEWLINE
        by_kind: dict[str, list[bytes]] = {kind: [] for kind in KINDS}
        records = 0
        for lineno, line in enumerate(data.split(b"\n"), first_line):
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue  # a blank line carries no record
            records += 1
            p = self.process(raw, None, {"file": path, "line": lineno}, now)
            for kind, body in outputs_of(p.outcome, p.reject):  # rater/core/routing.py
                by_kind[kind].append(dumps(body, option=nl))
        return records, *(b"".join(by_kind[kind]) for kind in KINDS)

    def account(self, tenant: str) -> Account | None:
        return self.accounts.get(tenant)

    def accounts_dict(self) -> dict[str, Account]:
        return self.accounts

    def views(self) -> dict[str, dict[str, Any]]:
        """Every account's view (``to_view``), in tenant order: ``balances.json``."""
        return {tid: to_view(a) for tid, a in sorted(self.accounts.items())}

    def balances_json(self) -> bytes:
        """``balances.json``: the views, indented two spaces, and a newline."""
        return orjson.dumps(self.views(), option=orjson.OPT_INDENT_2) + b"\n"

    def below_zero(self) -> list[str]:
        """The tenants whose balance is below zero, sorted."""
        return sorted(t for t, a in self.accounts.items() if a.balance < 0)
