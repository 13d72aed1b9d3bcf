"""Producing many records at once: one ``BatchBuilder`` per topic partition.

``producer.send()`` costs tens of microseconds a record in aiokafka; appending to a
batch costs a few, and one future stands for the whole batch. The worker writes every
output of a batch, and every changed account, through here and waits for the futures.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from aiokafka import AIOKafkaProducer

from .partitioning import partition_for

Record = tuple[str, int | None, bytes | None, bytes | None, list | None]  # topic, partition, key, value, headers


class Delivery:
    """What one ``send_all`` delivered: the last offset written to each partition."""

    def __init__(self) -> None:
        self.last_offset: dict[tuple[str, int], int] = {}


async def send_all(producer: AIOKafkaProducer, records: Iterable[Record]) -> Delivery:
    """Produce ``records`` (partition None: the key's murmur2 partition) and wait until
    Kafka has acknowledged all of them. Order is kept within each partition."""
    groups: dict[tuple[str, int], list[tuple[bytes | None, bytes, list | None]]] = defaultdict(list)
    counts: dict[str, int] = {}
    for topic, partition, key, value, headers in records:
        if partition is None:
            n = counts.get(topic)
            if n is None:
                await producer.client._wait_on_metadata(topic)
                n = counts[topic] = len(producer.client.cluster.partitions_for_topic(topic))
            partition = partition_for(key, n) if key else 0
        groups[(topic, partition)].append((key, value, headers))
    pending = []
    for (topic, partition), items in groups.items():
        batch = producer.create_batch()
        n = 0
        for key, value, headers in items:
            if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                if n == 0:
                    raise ValueError(f"a record of {len(value or b'')} bytes does not fit a batch for {topic}")
                pending.append((topic, partition, n, await producer.send_batch(batch, topic, partition=partition)))
                batch = producer.create_batch()
                n = 0
                if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                    raise ValueError(f"a record of {len(value or b'')} bytes does not fit a batch for {topic}")
            n += 1
        pending.append((topic, partition, n, await producer.send_batch(batch, topic, partition=partition)))
    delivery = Delivery()
    for topic, partition, n, fut in pending:
        meta = await fut
        last = meta.offset + n - 1
        key = (topic, partition)
        if last > delivery.last_offset.get(key, -1):
            delivery.last_offset[key] = last
    return delivery
