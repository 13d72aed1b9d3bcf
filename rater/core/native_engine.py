"""The native engine: the rating core in Rust (``native/``, the ``rater_native`` module),
behind the same interface as the Python ``Engine`` (``rater/core/engine.py``).

The Python core stays the reference: ``tests/core/test_native_diff.py`` feeds both engines
the same records and compares their outputs and accounts byte for byte. Which engine
runs is ``--engine native|python`` (or ``RATER_ENGINE``); by default, for ``rater rate``
the native one when the extension is built, else the Python one, and for the worker the
Python one (``choose``; why the worker's default differs: ``NativeBatchProcessor``).
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any, Callable, Iterable

import orjson

from rater.core.batch import BatchProcessor, BatchResult, Message
from rater.core.bounds import DEFAULT_MAX_RECORD_BYTES
from rater.core.codec import decode_account, encode_account
from rater.core.engine import Engine, Tally
from rater.core.ledger import DEFAULT_HORIZON, Account
from rater.core.rates import RateTables
from rater.core.routing import Encoded, outputs_of

try:  # built by `pip install ./native` (the Makefile does it when cargo is on PATH)
    import rater_native
except ImportError:  # pragma: no cover - depends on the build
    rater_native = None

ENGINES = ("native", "python")


class EngineUnavailable(ValueError):
    """``--engine native`` asked for while the extension is not built."""


def available() -> bool:
    return rater_native is not None


def choose(name: str | None = None, default: str | None = None) -> str:
    """The engine to run: ``name``, else ``RATER_ENGINE``, else ``default``, else native
    when built. (The worker passes ``default="python"``: see ``NativeBatchProcessor``.)"""
    name = name or os.environ.get("RATER_ENGINE") or default or ("native" if available() else "python")
    if name not in ENGINES:
        raise EngineUnavailable(f"engine {name!r}: must be native or python")
    if name == "native" and not available():
        raise EngineUnavailable(
            "the native engine is not built (install it with `pip install ./native`, which needs cargo); "
            "use --engine python"
        )
    return name


def make_engine(name: str, tables: RateTables, accounts: dict[str, Account] | None = None,
                horizon: int = DEFAULT_HORIZON) -> Engine | NativeEngine:
    if name == "native":
        return NativeEngine(tables, accounts, horizon)
    return Engine(tables, accounts, horizon)


def plans_arg(tables: RateTables) -> list[tuple[str, str, list[tuple]]]:
    """The loaded rate plans as the native engine takes them: every row, parsed."""
    plans = []
    for plan in tables.plans.values():
        rows = [
            (r.call_type, r.prefix, r.rate_per_minute, r.connection_fee, r.first_increment,
             r.next_increment, r.effective_from)
            for by_prefix in plan.index.values()
            for _starts, rates in by_prefix.values()
            for r in rates
        ]
        plans.append((plan.plan_id, plan.currency, rows))
    return plans


class NativeEngine:
    """``Engine``'s interface over ``rater_native.Engine``; the accounts live natively and
    cross into Python only in their stored form (``rater/core/codec.py``)."""

    name = "native"

    def __init__(self, tables: RateTables, accounts: dict[str, Account] | None = None,
                 horizon: int = DEFAULT_HORIZON, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES):
        if rater_native is None:
            raise EngineUnavailable("the native engine is not built")
        self._tables = tables
        self.horizon = horizon
        # An i64 of microseconds (292,000 years); any longer horizon acts the same.
        clamped = max(min(horizon, 2**63 - 1), -(2**63))
        self.max_record_bytes = max_record_bytes
        self.native = rater_native.Engine(plans_arg(tables), clamped, max_record_bytes)
        self._tally = Tally()
        for acct in (accounts or {}).values():
            self.native.put_account(encode_account(acct))

    @property
    def tables(self) -> RateTables:
        return self._tables

    @tables.setter
    def tables(self, tables: RateTables) -> None:
        self._tables = tables
        self.native.set_tables(plans_arg(tables))

    def process_bytes(self, raw: bytes | None, key: str | None, source: dict[str, Any], now: int):
        """One record: (status, reason, detail, rated, events, requests, reject), outputs
        as encoded JSON."""
        (_kind, _tenant, status, reason, detail, rated, events, requests, reject,
         _has) = self.native.process(raw, key, source, now)
        return status, reason, detail, rated, events, requests, reject

    def rate_lines(self, data: bytes, path: str, first_line: int, now: int):
        return self.native.rate_lines(data, path, first_line, now)

    def account(self, tenant: str) -> Account | None:
        stored = self.native.get_account(tenant)
        return decode_account(stored) if stored is not None else None

    def accounts_dict(self) -> dict[str, Account]:
        return {t: decode_account(b) for t, b in self.native.accounts()}

    def views(self) -> dict[str, dict[str, Any]]:
        """``Engine.views``, written natively: no account is decoded into Python objects
        (its remembered ids are most of its stored form)."""
        return orjson.loads(self.native.views())

    def below_zero(self) -> list[str]:
        return self.native.below_zero()

    @property
    def tally(self) -> Tally:
        """The counts so far, in ``Tally`` form (the native counts are added in on read)."""
        d = self.native.take_tally()
        t = self._tally
        t.outcomes.update(d["outcomes"])
        t.reasons.update(d["reasons"])
        t.charged.update(d["charged"])
        t.billable.update(d["billable"])
        t.events.update(d["events"])
        t.recharge_failures.update(d["recharge_failures"])
        return t

    @tally.setter
    def tally(self, tally: Tally) -> None:
        """Count into ``tally`` from now on (the worker's metrics hand theirs in)."""
        self.native.take_tally()
        self._tally = tally


_ACCOUNT_FIELDS = tuple(f.name for f in fields(Account) if f.name != "older_seen")


class NativeBatchProcessor(BatchProcessor):
    """``BatchProcessor`` (rater/core/batch.py) on the native engine, for the Kafka worker.

    Same routing, same outputs (already encoded by the engine) and the same changed
    accounts, as Python ``Account`` objects: the worker's account cache, id segments,
    sweep and views keep working on those. Within a batch the native engine holds the
    accounts: one it does not hold is loaded through the worker's ``load`` (its cache,
    then the store) and handed over in the stored form; at the end of the batch each
    changed account is read back into the very object ``load`` returned (the cache
    holds that object), and the native engine forgets them all, so the Python objects
    stay the one copy between batches.

    That round trip costs more than the faster rating saves when a batch touches many
    accounts (measured in process, batches of 5,000: 17 against 21 µs of CPU per record
    over 1,000 tenants, but 34 against 23 µs over 10,000), so the worker runs the
    Python engine unless asked for this one (``--engine native``, ``RATER_ENGINE``).
    """

    def _engine(self, tables: RateTables, load: Callable[[str], Account | None], max_record_bytes: int):
        self.load = load
        self._loaded: dict[str, Account] = {}
        self._changed: dict[str, int] = {}
        engine = NativeEngine(tables, max_record_bytes=max_record_bytes)
        # The worker reads an account through the engine's accounts (``ReplayGuard.judged_before``).
        engine.accounts = _LoadedAccounts(self)  # type: ignore[attr-defined]
        return engine

    def _load_stored(self, tenant: str) -> bytes | None:
        acct = self.load(tenant)
        if acct is None:
            return None
        self._loaded[tenant] = acct
        return encode_account(acct)

    def _older_seen(self, tenant: str, cdr_id: str) -> bool:
        acct = self._loaded.get(tenant)
        return acct is not None and acct.older_seen is not None and acct.older_seen(acct, cdr_id)

    def begin(self) -> BatchResult:
        self.engine.native.clear_accounts()
        self._loaded.clear()
        self._changed.clear()
        return BatchResult()

    def feed(self, result: BatchResult, messages: Iterable[Message], now: int) -> None:
        process = self.engine.native.process_hosted
        load, older_seen = self._load_stored, self._older_seen
        changed = self._changed
        for msg in messages:
            if self._settled(result, msg):
                continue
            key_text = msg.key.decode("utf-8", "replace") if msg.key is not None else None
            source = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
            (_kind, tenant, status, _reason, _detail, rated, events, requests, reject,
             has_account) = process(msg.value, key_text, source, now, load, older_seen)
            tenant_key = tenant.encode() if tenant else msg.key
            self._emit(result, msg, tenant_key, outputs_of(Encoded(rated, events, requests), reject))
            result.records[(msg.topic, status)] += 1
            if (status == "applied" or events) and has_account:
                changed[tenant] = msg.partition

    def end(self, result: BatchResult) -> BatchResult:
        native = self.engine.native
        for tenant, partition in self._changed.items():
            fresh = decode_account(native.get_account(tenant))
            acct = self._loaded.get(tenant)
            if acct is None:  # created by this batch
                acct = fresh
            else:
                for name in _ACCOUNT_FIELDS:
                    setattr(acct, name, getattr(fresh, name))
            result.accounts[tenant] = (partition, acct)
        native.clear_accounts()
        self._loaded.clear()
        self._changed.clear()
        _ = self.engine.tally  # fold the batch's counts into the tally the worker reads
        return result


class _LoadedAccounts:
    """``BatchProcessor.engine.accounts`` for the native batch step: ``get`` loads through
    the worker's ``load`` (as the Python step's accounts do), within the batch."""

    def __init__(self, processor: NativeBatchProcessor):
        self._processor = processor

    def get(self, tenant: str, default: Any = None) -> Account | None:
        p = self._processor
        acct = p._loaded.get(tenant)
        if acct is None:
            acct = p.load(tenant)
            if acct is not None:
                p._loaded[tenant] = acct
        return acct if acct is not None else default
