"""One batch of Kafka input records to its outputs, without Kafka (the worker's core step).

``BatchProcessor.process(messages, now)`` takes the records the worker consumed, in
order, and returns what the worker must do with them:

- ``forwards``: records that arrived on the wrong partition for their tenant (SPEC 2),
  to be produced again onto the right one; nothing else happens to them here;
- ``outputs``: rated CDRs, balance events, recharge requests and rejects, in order;
- ``accounts``: every account the batch changed, once, with its partition.

The worker writes them in the order of its commit protocol (``rater/worker/app.py``). Kept
free of Kafka and Faust so that the batching and routing rules are tested directly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import orjson

from rater.core.bounds import DEFAULT_MAX_RECORD_BYTES, MAX_OUTPUT_BYTES, output_too_large_detail
from rater.core.engine import Engine, reject_record
from rater.core.ledger import Account, Outcome
from rater.core.partitioning import partition_for
from rater.core.rates import RateTables
from rater.core.records import TENANT_RE
from rater.core.routing import outputs_of

_TENANT_PROBE = b'"tenant_id"'


@dataclass(slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class Topics:
    cdrs: str = "cdrs"
    commands: str = "tenant-commands"
    rated: str = "rated-cdrs"
    events: str = "balance-events"
    requests: str = "recharge-requests"
    rejects: str = "rater-rejects"


@dataclass(slots=True)
class BatchResult:
    forwards: list[tuple[Message, int, bytes]] = field(default_factory=list)  # msg, partition, key
    # topic, key, value (the native step's: a ``rater_native.BatchOutputs``, the same sequence)
    outputs: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    # the input record of each output (the native step's: a ``rater_native.Origins``, the same sequence)
    origins: list[Message] = field(default_factory=list)
    accounts: dict[str, tuple[int, Account]] = field(default_factory=dict)
    records: Counter = field(default_factory=Counter)  # (topic, outcome)
    skipped: int = 0  # records ``judged`` said were judged before (a replay): nothing done


class BatchProcessor:
    def __init__(
        self,
        tables: RateTables,
        partitions: int,
        topics: Topics,
        load: Callable[[str], Account | None],
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
    ):
        self.partitions = partitions
        self.topics = topics
        self.max_output_bytes = max_output_bytes
        self.engine = self._engine(tables, load, max_record_bytes)
        # The worker's question for a record that names a tenant, while it replays a batch
        # whose accounts were partly written (``rater/core/applied.py``): was this record
        # judged before? Then it is skipped: no outputs, no account change.
        self.judged: Callable[[Message, bytes], bool] | None = None

    def _engine(self, tables: RateTables, load: Callable[[str], Account | None], max_record_bytes: int) -> Engine:
        return Engine(tables, _Accounts(load), max_record_bytes=max_record_bytes)

    @property
    def tables(self) -> RateTables:
        return self.engine.tables

    @tables.setter
    def tables(self, tables: RateTables) -> None:
        self.engine.tables = tables

    def home_partition(self, msg: Message) -> tuple[int, bytes] | None:
        """The partition the record belongs on, and its tenant key; None when the value
        cannot name a tenant (it is rejected where it is)."""
        key = msg.key
        if key:
            return partition_for(key, self.partitions), key  # lru_cache'd (rater/core/partitioning.py)
        value = msg.value
        if not value or len(value) > self.engine.max_record_bytes or _TENANT_PROBE not in value:
            return None  # too large: rejected where it is, never decoded
        try:
            tenant = orjson.loads(value).get("tenant_id")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        if not isinstance(tenant, str) or not tenant:
            return None
        key = tenant.encode()
        return partition_for(key, self.partitions), key

    def process(self, messages: Iterable[Message], now: int) -> BatchResult:
        result = self.begin()
        self.feed(result, messages, now)
        return self.end(result)

    # ``process`` in parts, for a caller that does other work between them (the worker
    # lets the previous batch's writes go on): ``begin``, ``feed`` any number of times
    # with the messages in order, ``end``. The result is the same as one ``process``.

    def begin(self) -> BatchResult:
        self.engine.accounts.begin()  # type: ignore[attr-defined]
        return BatchResult()

    def end(self, result: BatchResult) -> BatchResult:
        self.engine.accounts.end()  # type: ignore[attr-defined]
        return result

    def feed(self, result: BatchResult, messages: Iterable[Message], now: int) -> None:
        dumps = orjson.dumps
        for msg in messages:
            if self._settled(result, msg):
                continue
            key_text = None
            if msg.key is not None:
                key_text = msg.key.decode("utf-8", "replace")
            source = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
            p = self.engine.process(msg.value, key_text, source, now)
            o: Outcome = p.outcome
            tenant_key = p.tenant_id.encode() if p.tenant_id else msg.key
            self._emit(result, msg, tenant_key, [(kind, dumps(body)) for kind, body in outputs_of(o, p.reject)])
            result.records[(msg.topic, o.status)] += 1
            if (o.status == "applied" or o.events) and o.account is not None:
                result.accounts[o.account.tenant_id] = (msg.partition, o.account)

    # The steps every batch processor shares (``NativeBatchProcessor`` too).

    def _settled(self, result: BatchResult, msg: Message) -> bool:
        """A record on the wrong partition is forwarded, one judged before a crash skipped
        (``judged``): True when that is all there is to do with ``msg``."""
        home = self.home_partition(msg)
        if home is not None and home[0] != msg.partition:
            result.forwards.append((msg, home[0], home[1]))
            result.records[(msg.topic, "forwarded")] += 1
            return True
        if self.judged is not None and home is not None and self.judged(msg, home[1]):
            result.skipped += 1
            return True
        return False

    def _emit(self, result: BatchResult, msg: Message, tenant_key: bytes | None, encoded: Iterable[tuple[str, bytes]]) -> None:
        """The encoded outputs of ``msg`` (kind, bytes; ``rater/core/routing.py``) onto their
        topics, rejects keyed as the input was; one over the size bound is replaced by its reject."""
        t = self.topics
        out = result.outputs
        first = len(out)
        for kind, value in encoded:
            out.append((getattr(t, kind), msg.key if kind == "rejects" else tenant_key, value))
        for i in range(first, len(out)):
            result.origins.append(msg)
            if len(out[i][2]) > self.max_output_bytes:  # never sent: the broker would refuse it
                out[i] = self.output_refused(msg, out[i][0], len(out[i][2]), self.max_output_bytes)

    def output_refused(self, msg: Message, topic: str, size: int, limit: int | None) -> tuple[str, bytes | None, bytes]:
        """The reject (topic, key, value) that stands in for an output of ``msg`` too large
        to write: over ``limit``, or refused by the broker (``limit`` None). What the
        record did to its account stands: a call that happened is charged (SPEC 6)."""
        key_text = msg.key.decode("utf-8", "replace") if msg.key is not None else None
        tenant = key_text if key_text is not None and TENANT_RE.fullmatch(key_text) else None
        source = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
        detail = output_too_large_detail(topic, size, limit)
        reject = reject_record("invalid_record", detail, msg.value or b"", source, tenant)
        return self.topics.rejects, msg.key, orjson.dumps(reject)


class _Accounts(dict):
    """The engine's account dict for one batch: filled from the store on first use."""

    def __init__(self, load: Callable[[str], Account | None]):
        super().__init__()
        self._load = load

    def begin(self) -> None:
        self.clear()

    def end(self) -> None:
        self.clear()

    def get(self, tenant: str, default: Any = None) -> Account | None:  # type: ignore[override]
        try:
            return self[tenant]
        except KeyError:
            acct = self._load(tenant)
            if acct is not None:
                self[tenant] = acct
            return acct
