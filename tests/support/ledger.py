"""Small builders for the core's tests: a hand-written rate plan and records as dicts."""

from __future__ import annotations

import os
from typing import Any

import orjson

from rater.core import ledger
from rater.core.engine import Engine
from rater.core.rates import RateTables, load_rate_tables
from rater.core.records import decode
from rater.core.timeutil import parse_time

# Rates chosen so that charges are easy to work out by hand.
PLAN_CSV = """\
call_type,prefix,destination,currency,rate_per_minute,connection_fee,first_increment,next_increment,effective_from
international,44,United Kingdom,USD,0.060000,,60,60,
international,447,United Kingdom mobile,USD,0.120000,0.010000,30,6,
international,4479,UK mobile future range,USD,0.500000,,60,60,2027-06-01
international,49,Germany,USD,0.030000,,1,1,
international,49,Germany,USD,0.090000,,1,1,2026-12-01T00:00:00Z
international,1,North America,USD,0.010000,,60,60,
conference_dialout,1,North America,USD,0.012000,,60,60,
toll_free,1800,US toll-free,USD,0.036000,,60,60,
domestic,1,United States,USD,0.006000,,6,6,
"""
EUR_CSV = """\
call_type,prefix,currency,rate_per_minute
international,49,EUR,0.02
"""

NOW = parse_time("2026-11-25T12:00:00Z")


def write_tables(directory: str) -> RateTables:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "test-usd.csv"), "w") as f:
        f.write(PLAN_CSV)
    with open(os.path.join(directory, "test-eur.csv"), "w") as f:
        f.write(EUR_CSV)
    return load_rate_tables(directory)


def configure(tenant: str = "acme", cid: str = "cfg-1", at: str = "2026-11-01T00:00:00Z", **fields: Any) -> dict:
    rec = {"command_id": cid, "tenant_id": tenant, "command": "configure_account", "occurred_at": at}
    rec.setdefault("rate_plan", "test-usd") if "rate_plan" not in fields else None
    rec.update(fields)
    return rec


def funds(amount: str, cid: str, at: str = "2026-11-01T00:00:00Z", tenant: str = "acme", **fields: Any) -> dict:
    rec = {"command_id": cid, "tenant_id": tenant, "command": "add_funds", "occurred_at": at, "amount": amount}
    rec.update(fields)
    return rec


def payment(request_id: str, status: str, cid: str, at: str, tenant: str = "acme", **fields: Any) -> dict:
    rec = {
        "command_id": cid,
        "tenant_id": tenant,
        "command": "payment_result",
        "occurred_at": at,
        "request_id": request_id,
        "status": status,
    }
    rec.update(fields)
    return rec


def cdr(
    cid: str, to: str, seconds: int, at: str = "2026-11-02T10:00:00Z", call_type: str = "international", tenant: str = "acme", **extra: Any
) -> dict:
    rec = {
        "cdr_id": cid,
        "tenant_id": tenant,
        "call_type": call_type,
        "to": to,
        "started_at": at,
        "duration_seconds": seconds,
    }
    rec.update(extra)
    return rec


class Book:
    """An engine over the test plan that applies dicts and keeps every output."""

    def __init__(self, tables: RateTables, now: int = NOW):
        self.engine = Engine(tables)
        self.now = now
        self.line = 0

    def apply(self, rec: dict | bytes):
        raw = rec if isinstance(rec, bytes) else orjson.dumps(rec)
        self.line += 1
        return self.engine.process(raw, None, {"file": "test", "line": self.line}, self.now)

    def all(self, *recs: dict):
        return [self.apply(r) for r in recs]

    def account(self, tenant: str = "acme") -> ledger.Account:
        return self.engine.accounts[tenant]


def types(processed) -> list[str]:
    return [e["type"] for e in processed.outcome.events]


def record(rec: dict):
    return decode(orjson.dumps(rec))
