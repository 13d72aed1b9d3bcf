"""The commit protocol of ``rater worker``: every await of it, against a small Kafka port.

Theory of operation
-------------------
Commit protocol of one batch (``take``, ``handle_batch``, ``finish``)

1. Take the input records of one fetch under the lock (a rebalance waits for it); drop
   the fetch if a rebalance began since; check each partition's run of offsets against
   the next expected one (``rater/core/continuity.py``): already-applied records are
   dropped, a hole is sought back over and fetched again.
   1b. A partition newly assigned starts at its committed offset, or after its applied
   mark (step 4C) if that is further (``ReplayGuard.resume_at``): those records were
   judged, and their outputs and accounts are durable.
   1c. Up to the partition's end at that start, a record whose tenant's stored account
   was written by a batch that had judged the record (the account's ``"in"`` offsets,
   step 4B) is skipped (``ReplayGuard.judged_before``): a crash inside step 4 wrote that
   account and not the mark.
2. Apply: ``BatchProcessor`` routes, decodes, validates and applies the records to the
   accounts (cached, in flight, or read from the table: ``rater/worker/store.py``), in
   memory; then every write of steps 3 and 4 is made into bytes (the changed accounts by
   the store, ``AccountStore.plan``, the rest by ``plan_writes``, ``rater/worker/plan.py``).
   Nothing has been written. The batch is handed to its task
   (``finish``) once the previous batch's task has finished: steps 3 to 5 of batch n run
   while batch n+1 goes through step 2, and Kafka and the store see the writes of one
   batch after the other, in order. Until batch n's step 4 is done, batch n+1 reads what
   batch n writes (the cache, ``rater/worker/inflight.py``).
3. Produce the outputs (rated CDRs, balance events, recharge requests, rejects) and the
   misrouted records forwarded to their partition, and wait until Kafka has acknowledged
   every one (``acks=all``).
4. A: id segments (``rater/core/idsegments.py``), acknowledged. B: each changed account
   once onto the table's changelog topic, one record per account holding its balance,
   lots, the ids it has applied *and* the batch's last offsets of its partition. C, sent
   with B and after the accounts of its partition: each input partition's applied mark,
   the batch's last offset there (``rater/core/applied.py``). Wait for every
   acknowledgement; then write the same values and the changelog offset into the local
   store, one atomic batch per partition.
5. Commit the batch's offsets (``commit_positions``: after a batch at most once a
   second, on a 1 s timer, and on revocation). Only offsets whose step 4 is done.

A crash before 3 completes: nothing is committed; the batch is consumed again from the
same state and gives the same outputs, with the same ids. Between 3 and 4: outputs are
out, the state is not; the replay applies the records again from the old state and
writes the same outputs again (same ids, same content: consumers drop repeats; only a
record near the 24-hour future limit depends on the clock, ``docs/crash-safety.md``).
Inside 4, after an acknowledgement and before the local write: faust's recovery brings
the local store up to the changelog. Inside 4B, some accounts of a partition written and
no mark: their tenants' records are skipped (1c), the others applied again from the old
state. Between 4 and 5: state is saved, offsets are not; the worker resumes after the
applied mark and judges none of the batch's records again (outputs were written in 3):
a rejected record would otherwise be judged against the state its own batch left (an
account created after it, a request made after its answer, a later clock). After 5:
done. So each debit lands exactly once in the account, and each output is written at
least once with a stable id. Any exception ends the process (``die``), so no half-done
batch is followed by another (the batch rated meanwhile was not handed over, and is
replayed too). The argument in full, with the tests that exercise it, is in
``docs/crash-safety.md``; ``tests/worker/test_pipeline.py`` crashes this class between
every pair of steps against an in-memory port.

The wall-clock sweep (``rater/worker/sweeper.py``) follows steps 2 to 4 for the accounts
with lots due to expire or a recharge request due to time out; the lock, and waiting for
the batch in flight, keep it from interleaving with a batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

from rater.core import applied
from rater.core.batch import BatchProcessor, BatchResult, Message
from rater.core.continuity import Continuity
from rater.worker.plan import Writes, judged_by_partition, plan_writes
from rater.worker.replay import Judged, ReplayGuard
from rater.worker.store import AccountStore

log = logging.getLogger("rater")

COMMIT_EVERY = 1.0  # seconds between offset commits of finished batches
# Records applied between two looks at the event loop while the previous batch is being
# written (about 0.3 to 0.5 ms of native rating, 3 to 5 ms of Python): its acknowledgements
# are read, and its next step sent, without waiting for the whole of the next batch.
# 1,000 cost the native worker throughput (`bench/analysis.md`, "Tried and not kept").
YIELD_EVERY = 100
_DEBUG_BATCHES = bool(os.environ.get("RATER_DEBUG_BATCHES"))
# Fault injection for the crash tests (``tests/worker/test_replay.py``): ``after-step-4``
# ends the process right after the first input batch's step 4, before its offsets can be
# committed; ``inside-step-4`` ends it after the first account record of that batch is on
# the changelog and in the store, before the others and the applied marks (a SIGKILL at
# exactly that moment). ``stall-recovery`` (``rater/worker/adapter.py``) drops every
# changelog record fetched, so table recovery never ends (``rater/worker/watchdog.py``);
# ``slow-recovery`` holds every fetch with changelog records for SLOW_RECOVERY_PAUSE
# seconds, so a recovery that reads takes as long as the test needs (with
# ``--batch-size 1``, a fetch holds one record); ``clock+N`` runs the processing clock N
# seconds ahead, so a replay is judged later without the test waiting for it. Never set
# in production.
FAILPOINT = os.environ.get("RATER_FAILPOINT", "")
SLOW_RECOVERY_PAUSE = 0.4


def processing_clock(failpoint: str) -> Callable[[], int]:
    """The clock records are judged by (ns): the wall clock, or ahead of it for ``clock+N``."""
    if failpoint.startswith("clock+") and failpoint[6:].isdigit():
        ahead = int(failpoint[6:]) * 1_000_000_000
        return lambda: time.time_ns() + ahead
    return time.time_ns


# index of a record Kafka refused for its size (the forwards, then the outputs) -> the
# reject replacing it (or None)
Replace = Callable[[int], Any]


class KafkaPort(Protocol):
    """What the pipeline needs of Kafka and the local table (``rater/worker/adapter.py``
    implements it over faust and aiokafka; the unit tests, in memory)."""

    changelog: str  # the accounts table's changelog topic

    def fetch_is_current(self, generation: int) -> bool: ...  # no rebalance began since that fetch
    def active(self) -> set: ...  # the input topic-partitions assigned to us
    async def start_offsets(self, tps: list) -> dict: ...  # committed, else log start (may leave some out)
    def highwater(self, tp: Any) -> int | None: ...
    async def seek(self, seeks: dict) -> None: ...
    def committed(self) -> Mapping: ...  # tp -> committed offset, as the consumer knows it
    async def commit(self, offsets: dict) -> None: ...
    async def produce(self, records: list, outputs: Sequence, replace: Replace) -> None: ...  # step 3, acknowledged
    async def deliver(self, records: list) -> None: ...  # step 4: changelog, acknowledged, then the store
    def table_get(self, partition: int, key: bytes) -> bytes | None: ...
    def tp(self, topic: str, partition: int) -> Any: ...  # the consumer's topic-partition type


def _timestamp_range(run: Sequence[Message]) -> tuple[int, int]:
    """The oldest and the newest Kafka timestamp (ms) of a run of records; a
    ``rater_native.Records`` reads them natively, with no ``Record`` made per record."""
    native = getattr(run, "timestamp_range", None)
    if native is not None:
        return native()
    stamps = [m.timestamp for m in run]  # type: ignore[attr-defined]
    return min(stamps), max(stamps)


def die(code: int, message: str, *args: Any, level: int = logging.ERROR, exc_info: bool = False) -> None:
    """End the process now (no cleanup that could write anything): a restart replays
    whatever was not committed. The one copy of the die-on-fatal sequence."""
    log.log(level, message, *args, exc_info=exc_info)
    logging.shutdown()
    os._exit(code)


class CommitPipeline:
    def __init__(
        self,
        port: KafkaPort,
        store: AccountStore,
        processor: BatchProcessor,
        on_batch: Callable[[Writes, float], None] | None = None,
    ):
        self.port = port
        self.store = store
        self.processor = processor
        self.on_batch = on_batch  # metrics of a finished batch (writes, seconds since it arrived)
        self.lock = asyncio.Lock()
        self.positions: dict[tuple[str, int], int] = {}  # last offset whose step 4 is done
        self.continuity = Continuity()
        self.replay = ReplayGuard(store.partitions)
        self.generation = -1
        self.last_commit = 0.0
        self.finishing: asyncio.Future | None = None  # the batch handed over last: its steps 3 to 5
        self.die: Callable[..., None] = die
        self.failpoint = FAILPOINT
        self.clock = processing_clock(FAILPOINT)

    # --- step 1 ----------------------------------------------------------------------------

    async def take(self, chunks: Mapping[Any, list], generation: int) -> None:
        """Step 1: the input records of one fetch, as aiokafka returned them.

        Under the lock, so a rebalance waits for the batch (``on_revoked``): records of a
        fetch that raced with a rebalance are dropped (faust seeks every partition to its
        committed offset when the new assignment starts), and every other run of records
        goes through the continuity check (``rater/core/continuity.py``) before it is applied.
        """
        try:
            await self._take(chunks, generation)
        except asyncio.CancelledError:
            # The app is stopping (faust stops its fetcher only then); a batch cut short
            # may have changed cached accounts that were not written: forget them. (A batch
            # already handed over finishes: ``on_stop`` waits for it.)
            self.store.forget()
            raise
        except BaseException:
            # Nothing of this batch is committed: stop hard and let a restart replay it.
            self.die(70, "batch failed; stopping the worker so the batch is replayed", exc_info=True)

    async def _take(self, chunks: Mapping[Any, list], generation: int) -> None:
        arrived = time.monotonic()
        port = self.port
        async with self.lock:
            if not port.fetch_is_current(generation):
                return
            if generation != self.generation:
                self.generation = generation
                self.continuity.reset()
                self.replay.reset()
            active = port.active()
            runs: list[Sequence[Message]] = []  # each partition's records to apply, as fetched
            positions: dict[tuple[str, int], int] = {}  # the last offset taken of each partition
            seeks: dict[Any, int] = {}
            new = [tp for tp in chunks if tp in active and not self.continuity.knows(tp)]
            if new:
                for tp, committed in (await port.start_offsets(new)).items():
                    self.continuity.start(tp, self._resume_at(tp, committed))
            for tp, records in chunks.items():
                if tp not in active:
                    continue  # revoked, or not ours yet: the assignment seeks it to committed
                if not self.continuity.knows(tp):  # the broker did not say: fetch these again later
                    seeks[tp] = records[0].offset
                    continue
                verdict = self.continuity.judge(tp, records)
                if verdict.hole is not None:
                    log.warning(
                        "%s/%d: offsets %d to %d are not in the log (fetched twice); going on",
                        tp.topic,
                        tp.partition,
                        verdict.hole[0],
                        verdict.hole[1] - 1,
                    )
                if verdict.seek_to is not None:
                    seeks[tp] = verdict.seek_to
                    log.warning(
                        "%s/%d: fetched offset %d where %d was expected; seeking back to it",
                        tp.topic,
                        tp.partition,
                        verdict.found,
                        verdict.seek_to,
                    )
                if verdict.take:  # fetched records (a Message's topic, partition, offset, key, value)
                    runs.append(verdict.take)
                    positions[(tp.topic, tp.partition)] = verdict.take[-1].offset
            if seeks:
                await port.seek(seeks)
            if runs:
                await self.handle_batch(runs, positions, arrived)

    def _resume_at(self, tp: Any, committed: int) -> int:
        """Steps 1b and 1c for a newly assigned partition (``rater/worker/replay.py``)."""
        key = (tp.topic, tp.partition)
        mark = applied.decode_mark(self.store.get_in_partition(tp.partition, applied.mark_key(tp.topic, tp.partition)))
        start = self.replay.resume_at(key, committed, mark, self.port.highwater(tp))
        if start > committed:
            self.positions[key] = max(self.positions.get(key, -1), start - 1)
            log.info(
                "%s/%d: applied up to offset %d before the last commit (%d); resuming at %d",
                tp.topic,
                tp.partition,
                start - 1,
                committed,
                start,
            )
        return start

    # --- step 2 and the hand-over ----------------------------------------------------------

    async def handle_batch(self, runs: list[Sequence[Message]], positions: dict[tuple[str, int], int], arrived: float) -> None:
        """Steps 2 to 5 of the commit protocol, for records the continuity check let through,
        run by run (each partition's as fetched: with the native engine a
        ``rater_native.Records``, which the native step reads without a Python object per
        record; ``positions``: the last offset of each of their partitions).

        Steps 3 to 5 of this batch run in a task (``finish``) while the next batch goes
        through step 2; a batch is handed to its task only once the previous batch's task
        has finished, so Kafka and the store see exactly the writes, in exactly the order,
        of one batch after the other.
        """
        t0 = time.monotonic()
        now = self.clock() // 1000
        self.store.durable.clear()
        replay = self.replay
        # Step 2: apply, in memory, and work out every write of steps 3 and 4. While the
        # previous batch is being written, let its acknowledgements in every few records.
        processor = self.processor
        self.store.note_judged = replay.note_judged if replay.suspect else None
        processor.judged = Judged(replay, processor.engine.accounts) if replay.suspect else None
        result = processor.begin()
        for run in runs:
            for i in range(0, len(run), YIELD_EVERY):
                processor.feed(result, run[i : i + YIELD_EVERY], now)
                if self.finishing is not None and not self.finishing.done():
                    await asyncio.sleep(0)
        processor.end(result)
        replay.passed(positions)
        if result.skipped:
            log.info("skipped %d record(s) judged before a crash (their accounts were written)", result.skipped)
        writes = self.plan(result, positions)
        writes.arrived, writes.t0, writes.t1 = arrived, t0, time.monotonic()
        if _DEBUG_BATCHES:  # how old the records were when the batch began (their Kafka timestamps)
            stamps = [_timestamp_range(run) for run in runs]
            writes.ages = (now // 1000 - max(z for _a, z in stamps), now // 1000 - min(a for a, _z in stamps))
        writes.messages = sum(map(len, runs))
        # The previous batch's steps 3 to 5 ran while this one was applied: wait for them.
        await self.drain()
        writes.handed = time.monotonic()
        self.hand_over(writes, result.accounts)
        if writes.handed - self.last_commit >= COMMIT_EVERY:
            await self.commit_positions()
            self.last_commit = time.monotonic()

    def plan(self, result: BatchResult, positions: dict[tuple[str, int], int] | None = None) -> Writes:
        """``plan_writes`` for this batch (or the sweep): the changed accounts made into
        bytes by the store (``AccountStore.plan``, which notes them in its tenant index)."""
        for msg, partition, _key in result.forwards:
            log.info("forwarded %s/%d@%d to partition %d", msg.topic, msg.partition, msg.offset, partition)
        changelog = self.port.changelog
        segments, accounts = self.store.plan(result.accounts, changelog, judged_by_partition(positions), self.processor.engine.horizon)
        return plan_writes(result, changelog, segments, accounts, positions)

    def hand_over(self, writes: Writes, accounts: dict) -> None:
        """From here on the batch's writes are the state the next batch reads
        (``rater/worker/store.py``) and its task carries them out."""
        self.store.hand_over(writes.segments, writes.accounts, accounts)
        self.finishing = asyncio.ensure_future(self.finish(writes))

    async def drain(self) -> None:
        """Wait until the batch handed over last has finished steps 3 to 5."""
        task = self.finishing
        if task is not None:
            await asyncio.shield(task)
            self.finishing = None

    # --- steps 3 to 5 ------------------------------------------------------------------------

    async def finish(self, w: Writes) -> None:
        """Steps 3 to 5 of one batch (or of the sweep), in order; any failure ends the process."""
        port = self.port
        try:
            t2 = time.monotonic()
            # Step 3: outputs and forwards, acknowledged by Kafka.
            if w.produce or w.outputs:
                await port.produce(w.produce, w.outputs, self._replacer(w))
            t3 = time.monotonic()
            # Step 4: A id segments, then B the accounts and C the applied marks (one list,
            # marks last in their partition), onto the changelog and into the store.
            if w.segments:
                await port.deliver(w.segments)
            if self.failpoint == "inside-step-4" and w.messages and w.accounts:
                await port.deliver(w.accounts[:1])
                self.die(75, "failpoint inside-step-4: exiting after 1 of %d changelog record(s)", len(w.accounts), level=logging.WARNING)
            if w.accounts:
                await port.deliver(w.accounts)
            self.store.written(w.segments, w.accounts)
            done = time.monotonic()
            if self.failpoint == "after-step-4" and w.messages:
                self.die(
                    75,
                    "failpoint after-step-4: exiting before the offsets of %d record(s) are committed",
                    w.messages,
                    level=logging.WARNING,
                )
        except BaseException:
            # Nothing of this batch is committed: stop hard and let a restart replay it.
            self.die(70, "writing a batch failed; stopping the worker so the batch is replayed", exc_info=True)
            raise
        # Step 5: the offsets are committable now; committed at most once a second.
        self.positions.update(w.positions)
        if not w.messages:
            return
        if _DEBUG_BATCHES:
            log.info(
                "batch %d records, %d outputs, %d accounts, %.1f ms (waited %.1f, process %.1f, "
                "handover %.1f, outputs %.1f, accounts %.1f); records %d to %d ms old at the start",
                w.messages,
                len(w.produce) + len(w.outputs),
                len(w.accounts),
                (done - w.t0) * 1000,
                (w.t0 - w.arrived) * 1000,
                (w.t1 - w.t0) * 1000,
                (w.handed - w.t1) * 1000,
                (t3 - t2) * 1000,
                (done - t3) * 1000,
                *w.ages,
            )
        if self.on_batch is not None:
            self.on_batch(w, max(done - w.arrived, 0.0))

    def _replacer(self, w: Writes) -> Replace:
        """Step 3: an output Kafka refuses for its size is replaced by the reject of its
        input (``rater/worker/sending.py``, ``rater/core/bounds.py``) instead of stopping."""

        def replace(i: int):
            if i < len(w.produce):  # a forward
                origin = w.forwarded[i]
                topic, _partition, _key, value, _headers = w.produce[i]
            else:
                i -= len(w.produce)
                if i >= len(w.origins):
                    return None  # an output of the sweep: no input record to reject
                origin = w.origins[i]
                topic, _key, value = w.outputs[i]
            rtopic, key, reject = self.processor.output_refused(origin, topic, len(value or b""), None)
            return (rtopic, None, key, reject, None)

        return replace

    async def commit_positions(self) -> None:
        """Step 5, ours: commit the offsets of the records whose step 4 is done.

        Faust commits acked offsets too, but its ack bookkeeping can stall on a partition
        that came back after rebalances (faust-streaming issue #318: the commit never
        advances again, so every restart replays from there). Committing what this
        protocol has finished is correct by construction; faust skips offsets at or
        below what is committed, so the two never move a partition backwards.
        """
        port = self.port
        committed = port.committed()
        offsets = {}
        for (topic, partition), offset in self.positions.items():
            tp = port.tp(topic, partition)
            if (committed.get(tp) or 0) < offset + 1:
                offsets[tp] = offset + 1
        if offsets:
            try:
                await port.commit(offsets)
            except Exception as exc:  # a rebalance in flight; the next batch commits again
                log.warning("offset commit failed (%s); will retry", exc)

    # --- stop and rebalance --------------------------------------------------------------------

    async def on_stop(self) -> None:
        """A clean stop: the batch handed over, if any, finishes; then what the finished
        batches reached is committed (a batch still being rated was cancelled with faust's
        fetcher and is replayed by the next start)."""
        async with self.lock:
            await self.drain()
            await self.commit_positions()
            log.info("committed the finished batches' offsets before stopping")

    async def on_revoked(self, revoked: set) -> None:
        """A rebalance begins: the batch being rated (the lock) and the batch handed over
        (``drain``) finish first, then what they finished is committed, so the next owner
        starts where this worker stopped."""
        async with self.lock:
            await self.drain()
            await self.commit_positions()
            for tp in revoked:
                self.positions.pop((tp.topic, tp.partition), None)
            self.continuity.reset()
            self.replay.reset()
            self.store.clear_cache()  # another worker may change these accounts from now on

    async def commit_timer(self) -> None:
        """Batches commit as they finish; this commits the tail once the input is idle."""
        async with self.lock:
            await self.commit_positions()
