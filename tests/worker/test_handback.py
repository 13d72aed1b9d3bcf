"""Changelog records fetched while a rebalance has the flow stopped are sought back, not lost.

faust's ``getmany`` drops a fetch that returns while its flow is stopped and seeks only the
partitions with a committed offset back; a changelog partition has none, so a table
recovery that had already sought it waited for ever for the records that fetch took
(``docs/faust-notes.md``). ``BulkConsumer._hand_back`` seeks such a partition back to the
fetch's first record, on the consumer's thread, unless something sought it elsewhere since
the fetch. Here against stand-ins for aiokafka's consumer and faust's consumer thread: the
rule's cases, worked out by hand; the hang itself is in the two-worker test on the broker.
"""

from __future__ import annotations

import asyncio
from collections import namedtuple

from faust.types import TP

from rater.worker.adapter import BulkConsumer

Record = namedtuple("Record", "offset")
CHANGELOG = "app-accounts-changelog"


class State:
    def __init__(self, position: int | None):
        self.has_valid_position = position is not None
        self.position = position


class Aio:
    """aiokafka's consumer as ``_hand_back`` reads it: the assignment's states, and seek."""

    def __init__(self, positions: dict[TP, int | None]):
        states = {tp: State(p) for tp, p in positions.items()}
        assignment = type("Assignment", (), {"state_value": staticmethod(states.get)})()
        self._subscription = type("Sub", (), {"subscription": type("S", (), {"assignment": assignment})()})()
        self.sought: dict[TP, int] = {}

    def seek(self, tp: TP, offset: int) -> None:
        self.sought[tp] = offset


class Thread:
    def __init__(self, aio: Aio):
        self.aio = aio

    def _ensure_consumer(self) -> Aio:
        return self.aio

    async def call_thread(self, fn):
        return await fn()


class Consumer:
    bulk_topics = frozenset({"cdrs", "tenant-commands"})

    def __init__(self, aio: Aio, read_offset: dict[TP, int]):
        self._thread = Thread(aio)
        self._read_offset = read_offset


def test_a_changelog_partition_fetched_during_a_rebalance_is_sought_back_to_its_first_record():
    p0, p1, p2 = (TP(CHANGELOG, n) for n in range(3))
    cdrs = TP("cdrs", 0)
    records = {
        p0: [Record(o) for o in range(0, 9)],  # offsets 0..8: the consumer is at 9
        p1: [Record(o) for o in range(5, 8)],  # 5..7, at 8
        p2: [Record(o) for o in range(0, 4)],  # 0..3, but recovery sought it to 2 since
        cdrs: [Record(40), Record(41)],
    }
    aio = Aio({p0: 9, p1: 8, p2: 2, cdrs: 42})
    consumer = Consumer(aio, read_offset={p0: 3, p1: 3, p2: 3})

    left = asyncio.run(BulkConsumer._hand_back(consumer, records))

    assert aio.sought == {p0: 0, p1: 5}  # p2 is where recovery put it
    # As faust's own seek_wait leaves them: no read offset for 0, the first offset else.
    assert consumer._read_offset == {p1: 5, p2: 3}
    # The changelog records are fetched again; the input records go on as before.
    assert left == {cdrs: [Record(40), Record(41)]}


def test_a_fetch_without_changelog_records_is_left_as_it_is():
    cdrs = TP("cdrs", 1)
    aio = Aio({cdrs: 11})
    left = asyncio.run(BulkConsumer._hand_back(Consumer(aio, {}), {cdrs: [Record(10)]}))
    assert (left, aio.sought) == ({cdrs: [Record(10)]}, {})
