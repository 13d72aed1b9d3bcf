"""Real-Kafka test support: the session broker fixture and small aiokafka helpers.

``kafka_broker`` starts one real Kafka 4.x broker (rater.dev.broker, KRaft, jars from
Maven Central) for the whole pytest session in a temp dir and stops it at the end.  If
``RATER_TEST_BOOTSTRAP=host:port`` is set, that already-running broker is used instead
and nothing is started or stopped.  Tests using it are marked ``@pytest.mark.kafka``.

The helpers are synchronous (they run their own event loop with ``asyncio.run``), so
they can be called from plain test functions; the ``*_async`` variants are for code
that already runs in a loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any, Iterable, Mapping, Sequence

import pytest

from rater.dev import broker as devbroker

try:  # orjson is a project dependency, but keep the helpers usable without it
    import orjson as _json

    def _loads(b: bytes) -> Any:
        return _json.loads(b)

    def _dumps(v: Any) -> bytes:
        return _json.dumps(v)

except ImportError:  # pragma: no cover
    import json as _stdjson

    def _loads(b: bytes) -> Any:
        return _stdjson.loads(b)

    def _dumps(v: Any) -> bytes:
        return _stdjson.dumps(v, separators=(",", ":")).encode()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory):
    """A running broker for the session: a :class:`rater.dev.broker.BrokerInfo`.

    Use ``kafka_broker.bootstrap`` ("127.0.0.1:PORT").  ``kafka_broker.managed`` is
    False when the broker came from ``RATER_TEST_BOOTSTRAP``; only a managed broker may
    be restarted by fault tests (``devbroker.restart(kafka_broker.data_dir)``).
    """
    external = os.environ.get("RATER_TEST_BOOTSTRAP", "").strip()
    if external:
        yield devbroker.BrokerInfo(bootstrap=external, pid=None, data_dir=None, running=True, managed=False)
        return
    data_dir = tmp_path_factory.mktemp("kafka-broker")
    try:
        info = devbroker.start(data_dir=data_dir, die_with_parent=True, quiet=True)
    except devbroker.DevBrokerError as exc:
        pytest.fail(f"cannot start the test Kafka broker: {exc}", pytrace=False)
    try:
        yield info
    finally:
        devbroker.stop(data_dir=data_dir, quiet=True)


# ---------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class Record:
    """A consumed record, decoded: key as str, value as JSON if it parses, else str."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int
    raw_value: bytes | None


def _decode_value(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return _loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


def _encode(v: Any) -> bytes | None:
    if v is None or isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    return _dumps(v)


# ---------------------------------------------------------------------------- helpers


async def create_topic_async(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    *,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    exist_ok: bool = True,
    timeout: float = 30.0,
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        try:
            resp = await admin.create_topics(
                [NewTopic(name, partitions, replication_factor, topic_configs=dict(config or {}))],
                timeout_ms=int(timeout * 1000),
            )
        except TopicAlreadyExistsError:
            if not exist_ok:
                raise
            return
        # aiokafka returns the CreateTopics response; error code 36 = already exists
        for topic_name, code, *rest in getattr(resp, "topic_errors", []) or []:
            if code == 36 and exist_ok:
                continue
            if code != 0:
                msg = rest[0] if rest else ""
                raise RuntimeError(f"create_topic {topic_name}: error {code} {msg}")
        # wait until the metadata shows all partitions with a leader
        deadline = time.monotonic() + timeout
        while True:
            desc = await admin.describe_topics([name])
            parts = desc[0].get("partitions", []) if desc else []
            if len(parts) >= partitions and all(p.get("leader", -1) >= 0 for p in parts):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} not ready after {timeout}s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def create_topic(bootstrap: str, name: str, partitions: int = 1, **kwargs: Any) -> None:
    """Create ``name`` with ``partitions`` (replication 1); fine if it exists already."""
    asyncio.run(create_topic_async(bootstrap, name, partitions, **kwargs))


async def produce_async(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[Any, Any] | tuple[Any, Any, int | None]],
    *,
    headers: Sequence[tuple[str, bytes]] | None = None,
    max_request_size: int = 1048576,
) -> list[tuple[int, int]]:
    """Send ``(key, value)`` or ``(key, value, partition)`` tuples with acks=all
    (records larger than ``max_request_size`` are refused by the client).

    str keys/values are UTF-8 encoded, bytes sent as is, anything else as JSON.
    Returns ``(partition, offset)`` of each record, in order.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, max_request_size=max_request_size)
    await producer.start()
    try:
        futs = []
        for rec in records:
            key, value, *rest = rec
            partition = rest[0] if rest else None
            futs.append(
                await producer.send(
                    topic,
                    key=_encode(key),
                    value=_encode(value),
                    partition=partition,
                    headers=list(headers) if headers else None,
                )
            )
        await producer.flush()
        metas = [await f for f in futs]
        return [(m.partition, m.offset) for m in metas]
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, records: Iterable[Any], **kwargs: Any) -> list[tuple[int, int]]:
    """Synchronous :func:`produce_async`."""
    return asyncio.run(produce_async(bootstrap, topic, list(records), **kwargs))


async def consume_all_async(
    bootstrap: str,
    topic: str,
    timeout: float = 30.0,
    *,
    expect: int | None = None,
    isolation_level: str = "read_committed",
) -> list[Record]:
    """Read ``topic`` from the beginning, without a consumer group.

    Without ``expect``: returns once every partition is read up to the end offsets seen
    at the start (or at ``timeout``).  With ``expect=N``: keeps reading new records until
    at least N were read (or ``timeout``).  Records come back ordered by
    (partition, offset).  A topic that does not exist yet is waited for.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    deadline = time.monotonic() + timeout
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    out: list[Record] = []
    try:
        parts: set[int] | None = None
        while True:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            if time.monotonic() > deadline:
                return out
            await consumer._client.force_metadata_update()  # noqa: SLF001 - no public way
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps) if expect is None else None
        while True:
            if expect is None:
                assert end is not None
                positions = {tp: await consumer.position(tp) for tp in tps}
                if all(positions[tp] >= end[tp] for tp in tps):
                    break
            elif len(out) >= expect:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for tp, msgs in batch.items():
                for m in msgs:
                    out.append(
                        Record(
                            topic=m.topic,
                            partition=m.partition,
                            offset=m.offset,
                            key=m.key.decode("utf-8", errors="replace") if m.key is not None else None,
                            value=_decode_value(m.value),
                            headers=tuple((k, v) for k, v in (m.headers or ())),
                            timestamp=m.timestamp,
                            raw_value=m.value,
                        )
                    )
    finally:
        await consumer.stop()
    out.sort(key=lambda r: (r.partition, r.offset))
    return out


def consume_all(bootstrap: str, topic: str, timeout: float = 30.0, **kwargs: Any) -> list[Record]:
    """Synchronous :func:`consume_all_async`."""
    return asyncio.run(consume_all_async(bootstrap, topic, timeout, **kwargs))
