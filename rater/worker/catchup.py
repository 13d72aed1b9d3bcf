"""Table recovery in bulk: changelog partitions far behind the local store are read into
it straight from Kafka before faust's recovery starts, which then has little left to read.

Why: faust's recovery takes each changelog record through a message, an event, an
asyncio queue and an ``asyncio.wait_for`` (a task and a timer per record), about 80 µs
of CPU a record on the benchmark machine: 8 of the 10 seconds a worker on an empty state
dir (a new disk) took to be ready with 100,000 accounts (``bench/analysis.md``). Read
here, a record costs aiokafka's unpacking and a put into a RocksDB write batch.

What is read in bulk: the partitions of the accounts changelog newly assigned to this
worker as actives (a standby keeps following the changelog through faust), when together
they are at least ``least`` records behind their local store (``--bulk-recovery-least``;
fewer are not worth a client of their own). The steps, for one rebalance:

1. Where each partition stands: its store's persisted offset (the offset of the last
   changelog record it holds, faust's key in the partition's database) and the
   partition's end offset, asked of the broker (``behind``).
2. A consumer of its own (no group, no commits, committed records only) reads each
   partition behind from the record after its persisted offset.
3. Each fetch of a partition goes to its database in one atomic write batch that also
   sets the persisted offset to the fetch's last record: the store never claims a record
   it does not hold, so a crash midway leaves a store the next start goes on from.
4. A partition is done once the consumer's position reaches the end offset of step 1.
   The read stops early, leaving the rest to faust, when the group's generation moves on
   (a new rebalance: faust starts a new recovery), when no record comes for ``stall``
   seconds, or after ``budget`` seconds: it runs in faust's rebalance listener, which
   holds up the group's next rebalance while it runs.
5. Then faust's recovery runs as it always does: it reads each store's persisted offset
   (now at or near the end) and the changelog from there, as after a warm restart.

``CatchUp`` holds the rule and the loop; the store and the question of the end offsets
come from ``rater/worker/adapter.py`` (faust's private names).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from rater.connection import client_kwargs

LEAST = 1000  # records behind in all, from which the changelog is read in bulk
STALL = 30.0  # seconds without a record before the rest is left to faust's recovery
# The most seconds one read takes: it runs in the rebalance listener, which holds up the
# group's next rebalance; half faust's rebalance timeout (60 s), some five million records
# on the benchmark machine (190,000 a second). What is left then, faust's recovery reads.
BUDGET = 30.0
PARTITION_FETCH_BYTES = 4 << 20  # per partition and fetch (aiokafka's default: 1 MiB)
FETCH_BYTES = 64 << 20

log = logging.getLogger("rater")


class ChangelogStore(Protocol):
    """The local store of the changelog's partitions (faust's RocksDB store)."""

    def persisted(self, partition: int) -> int | None:
        """The offset of the last changelog record the partition's database holds."""

    def write(self, partition: int, records: list[tuple[bytes, bytes | None]], last_offset: int) -> None:
        """The records (a value of None deletes its key) and ``last_offset`` as the
        persisted offset, in one atomic write."""


def behind(persisted: Mapping[Any, int | None], ends: Mapping[Any, int], least: int) -> dict[Any, int]:
    """Step 1's rule: the partitions to read in bulk, each with the first offset to read
    (the one after its persisted offset; 0 when it holds nothing, read from the log's
    start). All the partitions with records past their store, when all of them together
    are at least ``least`` records behind; none otherwise, and none for a ``least`` of 0.
    A partition without an end offset, or whose store is at or past it, is not read."""
    if least <= 0:
        return {}
    todo = {}
    for tp, end in ends.items():
        if tp not in persisted:
            continue
        last = persisted[tp]
        first = 0 if last is None else last + 1
        if end > first:
            todo[tp] = first
    if sum(ends[tp] - first for tp, first in todo.items()) < least:
        return {}
    return todo


@dataclass
class Figures:
    """One bulk read, for its log line and the tests."""

    partitions: int = 0
    records: int = 0
    seconds: float = 0.0
    complete: bool = False  # every partition reached its end offset
    stopped: str = ""  # why not: "rebalance", "stall", "budget"


class CatchUp:
    """The bulk read of the module docstring. ``read`` counts the records read in bulk
    since the start: the stall watch sees it move (``rater/worker/watchdog.py``)."""

    def __init__(self, settings: Any, least: int = LEAST, stall: float = STALL, budget: float = BUDGET):
        self.settings = settings  # the connection's (``rater/connection.py``)
        self.least = least
        self.stall = stall
        self.budget = budget
        self.read = 0

    async def run(
        self,
        store: ChangelogStore,
        tps: Iterable[Any],
        end_offsets: Callable[[list], Awaitable[Mapping[Any, int]]],
        current: Callable[[], bool],
    ) -> Figures | None:
        """Steps 1 to 4 for ``tps`` (faust TPs of the changelog, newly assigned as
        actives); ``current()``: whether the rebalance that assigned them is still the
        group's. The figures of the read, or None when nothing was worth reading."""
        tps = sorted(tps)
        persisted = {tp: store.persisted(tp.partition) for tp in tps}
        ends = await end_offsets(tps)
        todo = behind(persisted, ends, self.least)
        if not todo or not current():
            return None
        figures = Figures(partitions=len(todo))
        started = time.monotonic()
        try:
            await self._read(store, todo, ends, current, figures)
        finally:
            figures.seconds = time.monotonic() - started
        return figures

    async def _read(self, store: ChangelogStore, todo: dict, ends: Mapping, current: Callable[[], bool], figures: Figures) -> None:
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_BYTES,
        )
        await consumer.start()
        try:
            left = {TopicPartition(tp.topic, tp.partition): (tp, ends[tp]) for tp in todo}
            consumer.assign(list(left))
            for kp, (tp, _end) in left.items():
                if todo[tp] > 0:
                    consumer.seek(kp, todo[tp])
                else:
                    await consumer.seek_to_beginning(kp)
            last_record = started = time.monotonic()
            while left:
                if not current():  # step 4: a new rebalance; faust recovers anew
                    figures.stopped = "rebalance"
                    return
                fetched = await consumer.getmany(timeout_ms=500)
                for kp, records in fetched.items():
                    if records and kp in left:  # step 3
                        store.write(kp.partition, [(r.key, r.value) for r in records if r.key is not None], records[-1].offset)
                        figures.records += len(records)
                        self.read += len(records)
                        last_record = time.monotonic()
                for kp in list(left):  # step 4: at the end offset of step 1
                    if await consumer.position(kp) >= left[kp][1]:
                        consumer.pause(kp)
                        del left[kp]
                now = time.monotonic()
                if left and now - last_record > self.stall:
                    figures.stopped = "stall"
                    return
                if left and now - started > self.budget:
                    figures.stopped = "budget"
                    return
                await asyncio.sleep(0)
            figures.complete = True
        finally:
            await consumer.stop()
