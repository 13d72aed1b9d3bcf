"""The changelog read into the store in bulk before faust's recovery (``rater/worker/catchup.py``).

``behind``'s rule with figures worked out by hand; ``CatchUp.run`` on the broker against
a store of plain dicts (the store, not Kafka, stands in), its result replayed
independently from the records produced; ``_ChangelogStore`` over real RocksDB databases.
The worker's own start on an empty state dir is in ``test_faults.py`` (2b)."""

from __future__ import annotations

import asyncio
import time

import rocksdict
from faust.types import TP

from rater.connection import KafkaSettings
from rater.worker.adapter import _ChangelogStore
from rater.worker.catchup import CatchUp, behind
from tests.support.kafka import create_topic, produce
from tests.support.worker import unique

# ---------------------------------------------------------------------------- the rule

A, B, C = TP("log", 0), TP("log", 1), TP("log", 2)


def test_behind_reads_every_partition_past_its_store_once_all_are_least_behind():
    # A holds nothing (read from 0: 400 behind), B holds through 99 (from 100: 500), C is at
    # its end (holds through 29 of 30): 900 in all.
    persisted = {A: None, B: 99, C: 29}
    ends = {A: 400, B: 600, C: 30}
    assert behind(persisted, ends, 900) == {A: 0, B: 100}
    assert behind(persisted, ends, 901) == {}
    assert behind(persisted, ends, 0) == {}  # 0: never


def test_behind_leaves_out_a_store_past_the_end_and_a_partition_without_an_end():
    # B's store claims more than the log holds (faust's recovery reports it); C had no end.
    assert behind({A: 4, B: 700, C: None}, {A: 10, B: 600}, 1) == {A: 5}
    assert behind({A: 9}, {A: 10}, 1) == {}  # holds through 9 of 0..9


# ---------------------------------------------------------------------------- the read, on the broker


class DictStore:
    """``ChangelogStore`` as plain dicts: per partition, its records and persisted offset."""

    def __init__(self, held: dict[int, dict[bytes, bytes]], persisted: dict[int, int | None]):
        self.held = held
        self.offsets = persisted
        self.writes = 0

    def persisted(self, partition: int) -> int | None:
        return self.offsets[partition]

    def write(self, partition: int, records: list, last_offset: int) -> None:
        db = self.held[partition]
        for key, value in records:
            if value is None:
                db.pop(key, None)
            else:
                db[key] = value
        self.offsets[partition] = last_offset
        self.writes += 1


def _changelog(bootstrap: str) -> tuple[str, list[tuple[bytes, bytes | None, int]]]:
    """A two-partition topic: 600 records in each, 50 keys per partition written over and
    over, every 7th record a tombstone; the records as produced, with their partitions."""
    topic = unique("catchup")
    create_topic(bootstrap, topic, 2)
    records = []
    for i in range(1200):
        p = i % 2
        key = f"k{p}-{i % 100 // 2:02d}".encode()
        value = None if i % 7 == 3 else f"v{i}".encode()
        records.append((key, value, p))
    produce(bootstrap, topic, records)
    return topic, records


def _end_offsets(ends):
    async def ask(tps):
        return {tp: ends[tp.partition] for tp in tps}

    return ask


def _replayed(records: list, partition: int, first: int | None = None) -> dict[bytes, bytes]:
    """The partition's records (its ``first`` ones, or all) applied in order, as a store
    holds them: a tombstone deletes its key."""
    held: dict[bytes, bytes] = {}
    for key, value, _p in [r for r in records if r[2] == partition][:first]:
        if value is None:
            held.pop(key, None)
        else:
            held[key] = value
    return held


def test_a_bulk_read_brings_each_store_to_the_end_from_its_persisted_offset(kafka_broker):
    topic, records = _changelog(kafka_broker.bootstrap)
    # Partition 1's store holds its first 200 records (offsets 0..199), as a store would.
    store = DictStore({0: {}, 1: _replayed(records, 1, 200)}, {0: None, 1: 199})
    catchup = CatchUp(KafkaSettings(kafka_broker.bootstrap), least=1000)
    tps = [TP(topic, 0), TP(topic, 1)]
    figures = asyncio.run(catchup.run(store, tps, _end_offsets({0: 600, 1: 600}), lambda: True))
    assert figures is not None and figures.complete and figures.stopped == ""
    assert (figures.partitions, figures.records) == (2, 600 + 400)
    assert catchup.read == 1000
    assert store.offsets == {0: 599, 1: 599}
    for p in (0, 1):  # the log replayed here, record by record
        assert store.held[p] == _replayed(records, p), p


def test_fewer_records_behind_than_least_are_left_to_faust(kafka_broker):
    topic, _records = _changelog(kafka_broker.bootstrap)
    store = DictStore({0: {}, 1: {}}, {0: None, 1: 199})
    catchup = CatchUp(KafkaSettings(kafka_broker.bootstrap), least=1001)
    tps = [TP(topic, 0), TP(topic, 1)]
    assert asyncio.run(catchup.run(store, tps, _end_offsets({0: 600, 1: 600}), lambda: True)) is None
    assert (store.writes, store.offsets, catchup.read) == (0, {0: None, 1: 199}, 0)


def test_a_new_rebalance_stops_the_bulk_read_before_it_writes(kafka_broker):
    topic, _records = _changelog(kafka_broker.bootstrap)
    store = DictStore({0: {}, 1: {}}, {0: None, 1: None})
    catchup = CatchUp(KafkaSettings(kafka_broker.bootstrap), least=1)
    figures = asyncio.run(catchup.run(store, [TP(topic, 0)], _end_offsets({0: 600}), iter([True, False]).__next__))
    assert figures is not None and not figures.complete and figures.stopped == "rebalance"
    assert (figures.records, store.writes, store.offsets[0]) == (0, 0, None)


def test_a_bulk_read_that_gets_nothing_stops_after_the_stall_limit(kafka_broker):
    topic, _records = _changelog(kafka_broker.bootstrap)
    store = DictStore({0: {}}, {0: 599})
    catchup = CatchUp(KafkaSettings(kafka_broker.bootstrap), least=1, stall=1.0)
    started = time.monotonic()
    # The end offset claims 100 records past the log's end: none ever comes.
    figures = asyncio.run(catchup.run(store, [TP(topic, 0)], _end_offsets({0: 700}), lambda: True))
    assert figures is not None and figures.stopped == "stall" and figures.records == 0
    assert 1.0 <= time.monotonic() - started < 20
    assert store.offsets[0] == 599


def test_a_bulk_read_ends_within_its_budget_keeping_what_it_wrote(kafka_broker):
    topic, records = _changelog(kafka_broker.bootstrap)
    store = DictStore({0: {}}, {0: None})
    catchup = CatchUp(KafkaSettings(kafka_broker.bootstrap), least=1, stall=60.0, budget=1.0)
    started = time.monotonic()
    # The end offset claims 100 records past the log's end: the 600 there are read, then
    # nothing comes, and the budget (not the stall limit) ends the read.
    figures = asyncio.run(catchup.run(store, [TP(topic, 0)], _end_offsets({0: 700}), lambda: True))
    assert figures is not None and figures.stopped == "budget" and figures.records == 600
    assert 1.0 <= time.monotonic() - started < 20
    assert store.offsets[0] == 599
    assert len(store.held[0]) == len(_replayed(records, 0))


# ---------------------------------------------------------------------------- faust's RocksDB store


class FaustStore:
    """What ``_ChangelogStore`` reads of faust's RocksDB store: a database per partition
    and the key of the persisted offset (``faust/stores/rocksdb.py``)."""

    offset_key = b"__faust\0offset__"

    def __init__(self, path):
        self.path = path
        self.dbs: dict[int, rocksdict.Rdict] = {}

    def _db_for_partition(self, partition: int) -> rocksdict.Rdict:
        if partition not in self.dbs:
            self.dbs[partition] = rocksdict.Rdict(str(self.path / f"p{partition}"), options=rocksdict.Options(raw_mode=True))
        return self.dbs[partition]


def test_the_rocksdb_store_writes_records_and_offset_together(tmp_path):
    faust_store = FaustStore(tmp_path)
    store = _ChangelogStore(faust_store)
    assert store.persisted(3) is None
    store.write(3, [(b"t-1", b"one"), (b"t-2", b"two")], 41)
    store.write(3, [(b"t-1", None), (b"t-3", b"three")], 57)
    db = faust_store._db_for_partition(3)
    assert store.persisted(3) == 57
    assert db.get(FaustStore.offset_key) == b"57"  # as faust's set_persisted_offset writes it
    assert dict(db.items()) == {b"t-2": b"two", b"t-3": b"three", FaustStore.offset_key: b"57"}
