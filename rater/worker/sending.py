"""Producing many records at once: one record batch per topic partition.

``producer.send()`` costs tens of microseconds a record in aiokafka; appending to a
batch costs a few, and one future stands for the whole batch. The worker writes every
output of a batch, and every changed account, through here and waits for the futures.
With the native engine built, the worker hands the whole list to
``rater_native.partition_batches`` (``batches``, from the adapter), which partitions the
records and builds each partition's record batches in one call, instead of grouping
them in Python and appending them one by one to aiokafka's ``BatchBuilder`` (about
2 µs a record against 0.4); the bytes are the same (``tests/worker/test_record_batches.py``).
A batch's outputs come as a sequence of their own, ``(topic, key, value)`` each to its
key's partition: the native step's stay native (``rater_native.BatchOutputs``) into
their record batches.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from itertools import chain
from typing import Any, Awaitable, Callable, Iterator, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from rater.core.partitioning import partition_for

log = logging.getLogger("rater")

Record = tuple[str, int | None, bytes | None, bytes | None, list | None]  # topic, partition, key, value, headers
Output = tuple[str, bytes | None, bytes]  # topic, key, value: to the key's partition
# (records, partitions of each topic, outputs) -> ([(topic, partition, batches for
# ``producer.send_batch``)], topics missing from the partitions: then nothing else).
Batches = Callable[[list[Record], dict[str, int], Sequence[Output]], tuple[list[tuple[str, int, list[Any]]], list[str]]]


def as_records(outputs: Sequence[Output]) -> Iterator[Record]:
    """Outputs as records (partition None: the key's)."""
    return ((topic, None, key, value, None) for topic, key, value in outputs)


class Delivery:
    """What one ``send_all`` delivered: the last offset written to each partition."""

    def __init__(self) -> None:
        self.last_offset: dict[tuple[str, int], int] = {}


async def send_all(
    producer: AIOKafkaProducer, records: list[Record], batches: Batches | None = None, outputs: Sequence[Output] = ()
) -> Delivery:
    """Produce ``records`` (partition None: the key's murmur2 partition), then ``outputs``,
    and wait until Kafka has acknowledged all of them. Order is kept within each
    partition. ``batches`` partitions them and builds the record batches (None: here,
    with aiokafka's ``BatchBuilder``)."""
    if batches is not None:
        return await _send_built(producer, records, batches, outputs)
    groups: dict[tuple[str, int], list[tuple[bytes | None, bytes, list | None]]] = defaultdict(list)
    counts: dict[str, int] = {}
    for topic, partition, key, value, headers in chain(records, as_records(outputs)):
        if partition is None:
            n = counts.get(topic)
            if n is None:
                n = counts[topic] = len(await producer.partitions_for(topic))
            partition = partition_for(key, n) if key else 0
        groups[(topic, partition)].append((key, value, headers))
    pending = []
    for (topic, partition), items in groups.items():
        batch = producer.create_batch()
        n = 0
        for key, value, headers in items:
            if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                if n == 0:
                    raise MessageSizeTooLargeError(f"a record of {len(value or b'')} bytes does not fit a batch for {topic}")
                pending.append((topic, partition, n, await producer.send_batch(batch, topic, partition=partition)))
                batch = producer.create_batch()
                n = 0
                if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                    raise MessageSizeTooLargeError(f"a record of {len(value or b'')} bytes does not fit a batch for {topic}")
            n += 1
        pending.append((topic, partition, n, await producer.send_batch(batch, topic, partition=partition)))
    return await _delivered(pending)


async def _send_built(producer: AIOKafkaProducer, records: list[Record], batches: Batches, outputs: Sequence[Output]) -> Delivery:
    counts: dict[str, int] = {}
    groups, missing = batches(records, counts, outputs)
    if missing:
        for topic in missing:
            counts[topic] = len(await producer.partitions_for(topic))
        groups, missing = batches(records, counts, outputs)
        if missing:
            raise RuntimeError(f"no partition count for {missing}")
    pending = []
    for topic, partition, built in groups:
        for batch in built:
            pending.append((topic, partition, batch.record_count(), await producer.send_batch(batch, topic, partition=partition)))
    return await _delivered(pending)


async def _delivered(pending: list) -> Delivery:
    """Wait for each sent batch (topic, partition, records, future): the last offsets."""
    delivery = Delivery()
    for topic, partition, n, fut in pending:
        meta = await fut
        last = meta.offset + n - 1
        key = (topic, partition)
        if last > delivery.last_offset.get(key, -1):
            delivery.last_offset[key] = last
    return delivery


async def send_outputs(
    producer: AIOKafkaProducer,
    records: list[Record],
    outputs: Sequence[Output],
    one_by_one: Callable[[], Awaitable[AIOKafkaProducer]],
    replace: Callable[[int], Record | None],
    batches: Batches | None = None,
) -> bool:
    """``send_all``, and when Kafka refuses a record for its size (``MessageSizeTooLargeError``,
    the broker's ``message.max.bytes`` or the topic's ``max.message.bytes``), every record
    again, one at a time, each refused one replaced by ``replace(index)`` (index: among
    ``records`` then ``outputs``; the reject of its input, ``rater/core/bounds.py``), so
    one record never stops the stream. Returns False when
    that fallback ran: the caller's idempotent ``producer`` is then unusable (a refused
    batch breaks its sequence numbers) and must be replaced.

    The fallback uses a producer from ``one_by_one`` (not idempotent; closed here) and
    waits for each record before the next, so the order within every partition is kept.
    Records written before the refusal are written again: outputs are at least once,
    with stable event ids (SPEC 7)."""
    try:
        await send_all(producer, records, batches, outputs)
        return True
    except MessageSizeTooLargeError as exc:
        n = len(records) + len(outputs)
        log.warning("Kafka refused an output for its size (%s); writing the batch's %d outputs one by one", exc, n)
    plain = await one_by_one()
    try:
        for i, record in enumerate(chain(records, as_records(outputs))):
            try:
                await send_all(plain, [record], batches)
            except MessageSizeTooLargeError:
                instead = replace(i)
                if instead is None:
                    raise
                log.warning("output %s of %d bytes refused for its size; its input is rejected instead", record[0], len(record[3] or b""))
                await send_all(plain, [instead], batches)
    finally:
        await plain.stop()
    return False
