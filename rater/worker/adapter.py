"""The one place that touches faust's and aiokafka's private names.

Seven things live here: ``BulkConsumer`` (input records in bulk, straight from faust's
aiokafka consumer), ``fetch_natively`` (those records read natively from the fetched
bytes, in place of aiokafka's ``ConsumerRecord`` per record), ``FaustPort``, the commit
pipeline's Kafka port (``rater/worker/pipeline.py``) over faust's app, its consumer and
the accounts table (and what table recovery has read, for ``rater/worker/watchdog.py``),
``keep_rocksdb_options`` (the table's RocksDB options, also on a
reopened database), ``recover_in_bulk`` (the changelog read into the table's store in
bulk before faust's recovery, ``rater/worker/catchup.py``), ``StandbysInBulk`` (the
standby partitions' changelog records written to the store a fetch at a time) and
``native_batches`` (record batches built natively, handed to aiokafka's producer in
place of its ``BatchBuilder``).

Input records in bulk
---------------------

Faust keeps what it is good at: group membership, the co-partitioned assignment of the
input topics and the ``accounts`` table, table recovery from the changelog, standbys and
the web server. What it does not do any more is deliver the input records one event at
a time: faust turns each record into a message, an event and a trip through a channel
and a stream, which caps an agent that does nothing at 3,000-5,000 events a second on
this machine (``scripts/faust_ceiling.py``), and its drain loop drops records whose
offset is below its read offset, which lost whole runs of records after a changelog
replay (``docs/fault-tests.md``).

``BulkConsumer`` is faust's own aiokafka consumer with one change: the records that
aiokafka fetched for the input topics are taken out of each fetch before faust sees
them and handed, as aiokafka returned them (a list per partition), to the worker
(``CommitPipeline.take``). Faust handles the rest of the fetch (changelog records while
recovering, standby updates) as before. Its agent on the input topics stays, so faust
still subscribes to them and assigns them with the table; it never gets an event.

The worker checks every run of records for continuity (``rater/core/continuity.py``) and
commits offsets itself, after its commit protocol; faust, which never sees these
records, acks and commits nothing for them.

Input records read natively
---------------------------

aiokafka unpacks every fetched record into a ``ConsumerRecord`` (about 1.7 µs a record,
in Python, with its CRC check): the largest cost of Kafka left in the worker's profile.
With the native engine, ``fetch_natively`` has aiokafka's fetcher keep each partition's
fetched bytes (``_KeptMemoryRecords``) and read the input topics' record batches with
``rater_native.read_fetch`` (``_FetchedRecords``): a plain batch's records are one
``rater_native.Records``, spans of the fetched bytes with no Python object per record,
and ``getall`` (``_FetchResult``, the fetcher's ``FetchResult``) hands a partition's
records out as one ``Records`` per call, as many as aiokafka's list would hold (the
fetcher counts them against ``max_records`` by ``len``), with the same position after it.
The worker hands each ``Records`` whole to ``Held.feed``, which reads it span by span; a
``rater_native.Record`` is made only where one record is read (the continuity check's
slow path, a forward, a reject that stands for a refused output). Everything else of
aiokafka's unpacking stays as it was, batch by batch: the CRC check, the transactions
(``read_committed``: aborted batches skipped, markers), the records before the fetch
offset left out, the position after each record. A batch ``read_fetch`` does not read
(compressed, an older message format, a transaction marker, not well formed, a wrong
CRC) is read by aiokafka's own ``PartitionRecords``, over that batch's bytes, with the
transaction state shared; so what a fetch yields is aiokafka's, record for record, and
its errors are aiokafka's (``tests/worker/test_fetched.py``); a call of ``getall`` that
meets such a batch hands out a list (its records and the ``Record``s of the runs around
it). The fetcher names its ``MemoryRecords``, ``PartitionRecords`` and ``FetchResult`` as
module globals, so ours are put there, for the whole process; any other topic (faust's
changelog) is read by aiokafka's ``PartitionRecords`` as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any, Awaitable, Callable, Hashable, Mapping, Optional, Sequence

import rocksdict
from aiokafka import AIOKafkaProducer
from aiokafka.consumer import fetcher as aiokafka_fetcher
from faust.streams import _current_event
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP

from rater.connection import client_kwargs
from rater.worker.catchup import CatchUp
from rater.worker.pipeline import FAILPOINT, SLOW_RECOVERY_PAUSE
from rater.worker.sending import Batches, send_all, send_outputs

try:
    import rater_native
except ImportError:  # the native engine is not built: aiokafka's BatchBuilder
    rater_native = None

BATCH_BYTES = 1 << 20  # the producer's max_batch_size

log = logging.getLogger("rater")

BulkHandler = Callable[[Mapping[Any, list], int], Awaitable[None]]
StopHandler = Callable[[], Awaitable[None]]

# How long the broker may hold a fetch that finds no new data. faust sets 1,500 ms. A fetch
# names every assigned partition without buffered records (the changelog's too, which
# have nothing new), so while the worker works through one fetch the next one sits at the
# broker for the whole wait, and the worker stalls for it when the buffer runs dry: about
# 1.5 s for every ~6,000 records in a backlog (measured). 50 ms keeps the stall short and
# costs an idle worker about 20 empty fetches a second.
FETCH_MAX_WAIT_MS = 50


_AiokafkaMemoryRecords = aiokafka_fetcher.MemoryRecords
_AiokafkaPartitionRecords = aiokafka_fetcher.PartitionRecords
_AiokafkaFetchResult = aiokafka_fetcher.FetchResult
_TRANSACTIONAL = 0x10  # a record batch's attributes
_NATIVE_TOPICS: set[str] = set()


class _KeptMemoryRecords(_AiokafkaMemoryRecords):  # type: ignore[misc, valid-type]
    """aiokafka's ``MemoryRecords``, keeping the fetched bytes for ``_FetchedRecords``."""

    def __init__(self, buffer: Any):
        super().__init__(buffer)
        self.fetched = buffer


def _partition_records(
    tp: Any,
    records: Any,
    aborted: Any,
    fetch_offset: int,
    key_deserializer: Any,
    value_deserializer: Any,
    check_crcs: bool,
    isolation_level: int,
) -> Any:
    """The fetcher's ``PartitionRecords``: ``_FetchedRecords`` for an input topic's fetched
    bytes, aiokafka's own for any other topic (faust's changelog) or a consumer that
    deserializes."""
    args = (tp, records, aborted, fetch_offset, key_deserializer, value_deserializer, check_crcs, isolation_level)
    native = tp.topic in _NATIVE_TOPICS and type(getattr(records, "fetched", None)) is bytes
    if native and key_deserializer is None and value_deserializer is None:
        return _FetchedRecords(*args)
    return _AiokafkaPartitionRecords(*args)


class _FetchedRecords(_AiokafkaPartitionRecords):  # type: ignore[misc, valid-type]
    """aiokafka's ``PartitionRecords`` reading an input topic's record batches natively
    (module docstring, "Input records read natively"). ``_unpack_records`` follows
    aiokafka's own step for step, a batch at a time, and yields a plain batch's records as
    one ``rater_native.Records``; ``take`` hands them out as ``FetchResult.getall`` would,
    in runs; ``__next__`` one record at a time, as aiokafka's iterator does."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._pending: Any = None  # the rest of a run cut by ``max_records``

    def _unpack_records(self):  # type: ignore[override]
        tp = self._tp
        fetched = self._records.fetched
        read_committed = self._isolation_level == aiokafka_fetcher.READ_COMMITTED
        for start, end, base_offset, next_offset, producer_id, attributes, records in rater_native.read_fetch(
            fetched, tp.topic, tp.partition, bool(self._check_crcs)
        ):
            if records is None:
                yield from self._by_aiokafka(fetched[start:end])
                continue
            if read_committed:  # every batch of format 2 has a producer id
                self._consume_aborted_up_to(base_offset)
                if attributes & _TRANSACTIONAL and producer_id in self._aborted_producers:
                    self.next_fetch_offset = next_offset
                    continue
            # Not the records before the fetch offset (the fetch began inside this batch).
            run = records.since(self.next_fetch_offset)
            if run:
                self.next_fetch_offset = run[-1].offset + 1
                yield run
            self.next_fetch_offset = next_offset

    def _by_aiokafka(self, batch: bytes):
        """One batch read by aiokafka, with this fetch's transaction state."""
        one = _AiokafkaPartitionRecords(
            self._tp,
            _AiokafkaMemoryRecords(batch),
            None,
            self.next_fetch_offset,
            None,
            None,
            self._check_crcs,
            self._isolation_level,
        )
        one._aborted_transactions = self._aborted_transactions
        one._aborted_producers = self._aborted_producers
        for record in one:
            self.next_fetch_offset = one.next_fetch_offset
            yield record
        self.next_fetch_offset = one.next_fetch_offset

    def take(self, max_records: Optional[int]) -> tuple[Any, bool]:
        """Up to ``max_records`` records (None: no limit), and whether the fetch has no
        more: one ``rater_native.Records`` when all were read natively, else a list (a
        batch aiokafka read among them), or ``[]``. ``next_fetch_offset`` is then where
        aiokafka's iterator would be after the last of them."""
        items: list = []
        n = 0
        exhausted = False
        while max_records is None or n < max_records:
            item, self._pending = self._pending, None
            if item is None:
                if self._records_iterator is None:
                    exhausted = True
                    break
                try:
                    item = next(self._records_iterator)
                except StopIteration:
                    self._records_iterator = None  # as aiokafka's: no reference cycle kept
                    exhausted = True
                    break
            if type(item) is rater_native.Records:
                if max_records is not None and len(item) > max_records - n:
                    item, self._pending = item[: max_records - n], item[max_records - n :]
                self.next_fetch_offset = item[-1].offset + 1  # the run's last handed out
                n += len(item)
            else:
                n += 1
            items.append(item)
        return _joined(items), exhausted

    def __next__(self) -> Any:
        records, _exhausted = self.take(1)
        if not records:
            raise StopIteration
        return records[0]


def _joined(items: list) -> Any:
    """``take``'s items (``rater_native.Records`` and aiokafka's records) as one sequence."""
    if not items:
        return []
    if all(type(item) is rater_native.Records for item in items):
        return items[0] if len(items) == 1 else rater_native.Records.join(items)
    out: list = []
    for item in items:
        if type(item) is rater_native.Records:
            out.extend(item)
        else:
            out.append(item)
    return out


class _FetchResult(_AiokafkaFetchResult):  # type: ignore[misc, valid-type]
    """aiokafka's ``FetchResult``; ``getall`` hands out a ``_FetchedRecords``' records in
    runs (``take``) where aiokafka's appends them to a list one by one."""

    def getall(self, max_records: Optional[int] = None) -> Any:
        records = self._partition_records
        if type(records) is not _FetchedRecords:
            return super().getall(max_records)
        # aiokafka's ``getall``, step for step.
        if not self.check_assignment(self._topic_partition) or not self.has_more():
            return []
        got, exhausted = records.take(max_records)
        self._update_position()
        if exhausted:
            self._partition_records = None
        return got


def fetch_natively(topics: frozenset[str]) -> bool:
    """Have aiokafka's fetcher hand ``topics``' records as ``rater_native.Records`` (module
    docstring); whether it does (the native module is built)."""
    if rater_native is None:
        return False
    _NATIVE_TOPICS.update(topics)
    aiokafka_fetcher.MemoryRecords = _KeptMemoryRecords
    aiokafka_fetcher.PartitionRecords = _partition_records
    aiokafka_fetcher.FetchResult = _FetchResult
    return True


class _Thread(AIOKafkaConsumerThread):
    def _create_consumer(self, loop):  # type: ignore[override]
        consumer = super()._create_consumer(loop)
        # Both read by start(), which builds the fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        # A platform that publishes CDRs in Kafka transactions expects an aborted one not
        # to be charged; faust reads committed records only in its exactly-once mode.
        consumer._isolation_level = "read_committed"
        return consumer


class BulkConsumer(Consumer):
    bulk_topics: frozenset[str] = frozenset()
    standbys: Optional["StandbysInBulk"] = None
    bulk_handler: Optional[BulkHandler] = None
    stop_handler: Optional[StopHandler] = None
    start_handler: Optional[Callable[[], None]] = None

    async def on_start(self) -> None:
        # faust starts the app's timers only once the first table recovery is done; the
        # consumer starts before it.
        await super().on_start()
        if self.start_handler is not None:
            self.start_handler()

    async def on_stop(self) -> None:
        # Before faust's own stop, while the group membership and the consumer thread
        # still stand: the worker commits what its finished batches reached.
        if self.stop_handler is not None:
            await self.stop_handler()
        await super().on_stop()

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _Thread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float):  # type: ignore[override]
        generation = self.app.consumer_generation_id
        records, active = await super()._wait_next_records(timeout)
        if records and not self.flow_active:
            records = await self._hand_back(records)
        if records and FAILPOINT == "stall-recovery":  # tests only: recovery never ends
            records = {tp: recs for tp, recs in records.items() if tp.topic in self.bulk_topics}
        elif records and FAILPOINT == "slow-recovery" and any(tp.topic not in self.bulk_topics for tp in records):
            await asyncio.sleep(SLOW_RECOVERY_PAUSE)  # tests only: a recovery that reads, slowly
        if records and self.flow_active and self.standbys is not None:
            records = self.standbys.take(records)
        handler = self.bulk_handler
        if records and handler is not None:
            topics = self.bulk_topics
            bulk = {tp: recs for tp, recs in records.items() if tp.topic in topics and recs}
            if bulk:
                records = {tp: recs for tp, recs in records.items() if tp.topic not in topics}
                await handler(bulk, generation)
        return records, active

    async def _hand_back(self, records: Mapping[TP, list]) -> dict[TP, list]:
        """The records of a fetch that returns while the flow is stopped (a rebalance is
        under way), less the changelog partitions', which are sought back to their first
        record so that they are fetched again.

        faust's ``getmany`` drops such a fetch and seeks the partitions that have a
        committed offset back to it; a changelog partition has none. When the table's
        recovery had already sought the partition to where it starts reading, the fetch
        consumed exactly the records recovery waits for, and it waited for ever: the hang
        of ``docs/faust-notes.md`` ("Found 2026-12-04"), reproduced about once in 27 runs of
        the two-worker test. A partition sought elsewhere since the fetch (recovery's own
        seek) is left where it is; recovery applies a record only past the offset it has
        read, so a record fetched twice is applied once."""
        spans = {tp: (recs[0].offset, recs[-1].offset) for tp, recs in records.items() if recs and tp.topic not in self.bulk_topics}
        if not spans:
            return dict(records)
        thread = self._thread
        aio = thread._ensure_consumer()

        async def seek_back() -> dict[TP, int]:  # on the consumer's thread, where recovery's seeks run too
            done = {}
            for tp, (first, last) in spans.items():
                state = _partition_state(aio, tp)
                if state is not None and state.has_valid_position and state.position == last + 1:
                    aio.seek(tp, first)
                    done[tp] = first
            return done

        try:
            done = await thread.call_thread(seek_back)
        except Exception as exc:  # the consumer is stopping or the assignment moved on: a new recovery seeks anew
            log.info("changelog records fetched during a rebalance not sought back (%s: %s)", type(exc).__name__, exc)
            done = {}
        for tp, first in done.items():  # as faust's seek_wait does, so its read-offset check lets them through
            if first > 0:
                self._read_offset[tp] = first
            else:
                self._read_offset.pop(tp, None)
        if done:
            log.info(
                "changelog records fetched during a rebalance sought back: %s",
                ", ".join(f"{tp.topic}[{tp.partition}] to {o}" for tp, o in sorted(done.items())),
            )
        return {tp: recs for tp, recs in records.items() if tp.topic in self.bulk_topics}


def _partition_state(aio: Any, tp: TP) -> Any:
    """aiokafka's state of a partition assigned to the consumer ``aio`` (its position, the
    last fetch's highwater and last stable offset, whether it is paused or awaits an offset
    reset; private fields), or None when the partition is not assigned to it. A faust TP
    equals its aiokafka TopicPartition."""
    subscription = aio._subscription.subscription if aio is not None else None
    assignment = subscription.assignment if subscription is not None else None
    return assignment.state_value(tp) if assignment is not None else None


def install(
    app: Any,
    topics: frozenset[str],
    handler: BulkHandler,
    on_start: Callable[[], None],
    on_stop: StopHandler,
    standbys: Optional["StandbysInBulk"] = None,
) -> None:
    """Make ``app`` build its consumer as a ``BulkConsumer`` feeding ``handler``, calling
    ``on_start`` once it has started (before the first rebalance and table recovery) and
    ``on_stop`` when it stops, and handing the standby changelog records to ``standbys``
    (``StandbysInBulk``; None: faust applies them). Must run before the app creates its
    consumer (that is, before it starts)."""
    cls = type(
        "RaterBulkConsumer",
        (BulkConsumer,),
        {
            "bulk_topics": topics,
            "standbys": standbys,
            "bulk_handler": staticmethod(handler),
            "start_handler": staticmethod(on_start),
            "stop_handler": staticmethod(on_stop),
        },
    )
    app.transport.Consumer = cls


def keep_rocksdb_options(table: Any) -> None:
    """Make the table's RocksDB store open every partition with the options it was given,
    also when the partition's database exists already.

    faust opens a partition with ``Rdict(path, options=...)``; rocksdict, opening a
    database that exists, sets up its column family from the database's OPTIONS file
    instead: the write buffers it was created with, and RocksDB's default block cache of
    8 MiB (a cache is not saved in that file). So from the second start on, the worker's
    block cache was not ``--rocksdb-block-cache`` and a changed ``--rocksdb-write-buffer``
    did not apply (measured: ``rocksdb.block-cache-capacity`` 8 MiB after a restart with
    16 MiB set). Naming the options for the default column family too applies them."""
    store = table.data
    options = getattr(store, "rocksdb_options", None)
    if options is None or not getattr(options, "use_rocksdict", False):
        return  # the memory store, or faust's other RocksDB binding

    def open_with_column_options(path: Any, *, read_only: bool = False) -> Any:
        opts = options.as_options()
        access = rocksdict.AccessType.read_write() if options.ttl is None else rocksdict.AccessType.with_ttl(options.ttl)
        db = rocksdict.Rdict(str(path), options=opts, column_families={"default": opts}, access_type=access)
        db.set_read_options(rocksdict.ReadOptions())
        return db

    options.open = open_with_column_options


class _ChangelogStore:
    """``catchup.ChangelogStore`` over faust's RocksDB store: its database per partition
    and the key it keeps the persisted changelog offset under (``persisted_offset``)."""

    def __init__(self, store: Any):
        self.store = store

    def persisted(self, partition: int) -> int | None:
        offset = self.store._db_for_partition(partition).get(self.store.offset_key)
        return int(offset) if offset is not None else None

    def write(self, partition: int, records: list, last_offset: int) -> None:
        wb = rocksdict.WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        wb.put(self.store.offset_key, str(last_offset).encode())
        self.store._db_for_partition(partition).write(wb)


def recover_in_bulk(app: Any, table: Any, catchup: CatchUp) -> None:
    """Have the table's store read its newly assigned active changelog partitions in bulk
    (``rater/worker/catchup.py``) once it has opened them in a rebalance, before faust's
    recovery reads the persisted offsets (``Recovery.add_active``). The memory store is
    left as it is (it holds nothing to start from), and so is a ``least`` of 0. A bulk
    read that fails is logged and leaves the rest to faust's recovery, as before."""
    store = table.data
    if catchup.least <= 0 or getattr(store, "_db_for_partition", None) is None:
        return
    opened = store.on_rebalance
    changelog = _ChangelogStore(store)

    async def end_offsets(tps: list) -> Mapping[Any, int]:
        thread = app.consumer._thread
        aio = thread._ensure_consumer()

        async def ask() -> Mapping[Any, int]:  # on the consumer's thread
            return await aio.end_offsets(tps)

        return await asyncio.wait_for(thread.call_thread(ask), 30)

    async def on_rebalance(assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0) -> None:
        await opened(assigned, revoked, newly_assigned, generation_id)
        generation = app.consumer_generation_id
        mine = table.changelog_topic.topics
        standbys = app.assignor.assigned_standbys()
        tps = [tp for tp in newly_assigned if tp.topic in mine and tp not in standbys]
        if not tps:
            return
        try:
            figures = await catchup.run(changelog, tps, end_offsets, lambda: app.consumer_generation_id == generation)
        except Exception as exc:
            log.warning("the changelog's bulk read failed (%s: %s); table recovery reads the rest", type(exc).__name__, exc)
            return
        if figures is not None:
            log.info(
                "changelog read in bulk: %d records of %d partition(s) in %.2f s%s",
                figures.records,
                figures.partitions,
                figures.seconds,
                "" if figures.complete else f"; stopped ({figures.stopped}), table recovery reads the rest",
            )

    store.on_rebalance = on_rebalance


class StandbysInBulk:
    """The standby partitions' changelog records written to the table's store in bulk, in
    place of faust's recovery loop.

    A standby partition follows the changelog as its active owner writes it. faust takes
    each of those records through the same per-record path as a recovery (a message, an
    event, an asyncio queue and a timer each: about 80 µs, ``rater/worker/catchup.py``),
    so two workers with ``--standby-replicas 1`` spent twice the rating's CPU on their
    standby copies (21.9 against 7.1 and 7.4 µs of their CPU per input record without
    standbys, ``bench/analysis.md``). ``take`` is called with each fetch the consumer hands faust
    while the flow runs; the records of the partitions faust's recovery follows as
    standbys (``Recovery.standby_tps``) are taken out and written to their partition's
    database, one atomic write batch a partition with the offset of its last record as
    the persisted offset (``_ChangelogStore``), as faust's ``apply_changelog_batch``
    writes them, records at or before the offset already applied (``standby_offsets``,
    a fetch made again after a seek) left out as faust leaves them out. Recovery's
    ``standby_offsets`` move with them, so its standby figures stay right. A partition
    that becomes active here starts its recovery from the persisted offset, as before."""

    def __init__(self, app: Any, table: Any):
        self.app = app
        self.changelog = _ChangelogStore(table.data)
        self.applied = 0  # records written since the start

    def take(self, records: Mapping[TP, list]) -> Mapping[TP, list]:
        recovery = self.app.tables.recovery
        standby = recovery.standby_tps
        if not standby or not any(tp in standby for tp in records):
            return records
        offsets = recovery.standby_offsets
        rest = {}
        for tp, recs in records.items():
            if tp not in standby:
                rest[tp] = recs
                continue
            seen = offsets.get(tp)
            if seen is not None:
                recs = [r for r in recs if r.offset > seen]
            if recs:
                self.changelog.write(tp.partition, [(r.key, r.value) for r in recs if r.key is not None], recs[-1].offset)
                offsets[tp] = recs[-1].offset
                self.applied += len(recs)
        return rest


def standbys_in_bulk(app: Any, table: Any) -> StandbysInBulk | None:
    """``StandbysInBulk`` for the table's RocksDB store; None for the memory store."""
    if getattr(table.data, "_db_for_partition", None) is None:
        return None
    return StandbysInBulk(app, table)


class _NativeBatch:
    """A record batch built by ``rater_native.partition_batches``, in place of aiokafka's
    ``BatchBuilder`` in ``producer.send_batch``: what its accumulator and sender ask of a
    builder. The producer sets its id, epoch and sequence number before the first
    ``_build`` (an idempotent producer); the bytes are built once, as aiokafka's are."""

    __slots__ = ("_batch", "_state", "_buffer")

    def __init__(self, batch: Any):
        self._batch = batch
        self._state = (-1, -1, 0)  # BatchBuilder's, for a producer that is not idempotent
        self._buffer: bytes | None = None

    def record_count(self) -> int:
        return self._batch.count()

    def size(self) -> int:
        return len(self._buffer) if self._buffer is not None else self._batch.size()

    def closed(self) -> bool:
        return True  # nothing is appended to it after send_batch

    def close(self) -> None:
        pass

    def append(self, **_record: Any) -> None:
        return None  # full: a send() after send_batch starts a batch of its own

    def _set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        self._state = (producer_id, producer_epoch, base_sequence)

    def _build(self) -> bytes:
        if self._buffer is None:
            self._buffer = self._batch.finish(*self._state)
        return self._buffer


def _native_batches(records: list, counts: dict[str, int], outputs: Sequence = ()) -> tuple[list, list[str]]:
    """``sending.Batches`` natively: the records, then the outputs (a native
    ``BatchOutputs`` read in place), partitioned and built into record batches of at most
    ``BATCH_BYTES``, every record stamped with the time now (aiokafka stamps each as it
    is appended)."""
    stamp = int(time.time() * 1000)
    groups, missing = rater_native.partition_batches(records, counts, BATCH_BYTES, stamp, outputs or None)
    return [(topic, partition, [_NativeBatch(b) for b in built]) for topic, partition, built in groups], missing


native_batches: Batches | None = _native_batches if rater_native is not None else None


class _PartitionEvent:
    """Stands in for ``faust.current_event()`` so the RocksDB store writes a key into the
    database of the key's partition (faust's store reads the partition from the event)."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, topic: str, partition: int):
        self.message = _Msg(topic, partition)


class _Msg:
    __slots__ = ("topic", "partition")

    def __init__(self, topic: str, partition: int):
        self.topic = topic
        self.partition = partition


class FaustPort:
    """The commit pipeline's Kafka port over faust: the consumer (offsets, seeks,
    commits), a producer of its own (acks=all, idempotent) and the accounts table."""

    def __init__(self, app: Any, table: Any, inputs: frozenset[str], settings: Any):
        self.app = app
        self.table = table
        self.inputs = inputs
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None
        self.changelog = table.changelog_topic.get_topic_name()

    # --- the consumer ---------------------------------------------------------------------

    def tp(self, topic: str, partition: int) -> TP:
        return TP(topic, partition)

    def fetch_is_current(self, generation: int) -> bool:
        return bool(self.app.consumer.flow_active) and generation == self.app.consumer_generation_id

    def active(self) -> set[TP]:
        try:
            return {tp for tp in self.app.assignor.assigned_actives() if tp.topic in self.inputs}
        except Exception:
            return set()

    def highwater(self, tp: TP) -> int | None:
        try:
            return self.app.consumer.highwater(tp)
        except Exception:
            return None

    async def seek(self, seeks: dict[TP, int]) -> None:
        await self.app.consumer.seek_wait(seeks)

    def recovery_progress(self) -> Hashable:
        """What moves while a rebalance and the table's recovery go on: the group
        generation and the changelog offsets read (``rater/worker/watchdog.py``)."""
        offsets = self.app.tables.recovery.active_offsets
        return self.app.consumer_generation_id, tuple(sorted((tp.topic, tp.partition, offsets[tp]) for tp in offsets))

    def recovery_behind(self) -> list[str]:
        """The changelog partitions recovery still waits for, each with how far it read and
        its fetch state, as text: for the stall's exit line only."""
        recovery = self.app.tables.recovery
        offsets = recovery.active_offsets
        behind = []
        for tp, remaining in sorted(recovery.active_remaining().items()):
            if remaining > 0:
                where = f"{tp.topic}[{tp.partition}] read to offset {offsets[tp]} of {recovery.active_highwaters[tp]}"
                behind.append(f"{where} ({self._fetch_state(tp)})")
        return behind

    def _fetch_state(self, tp: TP) -> str:
        """Why a partition's records may not be coming, as faust and aiokafka see it (their
        private fields, read from this thread without a lock: for the stall's log line only)."""
        try:
            consumer = self.app.consumer
            if tp in consumer._paused_partitions:
                asked = "paused by faust"
            elif tp in (consumer._active_partitions or ()):
                asked = "asked for by faust"
            else:
                asked = "not asked for by faust"
            aio = consumer._thread._consumer
            state = _partition_state(aio, tp)
            if state is None:
                return f"{asked}; not assigned to the consumer"
            parts = [asked, f"consumer at {state.position if state.has_valid_position else 'no position'}"]
            parts.append(f"last fetch: highwater {state.highwater}, last stable offset {state.lso}")
            if state.paused:
                parts.append("paused in the consumer")
            if state.awaiting_reset:
                parts.append("awaiting an offset reset")
            if tp in aio._fetcher._records:
                parts.append("a fetched batch not yet taken")
            return "; ".join(parts)
        except Exception as exc:  # a field renamed in a newer faust or aiokafka: the line still goes out
            return f"fetch state unknown: {type(exc).__name__}"

    def committed(self) -> Mapping[TP, int]:
        return getattr(self.app.consumer, "_committed_offset", {})

    async def commit(self, offsets: dict[TP, int]) -> None:
        await self.app.consumer._commit_offsets(offsets, start_new_transaction=False)

    async def start_offsets(self, tps: list[TP]) -> dict[TP, int]:
        """Where newly assigned partitions start: the committed offset, else the log start,
        asked of the broker in one go (a partition it does not answer for is left out)."""
        thread = self.app.consumer._thread
        aio = thread._ensure_consumer()

        async def ask() -> dict[TP, int]:  # runs on the consumer's thread
            committed = await asyncio.gather(*(aio.committed(tp) for tp in tps))
            out = {tp: c for tp, c in zip(tps, committed) if c is not None}
            fresh = [tp for tp in tps if tp not in out]
            if fresh:
                out.update(await aio.beginning_offsets(fresh))
            return out

        try:
            return await asyncio.wait_for(thread.call_thread(ask), 15)
        except Exception as exc:  # the coordinator is moving; the records are fetched again
            log.warning("no committed offsets from the broker for %d partition(s) (%s); fetching again", len(tps), type(exc).__name__)
            return {}

    # --- the producer -----------------------------------------------------------------------

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            producer = AIOKafkaProducer(
                **client_kwargs(self.settings),
                acks="all",
                enable_idempotence=True,
                linger_ms=0,
                max_batch_size=BATCH_BYTES,
                max_request_size=8 << 20,
            )
            await producer.start()
            self.producer = producer
        return self.producer

    async def produce(self, records: list, outputs: Sequence, replace: Callable[[int], Any]) -> None:
        """Step 3's writes, acknowledged; one Kafka refuses for its size is replaced."""

        async def one_by_one() -> AIOKafkaProducer:
            plain = AIOKafkaProducer(**client_kwargs(self.settings), acks="all", linger_ms=0, max_request_size=8 << 20)
            await plain.start()
            return plain

        producer = await self._producer()
        if not await send_outputs(producer, records, outputs, one_by_one, replace, native_batches):
            self.producer = None  # its sequence numbers are broken by the refused batch
            await producer.stop()

    # --- the accounts table -------------------------------------------------------------------

    def table_get(self, partition: int, key: bytes) -> bytes | None:
        store = self.table.data
        db_for = getattr(store, "_db_for_partition", None)
        return db_for(partition).get(key) if db_for is not None else store.get(key)

    def table_items(self, owned: set[int]):
        """(key, value) of every record of the owned partitions (the memory store: all).

        A scan of everything (the tenant index, after a rebalance or a start) reads past
        RocksDB's block cache: filled by it, the caches held every account's block
        afterwards (49 MiB per 100,000 accounts, measured), blocks no batch asked for."""
        store = self.table.data
        dbs = getattr(store, "_dbs", None)
        if dbs is not None:
            scan = rocksdict.ReadOptions()
            scan.fill_cache(False)
            return ((k, v) for p, db in list(dbs.items()) if p in owned for k, v in db.items(read_opt=scan))
        return list(store.items())

    def flush_store(self, least: int) -> int:
        """Each open partition's write buffers flushed, where they hold at least ``least``
        bytes (``heaptrim``: the worker has gone quiet); the number flushed. Blocks until
        the flushes are done (RocksDB lets go of the GIL meanwhile: the worker runs it on
        a thread). A flush writes to the partition's files what its log already holds: no
        value changes, and the buffers' memory is freed. The memory store: nothing."""
        dbs = getattr(self.table.data, "_dbs", None)
        if dbs is None:
            return 0
        flushed = 0
        for db in list(dbs.values()):
            if (db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0) >= least:
                db.flush(True)
                flushed += 1
        return flushed

    async def deliver(self, records: list) -> None:
        """Step 4 for some records: onto the changelog, acknowledged (the store's changelog
        offsets advance only with Kafka's acknowledgement, as faust's own table writes do,
        ``Table._on_changelog_sent``); then into the local store with the changelog
        offset it has reached, one atomic write per partition. The local store is
        therefore never ahead of the changelog: after a crash between the two, faust's
        recovery reads the changelog from the older offset and writes the same values."""
        delivery = await send_all(await self._producer(), records, native_batches)
        store = self.table.data
        db_for = getattr(store, "_db_for_partition", None)
        if db_for is None:  # the memory store
            changelog = records[0][0]
            for _topic, partition, key, value, _headers in records:
                _store_put(store, changelog, partition, key, value)
            for (topic, partition), offset in delivery.last_offset.items():
                store.set_persisted_offset(TP(topic, partition), offset)
            return

        batches: dict[int, Any] = {}
        for _topic, partition, key, value, _headers in records:
            wb = batches.get(partition)
            if wb is None:
                wb = batches[partition] = rocksdict.WriteBatch(raw_mode=True)
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        for (_topic, partition), offset in delivery.last_offset.items():
            batches[partition].put(store.offset_key, str(offset).encode())
        for partition, wb in batches.items():
            db_for(partition).write(wb)


def _store_put(store: Any, changelog: str, partition: int, key: bytes, value: bytes | None) -> None:
    if value is None:
        try:
            del store[key]
        except KeyError:
            pass
        return
    ctx = _PartitionEvent(changelog, partition)
    token = _current_event.set(weakref.ref(ctx))
    try:
        store[key] = value
    finally:
        _current_event.reset(token)
