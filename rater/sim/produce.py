"""``rater produce``: JSON lines to the input topics, keyed by tenant.

By default every line goes to one topic (the CDR topic), so a tenant's commands and CDRs
are applied in file order; ``--split`` sends commands to the command topic.

A line that is not a JSON object with a tenant goes through unchanged (no key), so the
worker rejects it with its reason; a blank line carries nothing and is skipped.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter

import orjson
from aiokafka import AIOKafkaProducer

from rater.connection import KafkaSettings, client_kwargs


class _WrongPartitioner:
    """A partitioner other than the Java client's, for exercising the worker's re-routing."""

    def __init__(self, kind: str):
        self.kind = kind
        self.rng = random.Random(7)

    def __call__(self, key, all_partitions, available):
        if self.kind == "random" or key is None:
            return self.rng.choice(all_partitions)
        return all_partitions[zlib.crc32(key) % len(all_partitions)]


def route(line: bytes, topic: str | None, cdrs_topic: str, commands_topic: str) -> tuple[str, bytes | None]:
    """The topic and key of one line."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return topic or cdrs_topic, None
    if not isinstance(obj, dict):
        return topic or cdrs_topic, None
    tenant = obj.get("tenant_id")
    key = tenant.encode() if isinstance(tenant, str) and tenant else None
    if topic:
        return topic, key
    return (commands_topic if "command" in obj and "cdr_id" not in obj else cdrs_topic), key


async def produce_files(
    files: list[str],
    broker: str | KafkaSettings,
    topic: str | None,
    cdrs_topic: str,
    commands_topic: str,
    partitioner: str = "murmur2",
    partitions: int = 8,
    replication: int = 1,
) -> Counter:
    """Publish the lines of ``files`` in order: all to ``topic``, or (``topic`` None) CDRs to
    ``cdrs_topic`` and commands to ``commands_topic``. Topics that do not exist are created
    first with ``partitions`` (``rater/worker/topics.py``), never left to the broker's default.
    ``broker``: bootstrap servers (plain text) or the full connection settings."""
    from rater.worker.topics import create_missing

    client = client_kwargs(broker if isinstance(broker, KafkaSettings) else KafkaSettings(broker))
    await create_missing(client, [topic] if topic else [cdrs_topic, commands_topic], partitions, replication)
    kwargs = {}
    if partitioner != "murmur2":
        kwargs["partitioner"] = _WrongPartitioner(partitioner)
    producer = AIOKafkaProducer(**client, acks="all", linger_ms=5, enable_idempotence=True, **kwargs)
    await producer.start()
    counts: Counter = Counter()
    try:
        pending = []
        for path in files:
            with open(path, "rb") as f:
                for line in f:
                    raw = line.rstrip(b"\r\n")
                    if not raw.strip():
                        continue
                    t, key = route(raw, topic, cdrs_topic, commands_topic)
                    pending.append(await producer.send(t, raw, key=key))
                    counts[t] += 1
                    if len(pending) >= 10_000:
                        for fut in pending:
                            await fut
                        pending.clear()
        for fut in pending:
            await fut
    finally:
        await producer.stop()
    return counts
