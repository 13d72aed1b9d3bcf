"""Input records read natively from the fetched bytes (``rater_native.read_fetch``, the
adapter's ``_FetchedRecords``) are aiokafka's own, record for record: for any fetch of
plain, compressed, older-format, transactional and control batches (a cut batch at its
end, a fetch offset inside a batch, either isolation level), the same records with the
same offsets, timestamps, keys and values, the same position after each one, the same
errors (of the same type; their text too, but where it names a position in the bytes);
and arbitrary bytes give what aiokafka gives."""

from __future__ import annotations

import struct

import pytest
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record._crc32c import crc as crc32c
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rater.core.native_engine import available

pytestmark = pytest.mark.skipif(not available(), reason="the native engine is not built")

TP = TopicPartition("cdrs", 3)
LOG_APPEND, CONTROL = 0x08, 0x20
CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def v2_batch(base: int, records: list, *, codec: int = 0, pid: int = -1, txn: bool = False, attrs: int = 0) -> bytes:
    """A format 2 batch at ``base``: aiokafka's builder, then ``attrs`` set in its header
    (the CRC written again), as a broker would store a control or log-append-time batch."""
    b = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=int(txn),
        producer_id=pid,
        producer_epoch=0 if pid >= 0 else -1,
        base_sequence=0 if pid >= 0 else -1,
        batch_size=1 << 22,
    )
    for i, (ts, key, value, headers) in enumerate(records):
        b.append(i, timestamp=ts, key=key, value=value, headers=headers)
    buf = bytearray(b.build())
    buf[0:8] = struct.pack(">q", base)
    if attrs:
        (a,) = struct.unpack_from(">h", buf, 21)
        struct.pack_into(">h", buf, 21, a | attrs)
        struct.pack_into(">I", buf, 17, crc32c(bytes(buf[21:])))
    return bytes(buf)


def legacy_batch(base: int, ts: int, key: bytes | None, value: bytes | None) -> bytes:
    """One message of format 1 (uncompressed, a message is its own entry) at ``base``."""
    b = LegacyRecordBatchBuilder(magic=1, compression_type=0, batch_size=1 << 22)
    b.append(0, timestamp=ts, key=key, value=value)
    buf = bytearray(b.build())
    buf[0:8] = struct.pack(">q", base)
    return bytes(buf)


def control_batch(base: int, pid: int, abort: bool) -> bytes:
    marker = (struct.pack(">hh", 0, 0 if abort else 1), b"\x00\x00\x00\x00\x00\x00", [])
    return v2_batch(base, [(1_000, *marker)], pid=pid, txn=True, attrs=CONTROL)


def read(cls, mem, fetch: bytes, aborted, fetch_offset: int, isolation: int, check_crcs: bool = True, text: bool = True):
    """Every record the partition records yield, each with the position after it, and
    the position at the end (or the exception: its type, and its text unless ``text`` is
    false)."""
    pr = cls(TP, mem(fetch), list(aborted), fetch_offset, None, None, check_crcs, isolation)
    out = []
    try:
        for r in pr:
            out.append((r.topic, r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value, pr.next_fetch_offset))
    except Exception as exc:
        out.append((type(exc).__name__, str(exc) if text else ""))
    return out, pr.next_fetch_offset


def both(fetch: bytes, aborted=(), fetch_offset: int = 0, isolation: int = 1, check_crcs: bool = True, text: bool = True):
    from rater.worker import adapter

    adapter._NATIVE_TOPICS.add(TP.topic)
    theirs = read(PartitionRecords, MemoryRecords, fetch, aborted, fetch_offset, isolation, check_crcs, text)
    ours = read(adapter._FetchedRecords, adapter._KeptMemoryRecords, fetch, aborted, fetch_offset, isolation, check_crcs, text)
    return theirs, ours


def one_format(fetch: bytes) -> bool:
    """Every whole batch of ``fetch`` in the format of the first: aiokafka 0.14's
    ``MemoryRecords`` reads them all in that one (a format 1 message after a format 2
    batch is read as format 2), where the native reader reads each batch in its own."""
    magics, pos = set(), 0
    while len(fetch) - pos >= 17:
        (length,) = struct.unpack_from(">i", fetch, pos + 8)
        if length < 0 or pos + 12 + length > len(fetch):
            break
        magics.add(fetch[pos + 16])
        pos += 12 + length
    return len(magics) <= 1


blobs = st.one_of(st.none(), st.binary(max_size=40))
header = st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=8)))
record = st.tuples(st.integers(0, 2**41), blobs, blobs, st.lists(header, max_size=2))
kind = st.sampled_from(["plain", "plain", "log_append", "gzip", "snappy", "lz4", "zstd", "txn", "txn_aborted", "commit", "abort"])


@st.composite
def fetches(draw):
    """A fetch: batches back to back from offset 100, the aborted transactions the broker
    would list for it, and a fetch offset at or after the first batch's first offset.

    Messages of format 1 only in a fetch of them alone (``one_format``). No broker of
    Kafka 4 writes format 1 at all."""
    parts, aborted, offset = [], [], 100
    pid = 7
    kinds = draw(st.one_of(st.lists(kind, min_size=1, max_size=6), st.lists(st.just("legacy"), min_size=1, max_size=3)))
    for k in kinds:
        recs = draw(st.lists(record, min_size=1, max_size=4))
        if k == "legacy":
            recs = recs[:1]
            b = legacy_batch(offset, *recs[0][:3])
        elif k in ("commit", "abort"):
            b = control_batch(offset, pid, k == "abort")
            recs = [None]
        elif k.startswith("txn"):
            pid += 1
            b = v2_batch(offset, recs, pid=pid, txn=True)
            if k == "txn_aborted":
                aborted.append((pid, offset))
        else:
            attrs = LOG_APPEND if k == "log_append" else 0
            b = v2_batch(offset, recs, codec=CODECS.get(k, 0), attrs=attrs)
        parts.append(b)
        offset += len(recs)
    fetch = b"".join(parts)
    if draw(st.booleans()):  # the broker's size limit cut the last batch
        fetch += parts[0][: draw(st.integers(1, len(parts[0]) - 1))]
    return fetch, aborted, draw(st.integers(100, offset))


@settings(max_examples=300, deadline=None)
@given(fetches(), st.sampled_from([0, 1]))
def test_a_fetch_yields_what_aiokafka_yields(fetch, isolation):
    data, aborted, fetch_offset = fetch
    theirs, ours = both(data, aborted, fetch_offset, isolation)
    assert ours == theirs


def test_records_read_natively_are_native_and_compressed_batches_are_aiokafkas():
    from rater.worker import adapter

    adapter._NATIVE_TOPICS.add(TP.topic)
    recs = [(1_700_000_000_000, b"acme-00001", b'{"a":1}', []), (1_700_000_000_005, None, None, [("h", b"v")])]
    fetch = b"".join(v2_batch(10 + 2 * i, recs, codec=c) for i, c in enumerate([0, 1, 2, 3, 4, 0]))
    pr = adapter._FetchedRecords(TP, adapter._KeptMemoryRecords(fetch), [], 10, None, None, True, 1)
    got = list(pr)
    # Plain batches read natively; gzip, snappy, lz4 and zstd by aiokafka (cramjam).
    assert [type(r).__name__ for r in got] == ["Record"] * 2 + ["ConsumerRecord"] * 8 + ["Record"] * 2
    assert [(r.offset, r.timestamp, r.key, r.value) for r in got] == [
        (o, ts, key, value) for o in range(10, 22) for ts, key, value, _h in [recs[o % 2]]
    ]
    assert pr.next_fetch_offset == 22


def test_a_wrong_crc_raises_aiokafkas_error_after_the_records_before_it():
    good = v2_batch(0, [(5, b"k", b"v", [])])
    bad = bytearray(v2_batch(1, [(5, b"k", b"w", [])]))
    bad[-2] ^= 0xFF  # the value, "w"
    theirs, ours = both(good + bytes(bad))
    assert ours == theirs
    error = "[Error 2] CorruptRecordException: Invalid CRC - TopicPartition(topic='cdrs', partition=3)"
    assert theirs[0][0][2] == 0 and theirs[0][-1] == ("CorruptRecordException", error)
    # Without the check, the changed value is read as aiokafka reads it.
    theirs, ours = both(good + bytes(bad), check_crcs=False)
    assert ours == theirs and theirs[0][1][6] == b"\x88"


def test_an_aborted_transaction_is_skipped_up_to_its_marker():
    recs = [(5, b"k", b"v", [])]
    fetch = (
        v2_batch(0, recs, pid=1, txn=True)  # aborted
        + v2_batch(1, recs, pid=2, txn=True)  # committed
        + control_batch(2, 1, abort=True)
        + v2_batch(3, recs, pid=1, txn=True)  # a new transaction of producer 1: read
    )
    theirs, ours = both(fetch, aborted=[(1, 0)])
    assert ours == theirs
    assert [r[2] for r in theirs[0]] == [1, 3] and theirs[1] == 4


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_give_what_aiokafka_gives(data, check_crcs):
    assume(one_format(data))
    theirs, ours = both(data, check_crcs=check_crcs)
    assert ours == theirs


@settings(max_examples=300, deadline=None)
@given(fetches(), st.data())
def test_changed_bytes_give_what_aiokafka_gives(fetch, data):
    """Any byte of a fetch changed (the CRC not checked, so the decoders meet it). The
    same records, and an error of the same type where aiokafka meets one: the text of a
    decoding error names a position, in the whole fetch for aiokafka and in the one
    batch it is handed when the native reader leaves a batch to it."""
    buf = bytearray(fetch[0])
    for _ in range(data.draw(st.integers(1, 3))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    assume(one_format(bytes(buf)))
    theirs, ours = both(bytes(buf), fetch[1], fetch[2], check_crcs=False, text=False)
    assert ours == theirs


def handed_out(native: bool, fetch: bytes, aborted, fetch_offset: int, isolation: int, max_records: int | None, check_crcs: bool = True):
    """What ``FetchResult.getall(max_records)`` hands out, call after call until the fetch
    has no more (aiokafka's fetcher asks it so), with the consumer's position after each
    call; or the exception's type where one is raised. Ours when ``native``: the
    adapter's ``_FetchResult`` over its ``_FetchedRecords``; each call's type is noted."""
    import asyncio

    from aiokafka.consumer.fetcher import FetchResult
    from aiokafka.consumer.subscription_state import Assignment

    from rater.worker import adapter

    async def run() -> list:
        assignment = Assignment([TP])
        state = assignment.state_value(TP)
        state.seek(fetch_offset)
        if native:
            adapter._NATIVE_TOPICS.add(TP.topic)
            pr = adapter._partition_records(
                TP, adapter._KeptMemoryRecords(fetch), list(aborted), fetch_offset, None, None, check_crcs, isolation
            )
            result = adapter._FetchResult(TP, assignment=assignment, partition_records=pr, backoff=0)
        else:
            pr = PartitionRecords(TP, MemoryRecords(fetch), list(aborted), fetch_offset, None, None, check_crcs, isolation)
            result = FetchResult(TP, assignment=assignment, partition_records=pr, backoff=0)
        out = []
        while result.has_more():
            try:
                got = result.getall(max_records)
            except Exception as exc:
                out.append(type(exc).__name__)
                break
            fields = [(r.topic, r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value) for r in got]
            out.append((type(got).__name__ if native else "list", fields, state.position))
        return out

    return asyncio.run(run())


@settings(max_examples=300, deadline=None)
@given(fetches(), st.sampled_from([0, 1]), st.one_of(st.none(), st.integers(1, 9)))
def test_getall_hands_out_what_aiokafka_hands_out_in_runs(fetch, isolation, max_records):
    """The fetcher takes a partition's records with ``FetchResult.getall(max_records)``:
    ours hands out the same records, as many per call, with the same position after each
    call, and one ``rater_native.Records`` (no Python object per record) for a call
    whose records were all read natively; a list where aiokafka read one of them."""
    data, aborted, fetch_offset = fetch
    theirs = handed_out(False, data, aborted, fetch_offset, isolation, max_records)
    ours = handed_out(True, data, aborted, fetch_offset, isolation, max_records)
    assert [o if isinstance(o, str) else o[1:] for o in ours] == [o if isinstance(o, str) else o[1:] for o in theirs]
    for o in ours:
        if not isinstance(o, str) and o[1]:
            aiokafkas = any(type(r).__name__ == "ConsumerRecord" for r in _read_by(data, aborted, fetch_offset, isolation, o[1]))
            assert o[0] == ("list" if aiokafkas else "Records")


def _read_by(fetch: bytes, aborted, fetch_offset: int, isolation: int, fields: list) -> list:
    """The records of ``fields`` as the adapter's per-record iterator gives them (a
    ``Record`` when read natively, aiokafka's ``ConsumerRecord`` else)."""
    from rater.worker import adapter

    pr = adapter._FetchedRecords(TP, adapter._KeptMemoryRecords(fetch), list(aborted), fetch_offset, None, None, True, isolation)
    offsets = {f[2] for f in fields}
    return [r for r in pr if r.offset in offsets]


def test_getall_cuts_a_run_at_max_records_and_goes_on_where_it_stopped():
    """Two plain batches of 3 (offsets 10 to 15) and a gzip one (16, 17), from offset 11:
    ``getall(4)`` hands out 11 to 14 as one ``Records`` (both batches' records joined), the
    position 15; then 15 (the rest of the cut run) with 16 and 17 read by aiokafka, as a
    list; exact values worked out from the batches."""
    recs = [(1_000 + i, b"k%d" % i, b"v%d" % i, []) for i in range(3)]
    fetch = v2_batch(10, recs) + v2_batch(13, recs) + v2_batch(16, recs[:2], codec=1)
    got = handed_out(True, fetch, [], 11, 1, 4)
    assert [(kind, [f[2] for f in fields], position) for kind, fields, position in got] == [
        ("Records", [11, 12, 13, 14], 15),
        ("list", [15, 16, 17], 18),
    ]
    assert [(f[3], f[5], f[6]) for f in got[0][1]] == [
        (1_001, b"k1", b"v1"),
        (1_002, b"k2", b"v2"),
        (1_000, b"k0", b"v0"),
        (1_001, b"k1", b"v1"),
    ]


def test_records_is_a_sequence_of_records_made_when_read():
    """``rater_native.Records``: length, indexes from either end, slices (a step too), the
    records from an offset on, runs of one fetch joined and of two refused."""
    import rater_native

    recs = [(2_000 + i, b"k%d" % i, b"v%d" % i, []) for i in range(5)]
    ((*_, run),) = rater_native.read_fetch(v2_batch(40, recs), "cdrs", 3, True)
    assert type(run) is rater_native.Records and len(run) == 5 and bool(run)
    assert (run[0].offset, run[-1].offset, run[-1].value, run[2].timestamp) == (40, 44, b"v4", 2_002)
    assert (run[1].topic, run[1].partition, run[1].key) == ("cdrs", 3, b"k1")
    with pytest.raises(IndexError):
        run[5]
    with pytest.raises(IndexError):
        run[-6]
    assert [r.offset for r in run[1:4]] == [41, 42, 43]
    assert [r.offset for r in run[::-2]] == [44, 42, 40]
    assert type(run[1:3]) is rater_native.Records and len(run[5:]) == 0 and not run[5:]
    assert [r.offset for r in run.since(42)] == [42, 43, 44] and len(run.since(45)) == 0
    assert [r.offset for r in rater_native.Records.join([run[3:], run[:2]])] == [43, 44, 40, 41]
    ((*_, other),) = rater_native.read_fetch(v2_batch(40, recs), "cdrs", 3, True)
    with pytest.raises(ValueError, match="different fetches"):
        rater_native.Records.join([run, other])
    assert repr(run[1:3]) == "Records(cdrs/3@41..42, 2 records)"
    assert run[::-1].timestamp_range() == (2_000, 2_004) and run[5:].timestamp_range() is None
    # The pipeline's debug ages read a run's range natively, a list's record by record.
    from rater.worker.pipeline import _timestamp_range

    assert _timestamp_range(run[1:4]) == _timestamp_range(list(run[1:4])) == (2_001, 2_003)


def test_a_run_leaves_out_what_aiokafka_leaves_out_of_a_batch_out_of_order():
    """A batch whose offset deltas go 0, 2, 1, 3 (no producer writes one; changed bytes
    can): aiokafka yields 40, 42 and 43, leaving out 41 as below the position after 42;
    the run does the same, also from a fetch offset inside the batch (41: 42, 43)."""
    import rater_native

    b = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20
    )
    for delta in (0, 2, 1, 3):
        b.append(delta, timestamp=1_000, key=None, value=b"v%d" % delta, headers=[])
    fetch = bytearray(b.build())
    fetch[0:8] = struct.pack(">q", 40)
    ((*_, run),) = rater_native.read_fetch(bytes(fetch), "cdrs", 3, True)
    assert [r.offset for r in run] == [40, 42, 41, 43]
    assert [r.offset for r in run.since(40)] == [40, 42, 43]
    assert [r.offset for r in run.since(41)] == [42, 43]
    theirs = [r.offset for r in PartitionRecords(TP, MemoryRecords(bytes(fetch)), [], 40, None, None, True, 1)]
    assert theirs == [40, 42, 43]


@pytest.mark.kafka
def test_a_real_brokers_fetches_read_natively_give_what_aiokafka_gives(kafka_broker):
    """Records from a real broker: plain and gzip batches, a committed and an aborted
    transaction. Read with ``read_committed`` as the worker reads, through aiokafka's
    path and through the native one: the same records, offsets and timestamps, the
    aborted ones in neither; the plain batches' records are handed out as
    ``rater_native.Records`` (a ``rater_native.Record`` each when read one by one)."""
    import asyncio
    import uuid

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from rater.worker import adapter
    from rater.worker.topics import create_missing

    topic = f"fetched-{uuid.uuid4().hex[:8]}"
    client = {"bootstrap_servers": kafka_broker.bootstrap}

    async def produce() -> None:
        await create_missing(client, [topic], 1)
        for extra in ({}, {"compression_type": "gzip"}):
            producer = AIOKafkaProducer(**client, acks="all", linger_ms=50, **extra)
            await producer.start()
            try:
                sent = [await producer.send(topic, b"v%d" % i, key=b"acme-%05d" % i) for i in range(50)]
                await asyncio.gather(*sent)
            finally:
                await producer.stop()
        producer = AIOKafkaProducer(**client, transactional_id=f"t-{topic}")
        await producer.start()
        try:
            for commit in (False, True, False):
                await producer.begin_transaction()
                await producer.send_and_wait(topic, b"committed" if commit else b"aborted", key=b"acme-00001")
                await (producer.commit_transaction() if commit else producer.abort_transaction())
        finally:
            await producer.stop()

    async def consume(native: bool) -> list:
        if native:
            adapter._NATIVE_TOPICS.add(topic)
        else:
            adapter._NATIVE_TOPICS.discard(topic)
        consumer = AIOKafkaConsumer(
            topic, **client, auto_offset_reset="earliest", enable_auto_commit=False, isolation_level="read_committed"
        )
        await consumer.start()
        got: list = []
        try:
            while len(got) < 101:
                for _tp, msgs in (await consumer.getmany(timeout_ms=2000, max_records=10)).items():
                    kinds = {type(m).__name__ for m in msgs}
                    handed.append((type(msgs).__name__, msgs[0].offset, "ConsumerRecord" in kinds))
                    got += [(type(m).__name__, m.offset, m.timestamp, m.key, m.value) for m in msgs]
        finally:
            await consumer.stop()
        return got

    asyncio.run(produce())
    assert adapter.fetch_natively(frozenset({topic}))
    handed: list = []
    theirs = asyncio.run(consume(native=False))
    assert {kind for kind, _offset, _theirs in handed} == {"list"}
    handed.clear()
    ours = asyncio.run(consume(native=True))
    assert [g[1:] for g in ours] == [g[1:] for g in theirs]
    assert [g[4] for g in ours[100:]] == [b"committed"]
    assert {g[0] for g in theirs} == {"ConsumerRecord"}
    assert [g[0] for g in ours[:50]] == ["Record"] * 50
    # The plain batches' records handed out as runs (``rater_native.Records``), ten at a
    # time; a list only where aiokafka read one of them (the gzip batches).
    assert handed[:5] == [("Records", offset, False) for offset in range(0, 50, 10)]
    assert all(kind == ("list" if theirs else "Records") for kind, _offset, theirs in handed)
