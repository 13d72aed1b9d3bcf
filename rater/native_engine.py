"""The native engine: the rating core in Rust (``native/``, the ``rater_native`` module),
behind the same interface as the Python ``Engine`` (``rater/engine.py``).

The Python core stays the reference: ``tests/test_native_diff.py`` feeds both engines
the same records and compares their outputs and accounts byte for byte. Which engine
runs is ``--engine native|python`` (or ``RATER_ENGINE``); by default the native one when
the extension is built, else the Python one (``choose``).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from .engine import Engine, Tally
from .ledger import DEFAULT_HORIZON, Account
from .rates import RateTables
from .state import decode_account, encode_account

try:  # built by `pip install ./native` (the Makefile does it when cargo is on PATH)
    import rater_native
except ImportError:  # pragma: no cover - depends on the build
    rater_native = None

ENGINES = ("native", "python")


class EngineUnavailable(ValueError):
    """``--engine native`` asked for while the extension is not built."""


def available() -> bool:
    return rater_native is not None


def choose(name: str | None = None) -> str:
    """The engine to run: ``name``, else ``RATER_ENGINE``, else native when built."""
    name = name or os.environ.get("RATER_ENGINE") or ("native" if available() else "python")
    if name not in ENGINES:
        raise EngineUnavailable(f"engine {name!r}: must be native or python")
    if name == "native" and not available():
        raise EngineUnavailable(
            "the native engine is not built (install it with `pip install ./native`, which needs cargo); "
            "use --engine python"
        )
    return name


def make_engine(name: str, tables: RateTables, accounts: dict[str, Account] | None = None,
                horizon: int = DEFAULT_HORIZON) -> Engine | NativeEngine:  # fmt: skip
    if name == "native":
        return NativeEngine(tables, accounts, horizon)
    return Engine(tables, accounts, horizon)


def plans_arg(tables: RateTables) -> list[tuple[str, str, list[tuple]]]:
    """The loaded rate plans as the native engine takes them: every row, parsed."""
    plans = []
    for plan in tables.plans.values():
        rows = [
            (r.call_type, r.prefix, r.rate_per_minute, r.connection_fee, r.first_increment,
             r.next_increment, r.effective_from)  # fmt: skip
            for by_prefix in plan.index.values()
            for _starts, rates in by_prefix.values()
            for r in rates
        ]
        plans.append((plan.plan_id, plan.currency, rows))
    return plans


class NativeEngine:
    """``Engine``'s interface over ``rater_native.Engine``; the accounts live natively and
    cross into Python only in their stored form (``rater/state.py``)."""

    name = "native"

    def __init__(self, tables: RateTables, accounts: dict[str, Account] | None = None,
                 horizon: int = DEFAULT_HORIZON):  # fmt: skip
        if rater_native is None:
            raise EngineUnavailable("the native engine is not built")
        self._tables = tables
        self.horizon = horizon
        self.native = rater_native.Engine(plans_arg(tables), horizon)
        for acct in (accounts or {}).values():
            self.native.put_account(encode_account(acct))

    @property
    def tables(self) -> RateTables:
        return self._tables

    @tables.setter
    def tables(self, tables: RateTables) -> None:
        self._tables = tables
        self.native.set_tables(plans_arg(tables))

    def process_bytes(self, raw: bytes, key: str | None, source: dict[str, Any], now: int):
        """One record: (status, reason, detail, rated, events, requests, reject), outputs
        as encoded JSON."""
        (_kind, _tenant, status, reason, detail, rated, events, requests, reject,
         _has) = self.native.process(raw, key, source, now)  # fmt: skip
        return status, reason, detail, rated, events, requests, reject

    def rate_lines(self, data: bytes, path: str, first_line: int, now: int):
        return self.native.rate_lines(data, path, first_line, now)

    def account(self, tenant: str) -> Account | None:
        stored = self.native.get_account(tenant)
        return decode_account(stored) if stored is not None else None

    def accounts_dict(self) -> dict[str, Account]:
        return {t: decode_account(b) for t, b in self.native.accounts()}

    @property
    def tally(self) -> Tally:
        d = self.native.tally()
        return Tally(
            outcomes=Counter(d["outcomes"]),
            reasons=Counter(d["reasons"]),
            charged=Counter(d["charged"]),
            billable=Counter(d["billable"]),
            events=Counter(d["events"]),
        )
