"""Record batches built natively (``rater_native.record_batches``, the adapter's
``native_batches``) are the bytes aiokafka's own ``BatchBuilder`` writes for the same
records, stamped with the same time: same header, same CRC, same split into batches."""

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

    out = [_NativeBatch(b) for b in rater_native.record_batches(items, batch_size, STAMP)]
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
