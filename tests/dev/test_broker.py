"""The dev/test broker is a real Kafka: keyed records go in and come back out."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from rater.dev import broker as devbroker
from tests.support.kafka import consume_all, create_topic, produce


@pytest.mark.kafka
def test_broker_roundtrip_keyed_records(kafka_broker):
    topic = f"devbroker-rt-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker.bootstrap, topic, partitions=3)
    sent = [(f"acct-{i % 4}", {"seq": i, "units": 60 + i}) for i in range(12)]
    placed = produce(kafka_broker.bootstrap, topic, sent)

    got = consume_all(kafka_broker.bootstrap, topic, timeout=30)

    assert len(got) == len(sent)
    assert sorted((r.key, r.value["seq"], r.value["units"]) for r in got) == sorted((k, v["seq"], v["units"]) for k, v in sent)
    # same key -> same partition, and per-key order is preserved
    by_key: dict[str, set[int]] = {}
    for r in got:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())
    for key in by_key:
        seqs = [r.value["seq"] for r in got if r.key == key]
        assert seqs == sorted(seqs)
    # the offsets the producer was told match what the consumer reads
    assert sorted(placed) == sorted((r.partition, r.offset) for r in got)


@pytest.mark.kafka
def test_consumer_group_commit_roundtrip(kafka_broker):
    """A group commit on the real group coordinator is visible to a new consumer."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = f"devbroker-grp-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker.bootstrap, topic, partitions=1)
    produce(kafka_broker.bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(5)])

    async def read(n: int) -> list[bytes]:
        c = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_broker.bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await c.start()
        try:
            out: list[bytes] = []
            while len(out) < n:
                m = await asyncio.wait_for(c.getone(), 30)
                out.append(m.value)
            await c.commit({TopicPartition(topic, 0): m.offset + 1})
            return out
        finally:
            await c.stop()

    assert asyncio.run(read(3)) == [b"v0", b"v1", b"v2"]
    assert asyncio.run(read(2)) == [b"v3", b"v4"]


def test_status_of_stopped_broker(tmp_path):
    info = devbroker.status(tmp_path / "never-started")
    assert info.running is False
    assert info.pid is None
    assert "stopped" in info.describe()
    # stop on a stopped broker is harmless and says so
    assert devbroker.stop(tmp_path / "never-started", quiet=True) is False
    # the CLI reports it too, with exit code 3
    assert devbroker.cli(["status", "--data-dir", str(tmp_path / "never-started")]) == 3


def test_missing_java_is_a_clean_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn on PATH
    monkeypatch.delenv("JAVA_HOME", raising=False)
    rc = devbroker.cli(["start", "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip().splitlines() == ["rater: java not found; install OpenJDK 17 (apt-get install openjdk-17-jre-headless)"]


@pytest.mark.kafka
def test_scram_listener_and_restart_keep_data(tmp_path):
    """Own broker: SASL_PLAINTEXT/SCRAM-SHA-512 works, a wrong password is refused, and a
    crash-restart (SIGKILL, same data dir) keeps ports, records and credentials."""
    if os.environ.get("RATER_TEST_BOOTSTRAP"):
        pytest.skip("uses its own managed broker; RATER_TEST_BOOTSTRAP points elsewhere")
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.errors import KafkaError

    data_dir = tmp_path / "scram-broker"
    info = devbroker.start(data_dir, scram_users={"rater": "s3cret-pw"}, die_with_parent=True, quiet=True)
    try:
        assert info.sasl_bootstrap and info.sasl_bootstrap != info.bootstrap
        topic = "scram-topic"
        create_topic(info.bootstrap, topic, partitions=1)

        def sasl(password: str) -> dict:
            return dict(
                bootstrap_servers=info.sasl_bootstrap,
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_plain_username="rater",
                sasl_plain_password=password,
                request_timeout_ms=10000,
            )

        async def produce_sasl(password: str, n: int) -> None:
            p = AIOKafkaProducer(**sasl(password), acks="all")
            await p.start()
            try:
                for i in range(n):
                    await p.send_and_wait(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
            finally:
                await p.stop()

        async def consume_sasl(n: int) -> list[bytes]:
            c = AIOKafkaConsumer(topic, **sasl("s3cret-pw"), auto_offset_reset="earliest", group_id=None)
            await c.start()
            try:
                out = []
                while len(out) < n:
                    out.append((await asyncio.wait_for(c.getone(), 30)).value)
                return out
            finally:
                await c.stop()

        asyncio.run(produce_sasl("s3cret-pw", 3))
        with pytest.raises(KafkaError):
            asyncio.run(produce_sasl("wrong-password", 1))
        assert asyncio.run(consume_sasl(3)) == [b"v0", b"v1", b"v2"]

        again = devbroker.restart(data_dir, kill=True, quiet=True)
        assert again.running and again.pid != info.pid
        assert (again.bootstrap, again.sasl_bootstrap) == (info.bootstrap, info.sasl_bootstrap)
        assert again.cluster_id == info.cluster_id
        assert [r.value for r in consume_all(again.bootstrap, topic, timeout=30)] == ["v0", "v1", "v2"]
        assert asyncio.run(consume_sasl(3)) == [b"v0", b"v1", b"v2"]
    finally:
        devbroker.stop(data_dir, quiet=True)
    assert devbroker.status(data_dir).running is False
