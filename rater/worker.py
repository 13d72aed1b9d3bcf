"""``rater worker``: the core driven by Kafka, in a faust-streaming app.

Faust runs the group membership, the co-partitioned assignment of both input topics
(``cdrs`` and ``tenant-commands``) with the ``accounts`` table, table recovery, standbys
and the web views. The input records themselves come to ``take`` in bulk, straight from
faust's aiokafka consumer (``rater/intake.py``), and go through the commit protocol:

Commit protocol of one batch (``take``, ``handle_batch``, ``_finish``)
---------------------------------------------------------------------
1. Take the input records of one fetch under the lock (a rebalance waits for it); drop
   the fetch if a rebalance began since; check each partition's run of offsets against
   the next expected one (``rater/offsets.py``): already-applied records are dropped, a
   hole is sought back over and fetched again.
   1b. A partition newly assigned starts at its committed offset, or after its applied
   mark (step 4C) if that is further (``_resume_at``): those records were judged, and
   their outputs and accounts are durable.
   1c. Up to the partition's end at that start, a record whose tenant's stored account
   was written by a batch that had judged the record (the account's ``"in"`` offsets,
   step 4B) is skipped (``_judged_before``): a crash inside step 4 wrote that account and
   not the mark.
2. Apply: ``BatchProcessor`` routes, decodes, validates and applies the records to the
   accounts (cached, in flight, or read from the table), in memory; then every write of
   steps 3 and 4 is made into bytes (``_writes``). Nothing has been written. The batch is
   handed to its task (``_finish``) once the previous batch's task has finished: steps 3
   to 5 of batch n run while batch n+1 goes through step 2, and Kafka and the store see
   the writes of one batch after the other, in order. Until batch n's step 4 is done,
   batch n+1 reads what batch n writes (the cache, ``rater/inflight.py``).
3. Produce the outputs (rated CDRs, balance events, recharge requests, rejects) and the
   misrouted records forwarded to their partition, and wait until Kafka has acknowledged
   every one (``acks=all``).
4. A: id segments (``rater/idstore.py``), acknowledged. B: each changed account once
   onto the table's changelog topic, one record per account holding its balance, lots,
   the ids it has applied *and* the batch's last offsets of its partition. C, sent with B
   and after the accounts of its partition: each input partition's applied mark, the
   batch's last offset there (``rater/applied.py``). Wait for every acknowledgement; then
   write the same values and the changelog offset into the local store, one atomic batch
   per partition.
5. Commit the batch's offsets (``_commit_positions``: after a batch at most once a
   second, on a 1 s timer, and on revocation). Only offsets whose step 4 is done.

A crash before 3 completes: nothing is committed; the batch is consumed again from the
same state and gives the same outputs, with the same ids. Between 3 and 4: outputs are
out, the state is not; the replay applies the records again from the old state and writes
the same outputs again (same ids, same content: consumers drop repeats; only a record
near the 24-hour future limit depends on the clock, ``docs/crash-safety.md``). Inside 4, after
an acknowledgement and before the local write: faust's recovery brings the local store
up to the changelog. Inside 4B, some accounts of a partition written and no mark: their
tenants' records are skipped (1c), the others applied again from the old state. Between
4 and 5: state is saved, offsets are not; the worker resumes
after the applied mark and judges none of the batch's records again (outputs were written
in 3): a rejected record would otherwise be judged against the state its own batch left
(an account created after it, a request made after its answer, a later clock). After 5:
done.
So each debit lands exactly once in the account, and each output is written at least
once with a stable id. Any exception ends the process, so no half-done batch is followed
by another (the batch rated meanwhile was not handed over, and is replayed too). The
argument in full, with the tests that exercise it, is in ``docs/crash-safety.md``.

The wall-clock sweep (``RaterWorker.sweep``) follows steps 2 to 4 for the accounts with
lots due to expire or a recharge request due to time out; the lock, and waiting for the
batch in flight, keep it from interleaving with a batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import faust
import orjson
from aiokafka import AIOKafkaProducer
from faust.exceptions import SameNode
from faust.streams import _current_event
from faust.types import TP
from prometheus_client.registry import CollectorRegistry

from . import applied, gctune, intake, ledger, web
from .batch import BatchProcessor, BatchResult, Message, Topics
from .native_engine import NativeBatchProcessor
from .native_engine import choose as choose_engine
from .config import WorkerConfig
from .idstore import SEP as SEGMENT_SEP
from .idstore import IdSegments, is_segment_key
from .inflight import InFlight
from .metrics import WorkerStats, tenant_state
from .offsets import Continuity
from .partitioning import partition_for
from .rates import RateTables, check_rate_tables
from .records import TENANT_RE
from .sending import send_all, send_outputs
from .state import decode_account, decode_judged, encode_account

log = logging.getLogger("rater")

COMMIT_EVERY = 1.0  # seconds between offset commits of finished batches
# Records applied between two looks at the event loop while the previous batch is being
# written (about 8 ms of rating): its acknowledgements are read, and its next step sent,
# without waiting for the whole of the next batch.
YIELD_EVERY = 100
_DEBUG_BATCHES = bool(os.environ.get("RATER_DEBUG_BATCHES"))
# Fault injection for the crash tests (``tests/test_replay.py``): ``after-step-4`` ends the
# process right after the first input batch's step 4, before its offsets can be committed;
# ``inside-step-4`` ends it after the first account record of that batch is on the
# changelog and in the store, before the others and the applied marks (a SIGKILL at exactly
# that moment). Never set in production.
_FAILPOINT = os.environ.get("RATER_FAILPOINT", "")
# Per partition database. faust's defaults are 3 write buffers of 64 MiB and a 2 GiB block
# cache for *each* partition, so RSS grows with write volume up to gigabytes; these bound a
# worker's RocksDB memory to about 8 x (2 x 8 + 16) MiB with 8 partitions. Accounts are
# read from the worker's own cache first, so the block cache only serves cache misses.
ROCKSDB_OPTIONS = {"write_buffer_size": 8 << 20, "max_write_buffer_number": 2, "block_cache_size": 16 << 20}


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


def _ssl_context(cfg: WorkerConfig) -> ssl.SSLContext | None:
    if cfg.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(cafile=cfg.ssl_cafile)
    if cfg.ssl_certfile:
        ctx.load_cert_chain(cfg.ssl_certfile, cfg.ssl_keyfile)
    return ctx


def broker_credentials(cfg: WorkerConfig) -> Any:
    ctx = _ssl_context(cfg)
    if cfg.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=cfg.sasl_username, password=cfg.sasl_password,
            mechanism=cfg.sasl_mechanism, ssl_context=ctx,
        )  # fmt: skip
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


@dataclass(slots=True, eq=False)
class _Writes:
    """One batch's writes, worked out in memory; ``RaterWorker._finish`` carries them out."""

    produce: list = field(default_factory=list)  # step 3: outputs and forwards (send_all records)
    origins: list = field(default_factory=list)  # the input Message of each produce record (None: the sweep's)
    segments: list = field(default_factory=list)  # step 4, phase A: id segments
    accounts: list = field(default_factory=list)  # step 4, phase B: the changed accounts
    positions: dict = field(default_factory=dict)  # (topic, partition) -> last offset
    records: Counter = field(default_factory=Counter)
    messages: int = 0
    arrived: float = 0.0
    t0: float = 0.0
    t1: float = 0.0
    handed: float = 0.0
    ages: tuple = (0, 0)  # ms, the newest and the oldest record at the start (RATER_DEBUG_BATCHES)


class RaterWorker:
    def __init__(self, cfg: WorkerConfig, tables: RateTables):
        self.cfg = cfg
        self.registry = CollectorRegistry(auto_describe=True)
        self.stats = WorkerStats(self.registry)
        self.stats.rate_tables_version = tables.version
        self.stats.rate_tables_loaded_at = time.time()
        self.app = self._build_app()
        intake.install(self.app, frozenset((cfg.topics.cdrs, cfg.topics.commands)), self.take, self.on_stop)
        # The rating core, both behind BatchProcessor's interface: the Python one unless
        # the native one is asked for (why: NativeBatchProcessor, rater/native_engine.py).
        self.engine_name = choose_engine(cfg.engine, default="python")
        processor_class = NativeBatchProcessor if self.engine_name == "native" else BatchProcessor
        self.processor = processor_class(tables, cfg.partitions, cfg.topics, self._load,
                                         max_record_bytes=cfg.max_record_bytes)  # fmt: skip
        self.processor.engine.tally = self.stats.tally
        self.lock = asyncio.Lock()
        self.due: dict[str, int] = {}  # tenant -> wall time (µs) its next sweep is due
        self.positions: dict[tuple[str, int], int] = {}  # last offset processed
        self.cache: dict[str, tuple[ledger.Account, dict]] = {}  # tenant -> (account, its durable ids)
        self.continuity = Continuity()
        # Input partitions that may hold records a crashed batch judged and partly wrote
        # (step 1c): (topic, partition) -> (first, last) offsets where a record may be one.
        self.suspect: dict[tuple[str, int], tuple[int, int]] = {}
        self.judged_in: dict[str, dict] = {}  # tenant -> offsets its stored value was judged through, if suspect
        self.generation = -1
        self.rescan = True
        self.last_commit = 0.0
        self.durable: dict[str, dict] = {}
        self.segments = IdSegments(self._get_raw)
        self.in_flight = InFlight()  # table records of the batch being written (rater/inflight.py)
        self.finishing: asyncio.Future | None = None  # that batch's steps 3 to 5
        self.producer: AIOKafkaProducer | None = None
        self.reload_requested = False
        self._rates_signature = self._signature()
        self._register()

    # --- the app ---------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        cfg = self.cfg
        host = cfg.advertised_host or cfg.web_host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        app = faust.App(
            cfg.app_id,
            broker=[f"kafka://{b.strip()}" for b in cfg.broker.split(",")],
            broker_credentials=broker_credentials(cfg),
            store="rocksdb://" if cfg.store == "rocksdb" else "memory://",
            datadir=cfg.state_dir,
            topic_partitions=cfg.partitions,
            topic_replication_factor=cfg.replication,
            topic_allow_declare=True,
            table_standby_replicas=cfg.standby_replicas,
            producer_acks=-1,
            consumer_auto_offset_reset="earliest",
            web_enabled=True,
            # Faust's own views (/router, /table/<name>/<key>/, /graph, /stats) would show
            # raw table data and internals to anyone who reaches the port: only ours are served.
            web_router_enabled=False, web_tables_enabled=False, web_graph_enabled=False, web_stats_enabled=False,
            web_bind=cfg.web_host,
            web_port=cfg.web_port,
            web_host=host,
            canonical_url=f"http://{host}:{cfg.web_port}",
            broker_commit_interval=1.0,
            # One fetch is one batch of the commit protocol (``take``): up to batch_size records.
            broker_max_poll_records=max(cfg.batch_size, 1),
            consumer_max_fetch_size=8 * 1024 * 1024,
            # A worker that died is noticed in 10 s, not faust's default 60 s, so its
            # partitions move to the restarted or surviving worker quickly.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=2.0,
            stream_wait_empty=True,
            autodiscover=False,
            loghandlers=[_json_handler()] if cfg.log_format == "json" else [],
            # JSON: ours is the only handler (mode's own text handler would log every line twice).
            logging_config=_only_added_handlers(cfg.log_level) if cfg.log_format == "json" else None,
        )
        t = cfg.topics
        self.inputs = app.topic(t.cdrs, t.commands, key_type=bytes, value_type=bytes,
                                key_serializer="raw", value_serializer="raw")  # fmt: skip
        self.accounts = app.Table(
            "accounts", default=None, key_type=bytes, value_type=bytes,
            partitions=cfg.partitions, use_partitioner=True,
            **({"options": ROCKSDB_OPTIONS} if cfg.store == "rocksdb" else {}),
        )  # fmt: skip
        return app

    def _register(self) -> None:
        app = self.app

        @app.agent(self.inputs, name="rate")
        async def rate(stream):
            # Subscribes faust to the inputs and co-partitions them with the table; the
            # records themselves reach ``take`` in bulk (``rater/intake.py``), so an event
            # here is a record that bypassed the commit protocol: stop, and replay it.
            async for event in stream.events():
                log.error("input record %s/%d@%d reached faust's stream; stopping so it is replayed",
                          event.message.topic, event.message.partition, event.message.offset)  # fmt: skip
                logging.shutdown()
                os._exit(70)

        @app.on_partitions_revoked.connect
        async def on_partitions_revoked(sender, revoked, **kwargs):
            await self.on_revoked(revoked)

        @app.timer(interval=self.cfg.sweep_interval)
        async def sweep_timer():
            try:
                await self.sweep()
            except asyncio.CancelledError:
                self.cache.clear()
                raise
            except Exception:
                # Its accounts may be changed in memory and not written: forget them, so
                # the next batch or sweep starts from the store (the sweep runs again).
                self.cache.clear()
                log.exception("wall-clock sweep failed; it runs again in %.0f s", self.cfg.sweep_interval)

        @app.timer(interval=COMMIT_EVERY)
        async def commit_timer():
            # Batches commit as they finish; this commits the tail once the input is idle.
            async with self.lock:
                await self._commit_positions()

        @app.timer(interval=self.cfg.reload_interval)
        async def reload_timer():
            self.maybe_reload()

        @app.task
        async def on_start():
            gctune.freeze_startup()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self._request_reload)
            log.info("worker started: broker %s, %d partitions, rate tables %s, %s engine, web http://%s:%d",
                     self.cfg.broker, self.cfg.partitions, self.stats.rate_tables_version, self.engine_name,
                     self.cfg.web_host, self.cfg.web_port)  # fmt: skip

        @app.on_rebalance_complete.connect
        async def on_rebalance_complete(sender, **kwargs):
            self.rescan = True
            self.segments.clear()
            self.cache.clear()
            log.info("partitions assigned: %s", sorted({tp.partition for tp in self._active_tps()}))
            asyncio.ensure_future(self.index())

        self.stats.lag = self._lag
        self._register_web()

    # --- the store ---------------------------------------------------------------------

    def _load(self, tenant: str) -> ledger.Account | None:
        """An account for the ledger: its recent ids in the record, older ones in
        segments (``rater/idstore.py``), with the recent ids noted as durable.

        From the cache when it is there: the cache holds, per account, the value its
        last step 4 wrote (or the store held), so it equals the store between batches.
        A batch that does not reach the end of step 4 ends the process (``take``), and
        every rebalance empties the cache, so a cached account is never one that
        another worker may have changed since."""
        hit = self.cache.pop(tenant, None)
        if hit is not None:
            self.cache[tenant] = hit  # most recently used last
            acct, durable = hit
            self.durable[tenant] = durable
            return acct
        raw = self._get_raw(tenant.encode())
        if raw is None:
            return None
        if self.suspect:
            acct, judged = decode_judged(raw)
            self._note_judged(tenant, judged)
        else:
            acct = decode_account(raw)
        durable = self.segments.wrap(acct)
        self.durable[tenant] = durable
        self._remember_account(tenant, acct, durable)
        return acct

    def _remember_account(self, tenant: str, acct: ledger.Account, durable: dict) -> None:
        limit = self.cfg.account_cache
        if limit <= 0:
            return
        cache = self.cache
        cache[tenant] = (acct, durable)
        while len(cache) > limit:
            del cache[next(iter(cache))]

    def _read(self, tenant: str) -> ledger.Account | None:
        """An account to show, not to change: as stored (a batch still being written is
        not shown until its step 4 is done)."""
        raw = self._get_stored(tenant.encode())
        return decode_account(raw) if raw is not None else None

    def _get_raw(self, key: bytes) -> bytes | None:
        """A table record for the ledger: as the last batch handed over wrote it."""
        found, value = self.in_flight.get(key)
        if found:
            return value
        return self._get_stored(key)

    def _get_stored(self, key: bytes) -> bytes | None:
        store = self.accounts.data
        db_for = getattr(store, "_db_for_partition", None)
        if db_for is not None:
            # A segment record lives beside its account, in the tenant's partition
            # (``rater/idstore.py``): the partition of the part before its separator.
            home = key.split(SEGMENT_SEP, 1)[0]
            return db_for(partition_for(home, self.cfg.partitions)).get(key)
        return store.get(key)

    def _note_due(self, tenant: str, acct: ledger.Account) -> None:
        due = []
        if acct.lots:
            due.append(acct.lots[0].expires_at)
        if acct.pending_request_id is not None:
            due.append(acct.pending_requested_at + ledger.RECHARGE_TIMEOUT + 1)
        if due:
            self.due[tenant] = min(due)
        else:
            self.due.pop(tenant, None)

    # --- the commit protocol -------------------------------------------------------------

    async def take(self, chunks: Mapping[TP, list], generation: int) -> None:
        """Step 1: the input records of one fetch, as aiokafka returned them (``rater/intake.py``).

        Under the lock, so a rebalance waits for the batch (``on_revoked``): records of a
        fetch that raced with a rebalance are dropped (faust seeks every partition to its
        committed offset when the new assignment starts), and every other run of records
        goes through the continuity check (``rater/offsets.py``) before it is applied.
        """
        try:
            await self._take(chunks, generation)
        except asyncio.CancelledError:
            # The app is stopping (faust stops its fetcher only then); a batch cut short
            # may have changed cached accounts that were not written: forget them. (A batch
            # already handed over finishes: ``on_stop`` waits for it.)
            self.cache.clear()
            self.segments.clear()
            raise
        except BaseException:
            # Nothing of this batch is committed: stop hard and let a restart replay it.
            log.exception("batch failed; stopping the worker so the batch is replayed")
            logging.shutdown()
            os._exit(70)

    async def _take(self, chunks: Mapping[TP, list], generation: int) -> None:
        arrived = time.monotonic()
        consumer = self.app.consumer
        async with self.lock:
            if not consumer.flow_active or generation != self.app.consumer_generation_id:
                return
            if generation != self.generation:
                self.generation = generation
                self.continuity.reset()
                self.suspect.clear()
                self.judged_in.clear()
            active = self._active_tps()
            messages: list[Message] = []
            seeks: dict[TP, int] = {}
            new = [tp for tp in chunks if tp in active and not self.continuity.knows(tp)]
            if new:
                for tp, committed in (await self._start_offsets(new)).items():
                    self.continuity.start(tp, self._resume_at(tp, committed))
            for tp, records in chunks.items():
                if tp not in active:
                    continue  # revoked, or not ours yet: the assignment seeks it to committed
                if not self.continuity.knows(tp):  # the broker did not say: fetch these again later
                    seeks[tp] = records[0].offset
                    continue
                verdict = self.continuity.judge(tp, records)
                if verdict.hole is not None:
                    log.warning("%s/%d: offsets %d to %d are not in the log (fetched twice); going on",
                                tp.topic, tp.partition, verdict.hole[0], verdict.hole[1] - 1)  # fmt: skip
                if verdict.seek_to is not None:
                    seeks[tp] = verdict.seek_to
                    log.warning("%s/%d: fetched offset %d where %d was expected; seeking back to it",
                                tp.topic, tp.partition, verdict.found, verdict.seek_to)  # fmt: skip
                messages.extend(verdict.take)  # aiokafka ConsumerRecords: topic, partition, offset, key, value as a Message
            if seeks:
                await consumer.seek_wait(seeks)
            if messages:
                await self.handle_batch(messages, arrived)

    def _resume_at(self, tp: TP, committed: int) -> int:
        """Step 1b: where a newly assigned partition resumes. Its committed offset, unless
        the accounts table's applied mark (``rater/applied.py``) is at or past it: the
        worker that wrote the mark crashed between step 4 and step 5, the records up to
        the mark have their outputs acknowledged (step 3) and their accounts durable
        (step 4), and judging them again against the newer state could change their
        outcome. They are skipped (the continuity check drops them: below the expected
        offset) and their offsets become committable."""
        key = (tp.topic, tp.partition)
        mark = self._applied_mark(tp.topic, tp.partition)
        start = applied.resume_offset(committed, mark)
        if start > committed:
            self.positions[key] = max(self.positions.get(key, -1), start - 1)
            log.info("%s/%d: applied up to offset %d before the last commit (%d); resuming at %d",
                     tp.topic, tp.partition, start - 1, committed, start)  # fmt: skip
        # Step 1c: a batch past the mark may have written some of its accounts before a
        # crash (step 4 sends more than one producer batch to a partition when its
        # accounts pass 1 MB). Each account value says how far its batch had judged its
        # partition; up to what Kafka held at this start, a record whose tenant's stored
        # account was judged past it is skipped (``_judged_before``).
        try:
            high = self.app.consumer.highwater(tp)
        except Exception:
            high = None
        if high is None or start < high:
            self.suspect[key] = (start, high - 1 if high is not None else 2**62)
        return start

    def _note_judged(self, tenant: str, judged: dict) -> None:
        """Step 1c, on reading an account from the store: remember how far the batch that
        wrote it had judged, if that may be past where its partition resumed (or the
        other input topic's partition has not started yet). Keeping more is harmless: a
        value written by a batch that finished step 4 was judged only up to the mark,
        below every record of the suspect range."""
        partition = partition_for(tenant.encode(), self.cfg.partitions)
        for topic, offset in judged.items():
            span = self.suspect.get((topic, partition))
            if span is None or offset >= span[0]:
                self.judged_in[tenant] = judged
                return

    def _judged_before(self, msg: Message, key: bytes) -> bool:
        """Step 1c, per record of a suspect range: judged by the crashed batch whose write
        of this tenant's account landed (its outputs were acknowledged in step 3 before)."""
        span = self.suspect.get((msg.topic, msg.partition))
        if span is None or msg.offset > span[1]:
            return False
        tenant = key.decode("utf-8", "replace")
        if not TENANT_RE.fullmatch(tenant):
            return False  # not a tenant's key (the record is rejected, whatever the state)
        self.processor.engine.accounts.get(tenant)  # read it now (``_load`` notes its offsets)
        judged = self.judged_in.get(tenant)
        return judged is not None and judged.get(msg.topic, -1) >= msg.offset

    def _applied_mark(self, topic: str, partition: int) -> int | None:
        """The applied mark of an input partition: as the last batch handed over wrote
        it, else as the store holds it (from the changelog, after faust's recovery)."""
        key = applied.mark_key(topic, partition)
        found, value = self.in_flight.get(key)
        if not found:
            store = self.accounts.data
            db_for = getattr(store, "_db_for_partition", None)
            value = db_for(partition).get(key) if db_for is not None else store.get(key)
        return applied.decode_mark(value)

    async def _start_offsets(self, tps: list[TP]) -> dict[TP, int]:
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
            log.warning("no committed offsets from the broker for %d partition(s) (%s); fetching again",
                        len(tps), type(exc).__name__)  # fmt: skip
            return {}

    async def handle_batch(self, messages: list[Message], arrived: float) -> None:
        """Steps 2 to 5 of the commit protocol, for records the continuity check let through.

        Steps 3 to 5 of this batch run in a task (``_finish``) while the next batch goes
        through step 2; a batch is handed to its task only once the previous batch's task
        has finished, so Kafka and the store see exactly the writes, in exactly the order,
        of one batch after the other.
        """
        t0 = time.monotonic()
        now = time.time_ns() // 1000
        self.durable.clear()
        # Step 2: apply, in memory, and work out every write of steps 3 and 4. While the
        # previous batch is being written, let its acknowledgements in every few records.
        processor = self.processor
        processor.judged = self._judged_before if self.suspect else None
        result = processor.begin()
        for i in range(0, len(messages), YIELD_EVERY):
            processor.feed(result, messages[i : i + YIELD_EVERY], now)
            if self.finishing is not None and not self.finishing.done():
                await asyncio.sleep(0)
        processor.end(result)
        positions: dict[tuple[str, int], int] = {}
        for m in messages:
            positions[(m.topic, m.partition)] = m.offset
        if self.suspect:
            for key, offset in positions.items():
                span = self.suspect.get(key)
                if span is not None and offset >= span[1]:
                    del self.suspect[key]
            if not self.suspect:
                self.judged_in.clear()
        if result.skipped:
            log.info("skipped %d record(s) judged before a crash (their accounts were written)", result.skipped)
        writes = self._writes(result, positions)
        writes.arrived, writes.t0, writes.t1 = arrived, t0, time.monotonic()
        if _DEBUG_BATCHES:  # how old the records were when the batch began (their Kafka timestamps)
            stamps = [m.timestamp for m in messages]
            writes.ages = (now // 1000 - max(stamps), now // 1000 - min(stamps))
        writes.messages = len(messages)
        # The previous batch's steps 3 to 5 ran while this one was applied: wait for them.
        await self._drain()
        writes.handed = time.monotonic()
        self._hand_over(writes, result.accounts)
        if writes.handed - self.last_commit >= COMMIT_EVERY:
            await self._commit_positions()
            self.last_commit = time.monotonic()

    def _hand_over(self, writes: _Writes, accounts: dict[str, tuple[int, ledger.Account]]) -> None:
        """From here on the batch's writes are the state the next batch reads
        (``rater/inflight.py``, the cache) and its task carries them out."""
        self.in_flight.put(writes.segments)
        self.in_flight.put(writes.accounts)
        # The cached accounts are the values this batch writes: their recent ids count as
        # durable for the next batch's plan, whose segment writes go out only after these.
        for tenant, (_partition, acct) in accounts.items():
            self._remember_account(tenant, acct, self.segments.wrap(acct))
        self.finishing = asyncio.ensure_future(self._finish(writes))

    async def _drain(self) -> None:
        """Wait until the batch handed over last has finished steps 3 to 5."""
        task = self.finishing
        if task is not None:
            await asyncio.shield(task)
            self.finishing = None

    async def _finish(self, w: _Writes) -> None:
        """Steps 3 to 5 of one batch (or of the sweep), in order; any failure ends the process."""
        try:
            t2 = time.monotonic()
            # Step 3: outputs and forwards, acknowledged by Kafka.
            if w.produce:
                await self._send_outputs(w)
            t3 = time.monotonic()
            # Step 4: A id segments, then B the accounts and C the applied marks (one list,
            # marks last in their partition), onto the changelog and into the store.
            if w.segments:
                await self._deliver(w.segments)
            if _FAILPOINT == "inside-step-4" and w.messages and w.accounts:
                await self._deliver(w.accounts[:1])
                log.warning("failpoint inside-step-4: exiting after 1 of %d changelog record(s)", len(w.accounts))
                logging.shutdown()
                os._exit(75)
            if w.accounts:
                await self._deliver(w.accounts)
            self.in_flight.done(w.segments)
            self.in_flight.done(w.accounts)
            done = time.monotonic()
            if _FAILPOINT == "after-step-4" and w.messages:
                log.warning("failpoint after-step-4: exiting before the offsets of %d record(s) are committed", w.messages)
                logging.shutdown()
                os._exit(75)
        except BaseException:
            # Nothing of this batch is committed: stop hard and let a restart replay it.
            log.exception("writing a batch failed; stopping the worker so the batch is replayed")
            logging.shutdown()
            os._exit(70)
        # Step 5: the offsets are committable now; committed at most once a second.
        self.positions.update(w.positions)
        if not w.messages:
            return
        if _DEBUG_BATCHES:
            log.info("batch %d records, %d outputs, %d accounts, %.1f ms (waited %.1f, process %.1f, "
                     "handover %.1f, outputs %.1f, accounts %.1f); records %d to %d ms old at the start",
                     w.messages, len(w.produce), len(w.accounts), (done - w.t0) * 1000, (w.t0 - w.arrived) * 1000,
                     (w.t1 - w.t0) * 1000, (w.handed - w.t1) * 1000, (t3 - t2) * 1000, (done - t3) * 1000,
                     *w.ages)  # fmt: skip
        self.stats.processing.observe_many(max(done - w.arrived, 0.0), w.messages)
        self.stats.records.update(w.records)

    async def on_stop(self) -> None:
        """A clean stop: the batch handed over, if any, finishes; then what the finished
        batches reached is committed (a batch still being rated was cancelled with faust's
        fetcher and is replayed by the next start)."""
        async with self.lock:
            await self._drain()
            await self._commit_positions()
            log.info("committed the finished batches' offsets before stopping")

    async def on_revoked(self, revoked: set) -> None:
        """A rebalance begins: the batch being rated (the lock) and the batch handed over
        (``_drain``) finish first, then what they finished is committed, so the next owner
        starts where this worker stopped."""
        async with self.lock:
            await self._drain()
            await self._commit_positions()
            for tp in revoked:
                self.positions.pop((tp.topic, tp.partition), None)
            self.continuity.reset()
            self.suspect.clear()
            self.judged_in.clear()
            self.cache.clear()  # another worker may change these accounts from now on

    async def _commit_positions(self) -> None:
        """Step 5, ours: commit the offsets of the records whose step 4 is done.

        Faust commits acked offsets too, but its ack bookkeeping can stall on a partition
        that came back after rebalances (faust-streaming issue #318: the commit never
        advances again, so every restart replays from there). Committing what this
        protocol has finished is correct by construction; faust skips offsets at or
        below what is committed, so the two never move a partition backwards.
        """
        consumer = self.app.consumer
        offsets = {TP(topic, partition): offset + 1 for (topic, partition), offset in self.positions.items()}
        committed = getattr(consumer, "_committed_offset", {})
        offsets = {tp: o for tp, o in offsets.items() if (committed.get(tp) or 0) < o}
        if offsets:
            try:
                await consumer._commit_offsets(offsets, start_new_transaction=False)
            except Exception as exc:  # a rebalance in flight; the next batch commits again
                log.warning("offset commit failed (%s); will retry", exc)

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            producer = AIOKafkaProducer(
                **client_kwargs(self.cfg), acks="all", enable_idempotence=True, linger_ms=0,
                max_batch_size=1 << 20, max_request_size=8 << 20,
            )  # fmt: skip
            await producer.start()
            self.producer = producer
        return self.producer

    async def _send_outputs(self, w: _Writes) -> None:
        """Step 3's writes; an output Kafka refuses for its size is replaced by the reject
        of its input (``rater/sending.py``, ``rater/bounds.py``) instead of stopping."""

        def replace(i: int):
            origin = w.origins[i]
            if origin is None:
                return None
            topic, _partition, _key, value, _headers = w.produce[i]
            rtopic, key, reject = self.processor.output_refused(origin, topic, len(value or b""), None)
            return (rtopic, None, key, reject, None)

        async def one_by_one() -> AIOKafkaProducer:
            plain = AIOKafkaProducer(**client_kwargs(self.cfg), acks="all", linger_ms=0, max_request_size=8 << 20)
            await plain.start()
            return plain

        producer = await self._producer()
        if not await send_outputs(producer, w.produce, one_by_one, replace):
            self.producer = None  # its sequence numbers are broken by the refused batch
            await producer.stop()

    def _writes(self, result: BatchResult, positions: dict[tuple[str, int], int] | None = None) -> _Writes:
        """Every write of steps 3 and 4 for ``result``, as bytes, taken from the accounts
        now: the next batch changes the same account objects while these are written.
        ``positions``: the batch's last offset of each input partition (none for the
        sweep), written as applied marks after the accounts (step 4, phase C)."""
        w = _Writes()
        if positions:
            w.positions = positions
        w.records = result.records
        produce = w.produce
        for msg, partition, key in result.forwards:
            headers = [("rater-forwarded-from", f"{msg.topic}/{msg.partition}/{msg.offset}".encode())]
            produce.append((msg.topic, partition, key, msg.value, headers))
            log.info("forwarded %s/%d@%d to partition %d", msg.topic, msg.partition, msg.offset, partition)
        w.origins = [msg for msg, _p, _k in result.forwards] + result.origins
        w.origins += [None] * (len(result.forwards) + len(result.outputs) - len(w.origins))
        for topic, key, value in result.outputs:
            produce.append((topic, None, key, value, None))
        accounts = result.accounts
        changelog = self.accounts.changelog_topic.get_topic_name()
        # Phase A: id segments the accounts will stop holding (``IdSegments.plan``).
        for tenant, (partition, acct) in accounts.items():
            durable = self.durable.pop(tenant, {})
            for key, value in self.segments.plan(acct, durable, self.processor.engine.horizon):
                w.segments.append((changelog, partition, key, value, None))
        # Phase B: the accounts, each with how far its batch judged its partition (step 1c).
        judged: dict[int, dict[str, int]] = {}
        for (topic, partition), offset in w.positions.items():
            judged.setdefault(partition, {})[topic] = offset
        tenant_states = self.stats.tenant_state
        for tenant, (partition, acct) in accounts.items():
            key, value = tenant.encode(), encode_account(acct, judged.get(partition))
            w.accounts.append((changelog, partition, key, value, None))
            tenant_states[tenant] = tenant_state(acct.balance, acct.low_balance_threshold)
            self._note_due(tenant, acct)
        # Phase C: how far each input partition is applied (``rater/applied.py``), in the
        # same changelog partition as the accounts and after them, so a mark that is
        # durable vouches for every account written before it. Sent with phase B.
        for (topic, partition), offset in w.positions.items():
            w.accounts.append((changelog, partition, applied.mark_key(topic, partition), applied.encode_mark(offset), None))
        return w

    async def _deliver(self, records: list) -> None:
        """Step 4 for some records: onto the changelog, acknowledged (the store's changelog
        offsets advance only with Kafka's acknowledgement, as faust's own table writes do,
        ``Table._on_changelog_sent``); then into the local store with the changelog
        offset it has reached, one atomic write per partition. The local store is
        therefore never ahead of the changelog: after a crash between the two, faust's
        recovery reads the changelog from the older offset and writes the same values."""
        delivery = await send_all(await self._producer(), records)
        store = self.accounts.data
        db_for = getattr(store, "_db_for_partition", None)
        if db_for is None:  # the memory store
            changelog = records[0][0]
            for _topic, partition, key, value, _headers in records:
                self._store_put(store, changelog, partition, key, value)
            for (topic, partition), offset in delivery.last_offset.items():
                store.set_persisted_offset(TP(topic, partition), offset)
            return
        from rocksdict import WriteBatch

        batches: dict[int, Any] = {}
        for _topic, partition, key, value, _headers in records:
            wb = batches.get(partition)
            if wb is None:
                wb = batches[partition] = WriteBatch(raw_mode=True)
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        for (_topic, partition), offset in delivery.last_offset.items():
            batches[partition].put(store.offset_key, str(offset).encode())
        for partition, wb in batches.items():
            db_for(partition).write(wb)

    @staticmethod
    def _store_put(store, changelog: str, partition: int, key: bytes, value: bytes | None) -> None:
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

    # --- the wall-clock sweep -------------------------------------------------------------

    async def index(self) -> None:
        async with self.lock:
            await self._drain()  # the rescan reads the store
            if self.rescan:
                self._rescan({tp.partition for tp in self._active_tps()})

    async def sweep(self) -> None:
        """Expire and time out on the wall clock, only on partitions with no backlog:
        a record still waiting in Kafka may have happened before the expiry, and must be
        charged against the lot first (as event time would have it)."""
        async with self.lock:
            await self._drain()  # the sweep's own writes follow the batch's; the rescan reads the store
            owned = {tp.partition for tp in self._active_tps()}
            if self.rescan:
                self._rescan(owned)
            behind = {partition for _topic, partition, lag in self._lag() if lag > 0}
            owned -= behind
            now = time.time_ns() // 1000
            due = [t for t, at in self.due.items() if at <= now]
            if not due:
                return
            result = BatchResult()
            t = self.cfg.topics
            for tenant in due:
                partition = partition_for(tenant.encode(), self.cfg.partitions)
                if partition in behind:
                    continue  # due, but its partition has a backlog: next sweep
                if partition not in owned:
                    self.due.pop(tenant, None)
                    continue
                acct = self._load(tenant)
                if acct is None:
                    self.due.pop(tenant, None)
                    continue
                out = ledger.sweep(acct, now)
                if out is None:
                    self._note_due(tenant, acct)
                    continue
                key = tenant.encode()
                for e in out.events:
                    result.outputs.append((t.events, key, orjson.dumps(e)))
                    self.stats.tally.count_event(e)
                for r in out.recharge_requests:
                    result.outputs.append((t.requests, key, orjson.dumps(r)))
                result.accounts[tenant] = (partition, acct)
            writes = self._writes(result)
            self._hand_over(writes, result.accounts)
            await self._drain()
            if result.accounts:
                log.info("sweep settled %d account(s)", len(result.accounts))

    def _rescan(self, owned: set[int]) -> None:
        """After a rebalance: rebuild the sweep index and tenant states of owned partitions."""
        self.rescan = False
        self.due.clear()
        self.stats.tenant_state.clear()
        store = self.accounts.data
        dbs = getattr(store, "_dbs", None)
        if dbs is not None:
            items = ((k, v) for p, db in list(dbs.items()) if p in owned for k, v in db.items())
        else:
            items = list(store.items())
        n = 0
        for key, value in items:
            if value is None or key.startswith(b"__faust") or is_segment_key(key) or applied.is_mark_key(key):
                continue  # faust keeps its offsets here too; id segments and applied marks are not accounts
            tenant = key.decode()
            if partition_for(key, self.cfg.partitions) not in owned:
                continue
            acct = decode_account(value)
            self.stats.tenant_state[tenant] = tenant_state(acct.balance, acct.low_balance_threshold)
            self._note_due(tenant, acct)
            n += 1
        log.info("indexed %d account(s) of partitions %s", n, sorted(owned))

    # --- rate tables ------------------------------------------------------------------------

    def _signature(self) -> tuple:
        try:
            names = sorted(n for n in os.listdir(self.cfg.rates_dir) if n.endswith(".csv"))
            return tuple((n, os.stat(os.path.join(self.cfg.rates_dir, n)).st_mtime_ns,
                          os.stat(os.path.join(self.cfg.rates_dir, n)).st_size) for n in names)  # fmt: skip
        except OSError:
            return ()

    def _request_reload(self) -> None:
        log.info("SIGHUP: reloading rate tables")
        self.reload_requested = True
        self.maybe_reload()

    def maybe_reload(self) -> None:
        signature = self._signature()
        if signature == self._rates_signature and not self.reload_requested:
            return
        self.reload_requested = False
        self._rates_signature = signature
        tables, problems = check_rate_tables(self.cfg.rates_dir)
        if tables is None:
            log.error("rate tables in %s not reloaded, keeping version %s: %s", self.cfg.rates_dir,
                      self.stats.rate_tables_version, "; ".join(problems[:20]))  # fmt: skip
            return
        if tables.version != self.stats.rate_tables_version:
            self.processor.tables = tables
            self.stats.rate_tables_version = tables.version
            self.stats.rate_tables_loaded_at = time.time()
            log.info("rate tables reloaded: version %s, %d plan(s)", tables.version, len(tables.plans))

    # --- assignment and lag ---------------------------------------------------------------------

    def _active_tps(self) -> set[TP]:
        try:
            return {tp for tp in self.app.assignor.assigned_actives() if tp.topic in (self.cfg.topics.cdrs, self.cfg.topics.commands)}
        except Exception:
            return set()

    def _lag(self):
        consumer = self.app.consumer
        out = []
        for tp in sorted(self._active_tps()):
            try:
                high = consumer.highwater(tp)
            except Exception:
                continue
            if high is None:
                continue
            pos = self.positions.get((tp.topic, tp.partition))
            if pos is not None:
                done = pos + 1
            else:  # nothing processed since the start: count from the committed offset
                done = getattr(consumer, "_committed_offset", {}).get(tp) or 0
            out.append((tp.topic, tp.partition, max(high - done, 0)))
        return out

    def ready(self) -> tuple[bool, str]:
        app = self.app
        if app.rebalancing:
            return False, "rebalancing"
        recovery = app.tables.recovery
        if not recovery.completed.is_set():
            return False, "recovering tables"
        if not self._active_tps() and not app.assignor.assigned_standbys():
            return False, "no partitions assigned"
        return True, "ready"

    # --- web --------------------------------------------------------------------------------------

    def _register_web(self) -> None:
        web.register(self)  # the views: rater/web.py


def client_kwargs(cfg: WorkerConfig) -> dict[str, Any]:
    """Connection settings for aiokafka clients (the worker's producer, the admin)."""
    kwargs: dict[str, Any] = {"bootstrap_servers": cfg.broker, "security_protocol": cfg.security_protocol}
    ctx = _ssl_context(cfg)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    if cfg.security_protocol.startswith("SASL"):
        kwargs.update(sasl_mechanism=cfg.sasl_mechanism, sasl_plain_username=cfg.sasl_username,
                      sasl_plain_password=cfg.sasl_password)  # fmt: skip
    return kwargs


async def ensure_topics(cfg: WorkerConfig) -> None:
    """Create the input and output topics that do not exist, with the configured partitions."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**client_kwargs(cfg))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        t = cfg.topics
        wanted = [t.cdrs, t.commands, t.rated, t.events, t.requests, t.rejects]
        missing = [n for n in wanted if n not in existing]
        if missing:
            await admin.create_topics([NewTopic(n, cfg.partitions, cfg.replication) for n in missing])
            log.info("created topics %s with %d partitions", ", ".join(missing), cfg.partitions)
        # A topic just created may not be known to the broker's metadata yet: wait for
        # every partition to have a leader.
        deadline = time.monotonic() + 30
        while True:
            meta = await admin.describe_topics([t.cdrs, t.commands])
            counts = {m["topic"]: len(m["partitions"]) for m in meta}
            settled = all(m.get("error_code", 0) == 0 and m["partitions"]
                          and all(p.get("leader", -1) >= 0 for p in m["partitions"]) for m in meta)  # fmt: skip
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        for name, n in counts.items():
            if n != cfg.partitions:
                raise SystemExit(
                    f"rater: topic {name} has {n} partitions, --partitions says {cfg.partitions}; "
                    "the input topics and the worker must agree"
                )
    finally:
        await admin.close()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(body).decode()


def run(cfg: WorkerConfig) -> int:
    tables, problems = check_rate_tables(cfg.rates_dir)
    if tables is None:
        for p in problems:
            print(f"rater: {p}")
        print(f"rater: {cfg.rates_dir}: the rate tables do not load; not starting")
        return 2
    from .native_engine import EngineUnavailable

    try:
        choose_engine(cfg.engine, default="python")
    except EngineUnavailable as exc:
        print(f"rater: {exc}")
        return 2
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its connection errors come back as the exception below
    try:
        asyncio.run(ensure_topics(cfg))
    except SystemExit:
        raise
    except Exception as exc:  # unreachable broker, refused credentials: one line, no traceback
        how = cfg.security_protocol
        if how.startswith("SASL"):
            how += f" {cfg.sasl_mechanism} as {cfg.sasl_username!r} (check the SASL username and password)"
        why = " ".join(str(exc).split())
        print(f"rater: cannot use Kafka at {cfg.broker} over {how}: {type(exc).__name__}: {why}"[:600])
        return 2
    finally:
        quiet.setLevel(level)
    gctune.tune()
    worker = RaterWorker(cfg, tables)
    fw = faust.Worker(worker.app, loglevel=cfg.log_level.upper(), quiet=True)
    fw.execute_from_commandline()
    return 0


def _only_added_handlers(level: str) -> dict:
    return {"version": 1, "disable_existing_loggers": False, "root": {"level": level.upper(), "handlers": []}}


def _json_handler() -> logging.Handler:
    handler = logging.StreamHandler()
    formatter = _JsonFormatter()
    formatter.converter = time.gmtime  # type: ignore[assignment]
    handler.setFormatter(formatter)
    return handler
