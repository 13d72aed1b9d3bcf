"""The native engine: the rating core in Rust (``native/``, the ``rater_native`` module),
behind the same interface as the Python ``Engine`` (``rater/core/engine.py``).

The Python core stays the reference: ``tests/core/test_native_diff.py`` feeds both engines
the same records and compares their outputs and accounts byte for byte. Which engine
runs is ``--engine native|python`` (or ``RATER_ENGINE``); by default, for ``rater rate``
and the worker, the native one when the extension is built, else the Python one
(``choose``).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

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
    when built."""
    name = name or os.environ.get("RATER_ENGINE") or default or ("native" if available() else "python")
    if name not in ENGINES:
        raise EngineUnavailable(f"engine {name!r}: must be native or python")
    if name == "native" and not available():
        raise EngineUnavailable(
            "the native engine is not built (install it with `pip install ./native`, which needs cargo); use --engine python"
        )
    return name


def make_engine(
    name: str, tables: RateTables, accounts: dict[str, Account] | None = None, horizon: int = DEFAULT_HORIZON
) -> Engine | NativeEngine:
    if name == "native":
        return NativeEngine(tables, accounts, horizon)
    return Engine(tables, accounts, horizon)


def plans_arg(tables: RateTables) -> list[tuple[str, str, list[tuple]]]:
    """The loaded rate plans as the native engine takes them: every row, parsed."""
    plans = []
    for plan in tables.plans.values():
        rows = [
            (r.call_type, r.prefix, r.rate_per_minute, r.connection_fee, r.first_increment, r.next_increment, r.effective_from)
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

    def __init__(
        self,
        tables: RateTables,
        accounts: dict[str, Account] | None = None,
        horizon: int = DEFAULT_HORIZON,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ):
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
        (_kind, _tenant, status, reason, detail, rated, events, requests, reject, _has) = self.native.process(raw, key, source, now)
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

    def balances_json(self) -> bytes:
        """``Engine.balances_json``, indented natively (the same bytes)."""
        return self.native.balances_json()

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


class NativeBatchProcessor(BatchProcessor):
    """``BatchProcessor`` (rater/core/batch.py) on the native engine, for the Kafka worker.

    Same routing and the same outputs (already encoded by the engine), rated against the
    accounts the worker's ``NativeAccountStore`` (rater/worker/store.py) holds natively
    between batches (``store.held``, a ``rater_native.Held``): the 4th argument is that
    store, where the Python step takes its ``load``. An account not held is read from the
    store by the native side; the accounts the batch changed stay there, noted, and the
    store's ``plan`` hands back their changelog values as bytes. So ``result.accounts``
    stays empty: no Python ``Account`` crosses per record or per account.
    """

    def _engine(self, tables: RateTables, store: Any, max_record_bytes: int):  # type: ignore[override]
        self.held = store.held
        engine = NativeEngine(tables, max_record_bytes=max_record_bytes)
        # The worker reads an account through the engine's accounts (``ReplayGuard.judged_before``).
        engine.accounts = _HeldAccounts(self)  # type: ignore[attr-defined]
        return engine

    def begin(self) -> BatchResult:
        """A batch starts; its outputs are held natively (``rater_native.BatchOutputs``, a
        sequence of ``(topic, key, value)`` to Python) until their record batches
        (``rater/worker/sending.py``), and the input record of each
        (``rater_native.Origins``: a record of a ``rater_native.Records`` noted by its
        place, made into an object only if it is read)."""
        self.held.begin(self.engine.native)
        t = self.topics
        outputs = rater_native.BatchOutputs((t.rated, t.events, t.requests, t.rejects))
        return BatchResult(outputs=outputs, origins=rater_native.Origins())

    def feed(self, result: BatchResult, messages: Iterable[Message], now: int) -> None:
        """The messages in one native call (``Held.feed``, native/src/pyheld.rs and
        native/src/feed.rs): homing and forwarding, the worker's replay check (step 1c),
        rating, the outputs routed and keyed, the counts; only an output over the size
        bound is replaced here.

        The replay check runs natively when ``judged`` is the worker's
        (``rater.worker.replay.Judged`` over this step's own accounts): ``Held.feed``
        reads its ``ReplayGuard``'s ``suspect`` and ``judged_in`` dicts per record. Any
        other ``judged`` is asked record by record, as the Python step does it."""
        judged = self.judged
        replay = None
        if judged is not None:
            guard = getattr(judged, "guard", None)
            if guard is None or getattr(judged, "accounts", None) is not self.engine.accounts:
                self._feed_each(result, messages, now)
                return
            replay = (guard.suspect, guard.judged_in)
        out = result.outputs
        limit = self.max_output_bytes
        oversized: list[int] = []
        try:
            self.held.feed(
                self.engine.native,
                messages,
                now,
                self.partitions,
                limit,
                out,
                result.origins,
                result.forwards,
                result.records,
                oversized,
                replay,
                result,
            )
        finally:  # also the records before an exception, as the per-record step leaves them
            for i in oversized:  # never sent: the broker would refuse it
                out[i] = self.output_refused(result.origins[i], out[i][0], len(out[i][2]), limit)

    def _feed_each(self, result: BatchResult, messages: Iterable[Message], now: int) -> None:
        """Record by record, for a ``judged`` that is not the worker's replay check."""
        process = self.held.process
        native = self.engine.native
        for msg in messages:
            if self._settled(result, msg):
                continue
            key_text = msg.key.decode("utf-8", "replace") if msg.key is not None else None
            (_kind, tenant, status, _reason, _detail, rated, events, requests, reject, _has_account) = process(
                native, msg.value, key_text, msg.topic, msg.partition, msg.offset, now
            )
            tenant_key = tenant.encode() if tenant else msg.key
            self._emit(result, msg, tenant_key, outputs_of(Encoded(rated, events, requests), reject))
            result.records[(msg.topic, status)] += 1

    def end(self, result: BatchResult) -> BatchResult:
        self.held.end_batch(self.engine.native)
        _ = self.engine.tally  # fold the batch's counts into the tally the worker reads
        return result


class _HeldAccounts:
    """``BatchProcessor.engine.accounts`` for the native batch step: ``get`` makes the
    store read the account if it is not held (as the Python step's accounts do); what it
    returns says only whether there is one."""

    def __init__(self, processor: NativeBatchProcessor):
        self._processor = processor

    def get(self, tenant: str, default: Any = None) -> Any:
        p = self._processor
        return True if p.held.hold(p.engine.native, tenant) else default
