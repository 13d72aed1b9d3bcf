"""Record batches built natively (``rater_native.partition_batches``, the adapter's
``native_batches``) are the bytes aiokafka's own ``BatchBuilder`` writes for the same
records, stamped with the same time: same header, same CRC, same split into batches;
and the records are partitioned as ``send_all`` partitions them in Python."""

from __future__ import annotations

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from hypothesis import given, settings
from hypothesis import strategies as st

from rater.core.native_engine import available

pytestmark = pytest.mark.skipif(not available(), reason="the native engine is not built")

STAMP = 1_795_132_800_123


def aiokafka_batches(items: list, batch_size: int, state: tuple[int, int, int] | None) -> list[bytes]:
    """What rater/worker/sending.py's BatchBuilder path writes for one partition."""
    out = []
    batch = BatchBuilder(batch_size, 0)
    for key, value, headers in items:
        if batch.append(timestamp=STAMP, key=key, value=value, headers=headers or []) is None:
            out.append(batch)
            batch = BatchBuilder(batch_size, 0)
            assert batch.append(timestamp=STAMP, key=key, value=value, headers=headers or []) is not None
    out.append(batch)
    if state is not None:
        for b in out:
            b._set_producer_state(*state)
    return [bytes(b._build()) for b in out]


def native_batches(items: list, batch_size: int, state: tuple[int, int, int] | None) -> list[bytes]:
    import rater_native

    from rater.worker.adapter import _NativeBatch

    records = [("t", 0, key, value, headers) for key, value, headers in items]
    groups, missing = rater_native.partition_batches(records, {}, batch_size, STAMP)
    assert missing == [] and [(t, p) for t, p, _b in groups] == [("t", 0)]
    out = [_NativeBatch(b) for b in groups[0][2]]
    if state is not None:
        for b in out:
            b._set_producer_state(*state)
    return [b._build() for b in out]


ITEMS = [
    (b"acme-00001", b'{"event_id":"e1"}', None),
    (None, b"no key", []),
    (b"k", None, None),  # a deletion (a changelog tombstone)
    (b"", b"", [("rater-forwarded-from", b"cdrs/3/17"), ("\u00e9t\u00e9", None)]),
    (b"big", b"x" * 70_000, None),
]


@pytest.mark.parametrize("state", [None, (4_001, 0, 0), (4_001, 3, 1_234_567)])
def test_the_same_bytes_as_aiokafka_for_every_kind_of_record(state):
    got = native_batches(ITEMS, 1 << 20, state)
    assert len(got) == 1
    assert got == aiokafka_batches(ITEMS, 1 << 20, state)
    batch = DefaultRecordBatch(got[0])
    assert batch.validate_crc()
    assert [(r.key, r.value, r.timestamp) for r in batch] == [(k, v, STAMP) for k, v, _h in ITEMS]


def test_a_batch_full_at_the_size_is_split_where_aiokafka_splits_it():
    # The big record alone (a batch takes its first record whatever its size), then 10
    # records of about 1,010 bytes in batches below 3,000 bytes: 61 bytes of header and
    # two records (2,081); a third would make 3,091.
    items = [(b"big", b"y" * 5_000, None)] + [(b"t%d" % i, b"v" * 1_000, None) for i in range(10)]
    got = native_batches(items, 3_000, (7, 1, 40))
    assert [len(list(DefaultRecordBatch(b))) for b in got] == [1, 2, 2, 2, 2, 2]
    assert got == aiokafka_batches(items, 3_000, (7, 1, 40))


record = st.tuples(
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=3_000)),
    st.one_of(st.none(), st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=10))), max_size=3)),
)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(record, min_size=1, max_size=30), size=st.integers(100, 20_000))
def test_any_records_any_batch_size(items, size):
    assert native_batches(items, size, (11, 2, 99)) == aiokafka_batches(items, size, (11, 2, 99))


def test_records_are_partitioned_and_grouped_as_send_all_does_in_python():
    import rater_native

    from rater.core.partitioning import partition_for

    records = [
        ("out", None, b"acme-00001", b"1", None),
        ("out", None, b"zeta-00002", b"2", None),
        ("log", None, b"acme-00001", None, None),
        ("out", None, None, b"no key: partition 0", None),
        ("out", None, b"", b"empty key: partition 0", None),
        ("out", 5, b"acme-00001", b"an explicit partition", [("h", b"v")]),
        ("out", None, b"acme-00001", b"3", None),
    ]
    counts = {"out": 8, "log": 3}
    groups, missing = rater_native.partition_batches(records, counts, 1 << 20, STAMP)
    assert missing == []
    # What sending.py's Python path builds: groups in the order first met, records in order.
    want: dict[tuple[str, int], list] = {}
    for topic, partition, key, value, _headers in records:
        if partition is None:
            partition = partition_for(key, counts[topic]) if key else 0
        want.setdefault((topic, partition), []).append((key, value))
    got = {(t, p): [(r.key, r.value) for b in built for r in DefaultRecordBatch(b.finish(-1, -1, 0))] for t, p, built in groups}
    assert list(got) == list(want)
    assert got == want
    assert partition_for(b"acme-00001", 8) != partition_for(b"zeta-00002", 8)  # the example splits


def test_topics_with_no_partition_count_are_asked_for_first():
    import rater_native

    records = [("a", None, b"k", b"v", None), ("b", 2, b"k", b"v", None), ("c", None, b"k", b"v", None), ("a", None, b"j", b"v", None)]
    assert rater_native.partition_batches(records, {"c": 4}, 1 << 20, STAMP) == ([], ["a"])
    # A topic met first with its partition given still needs its count for a later record.
    later = [("b", 2, b"k", b"v", None), ("b", None, b"k", b"v", None)]
    assert rater_native.partition_batches(later, {}, 1 << 20, STAMP) == ([], ["b"])
    groups, missing = rater_native.partition_batches(records, {"a": 1, "c": 4}, 1 << 20, STAMP)
    from rater.core.partitioning import partition_for

    assert missing == [] and [(t, p) for t, p, _b in groups] == [("a", 0), ("b", 2), ("c", partition_for(b"k", 4))]


OUTPUT_TOPICS = ("rated", "events", "requests", "rejects")


def test_batch_outputs_read_as_the_list_of_tuples_they_stand_for():
    """``rater_native.BatchOutputs``, the native step's ``BatchResult.outputs``, to Python:
    a sequence of (topic, key, value) that takes appends and replacements."""
    import rater_native

    out = rater_native.BatchOutputs(OUTPUT_TOPICS)
    assert len(out) == 0 and list(out) == []
    out.append(("events", b"acme-00001", b'{"e":1}'))
    out.append(("rejects", None, b"{}"))
    out.append(("audit", b"", b""))  # a topic beyond the four
    assert list(out) == [("events", b"acme-00001", b'{"e":1}'), ("rejects", None, b"{}"), ("audit", b"", b"")]
    assert out[-1] == ("audit", b"", b"") and out[0] == ("events", b"acme-00001", b'{"e":1}')
    out[0] = ("rejects", b"acme-00001", b"the reject")
    assert out[0] == ("rejects", b"acme-00001", b"the reject") and out[1] == ("rejects", None, b"{}") and len(out) == 3
    with pytest.raises(IndexError):
        out[3]
    with pytest.raises(IndexError):
        out[-4] = ("rated", None, b"")
    with pytest.raises(ValueError, match="four different names"):
        rater_native.BatchOutputs(("a", "b", "a", "c"))


def test_outputs_are_partitioned_by_key_after_the_records_natively_or_listed():
    """``partition_batches``' outputs, native or a list of tuples: each to its key's murmur2
    partition (0 without a key), after the records, grouped in the order first met."""
    import rater_native

    from rater.core.partitioning import partition_for

    records = [("rated", 1, b"acme-00001", b"forwarded", [("h", b"v")])]
    outputs = [
        ("rated", b"acme-00001", b"1"),
        ("events", b"zeta-00002", b"2"),
        ("rated", b"zeta-00002", b"3"),
        ("rejects", None, b"no key"),
        ("rated", b"acme-00001", b"4"),
    ]
    counts = {"rated": 8, "events": 4, "rejects": 2}
    native = rater_native.BatchOutputs(OUTPUT_TOPICS)
    for output in outputs:
        native.append(output)
    want: dict[tuple[str, int], list] = {("rated", 1): [(b"acme-00001", b"forwarded")]}
    for topic, key, value in outputs:
        want.setdefault((topic, partition_for(key, counts[topic]) if key else 0), []).append((key, value))
    for given_outputs in (native, outputs):
        groups, missing = rater_native.partition_batches(records, counts, 1 << 20, STAMP, given_outputs)
        assert missing == []
        got = {(t, p): [(r.key, r.value) for b in built for r in DefaultRecordBatch(b.finish(-1, -1, 0))] for t, p, built in groups}
        assert list(got) == list(want) and got == want
    # A topic of the outputs with no partition count is asked for first, natively or listed.
    assert rater_native.partition_batches(records, {"rated": 8}, 1 << 20, STAMP, native) == ([], ["events", "rejects"])
    assert rater_native.partition_batches(records, {"rated": 8}, 1 << 20, STAMP, outputs) == ([], ["events", "rejects"])


@pytest.mark.kafka
def test_both_send_paths_write_the_same_records_to_a_real_broker(kafka_broker):
    """``send_all`` with aiokafka's BatchBuilder (``batches`` None) and with the native
    batches, on an idempotent producer as the worker's, into two topics of 4 partitions,
    the records then the outputs (a list, and a native ``BatchOutputs``): the same records
    on the same partitions in the same order, the same last offsets."""
    import asyncio
    import uuid

    import rater_native
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from rater.worker.adapter import native_batches
    from rater.worker.sending import send_all
    from rater.worker.topics import create_missing

    run = uuid.uuid4().hex[:8]
    topics = {"python": f"rb-python-{run}", "native": f"rb-native-{run}"}

    def records(topic: str) -> list:
        out = []
        for i in range(300):
            key = f"tenant-{i % 37:03d}".encode()
            if i % 50 == 7:
                out.append((topic, None, key, None, None))  # a tombstone
            elif i % 50 == 11:
                out.append((topic, 3, key, b"forwarded %d" % i, [("rater-forwarded-from", b"cdrs/1/%d" % i)]))
            elif i % 50 == 13:
                out.append((topic, None, None, b"keyless %d" % i, None))
            else:
                out.append((topic, None, key, b"v" * (i * 7 % 900) + b"%d" % i, None))
        return out

    def outputs(topic: str) -> list:
        return [(topic, f"tenant-{i % 11:03d}".encode() if i % 9 else None, b"output %d" % i) for i in range(60)]

    def native_outputs(topic: str):
        native = rater_native.BatchOutputs((topic, "b", "c", "d"))
        for output in outputs(topic):
            native.append(output)
        return native

    async def go() -> dict:
        client = {"bootstrap_servers": kafka_broker.bootstrap}
        await create_missing(client, topics.values(), 4)
        producer = AIOKafkaProducer(**client, acks="all", enable_idempotence=True, linger_ms=0, max_batch_size=1 << 20)
        await producer.start()
        try:
            python = await send_all(producer, records(topics["python"]), None, outputs(topics["python"]))
            native = await send_all(producer, records(topics["native"]), native_batches, native_outputs(topics["native"]))
        finally:
            await producer.stop()
        got = {}
        for name, topic in topics.items():
            consumer = AIOKafkaConsumer(**client, auto_offset_reset="earliest", enable_auto_commit=False)
            await consumer.start()
            try:
                tps = [TopicPartition(topic, p) for p in range(4)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                seen: dict[int, list] = {p: [] for p in range(4)}
                while sum(len(v) for v in seen.values()) < 360:
                    for tp, msgs in (await consumer.getmany(timeout_ms=2000)).items():
                        seen[tp.partition] += [(m.offset, m.key, m.value, list(m.headers)) for m in msgs]
            finally:
                await consumer.stop()
            got[name] = seen
        return {"python": python, "native": native, "records": got}

    out = asyncio.run(go())
    assert out["records"]["native"] == out["records"]["python"]
    assert {tp[1]: o for tp, o in out["native"].last_offset.items()} == {tp[1]: o for tp, o in out["python"].last_offset.items()}
    assert sum(len(v) for v in out["records"]["native"].values()) == 360
    assert [m[0] for m in out["records"]["native"][3]] == list(range(len(out["records"]["native"][3])))
