"""Kafka I/O of the benchmark itself: topics, bulk publishing, output edges, reading back.

All async (aiokafka). Publishing goes through ``BatchBuilder``s, one per partition, on
the murmur2 partition of the key (SPEC 2), so a million records go out in seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rater.core.partitioning import partition_for
from rater.worker.topics import partitions_of


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int, timeout: float = 30.0) -> None:
    names = list(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            await admin.create_topics([NewTopic(n, partitions, 1) for n in missing])
        deadline = time.monotonic() + timeout
        while True:
            meta = await admin.describe_topics(names)
            ok = all(
                m.get("error_code", 0) == 0
                and len(m["partitions"]) == partitions
                and all(p.get("leader", -1) >= 0 for p in m["partitions"])
                for m in meta
            )
            if ok:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {names} not ready after {timeout:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefix: str) -> int:
    """Delete every topic whose name starts with ``prefix`` (the benchmark's own topics)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [n for n in await admin.list_topics() if n.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return len(names)
    finally:
        await admin.close()


def group_by_partition(items: Iterable[tuple[bytes | None, bytes]], partitions: int) -> dict[int, list]:
    groups: dict[int, list] = defaultdict(list)
    for key, value in items:
        groups[partition_for(key, partitions) if key else 0].append((key, value))
    return groups


async def publish(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes]], partitions: int) -> int:
    """Publish ``(key, value)`` pairs, keyed by tenant, on their murmur2 partition, in
    order within each partition; returns when Kafka has acknowledged all (acks=all)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, max_batch_size=1 << 20, max_request_size=8 << 20, linger_ms=5
    )
    await producer.start()
    try:
        pending = []
        for partition, recs in group_by_partition(items, partitions).items():
            batch = producer.create_batch()
            for key, value in recs:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            if len(pending) > 64:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return len(items)
    finally:
        await producer.stop()


class Offsets:
    """A consumer without a group that reads end offsets and single records."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", metadata_max_age_ms=1000
        )

    async def __aenter__(self) -> "Offsets":
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()

    async def tps(self, topics: Iterable[str]) -> list[TopicPartition]:
        topics = list(topics)
        parts = await partitions_of({"bootstrap_servers": self.bootstrap}, topics, timeout=5.0)
        return [TopicPartition(topic, p) for topic in topics for p in parts.get(topic, ())]

    async def total(self, topics: Iterable[str]) -> int:
        """Records in ``topics`` (end minus beginning offsets)."""
        tps = await self.tps(topics)
        if not tps:
            return 0
        end = await self.consumer.end_offsets(tps)
        begin = await self.consumer.beginning_offsets(tps)
        return sum(end[tp] - begin[tp] for tp in tps)

    async def edges(self, topics: Iterable[str]) -> tuple[int | None, int | None, int]:
        """(first, last, count): the earliest and latest Kafka timestamps (ms) of the
        records in ``topics``, read from the first and last record of each partition."""
        tps = await self.tps(topics)
        end = await self.consumer.end_offsets(tps)
        begin = await self.consumer.beginning_offsets(tps)
        live = [tp for tp in tps if end[tp] > begin[tp]]
        count = sum(end[tp] - begin[tp] for tp in tps)
        if not live:
            return None, None, 0
        first = await self._read_at({tp: begin[tp] for tp in live})
        last = await self._read_at({tp: end[tp] - 1 for tp in live})
        return min(first.values()), max(last.values()), count

    async def _read_at(self, where: dict[TopicPartition, int], timeout: float = 30.0) -> dict[TopicPartition, int]:
        c = self.consumer
        c.assign(list(where))
        for tp, offset in where.items():
            c.seek(tp, offset)
        got: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(where) and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500, max_records=10_000)
            for tp, msgs in batch.items():
                if tp in got or tp not in where:
                    continue
                for m in msgs:
                    if m.offset >= where[tp]:
                        got[tp] = m.timestamp
                        c.pause(tp)
                        break
        c.resume(*c.paused())
        if len(got) < len(where):
            raise TimeoutError(f"could not read {len(where) - len(got)} partition edge(s)")
        return got


async def read_all(bootstrap: str, topics: list[str], timeout: float = 300.0) -> list[tuple[bytes, int]]:
    """Every ``(value, timestamp ms)`` of ``topics``, from the beginning to the end offsets
    seen at the start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    out: list[tuple[bytes, int]] = []
    try:
        parts = await partitions_of({"bootstrap_servers": bootstrap}, topics, timeout=5.0)
        tps = [TopicPartition(topic, p) for topic in topics for p in parts.get(topic, ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > 0}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for tp, msgs in batch.items():
                for m in msgs:
                    if m.offset < end[tp]:
                        out.append((m.value, m.timestamp))
                if msgs and msgs[-1].offset >= end[tp] - 1:
                    remaining.discard(tp)
        if remaining:
            raise TimeoutError(f"{len(remaining)} partition(s) not read to the end in {timeout:.0f} s")
        return out
    finally:
        await consumer.stop()
