"""``rater simulate`` against a real worker on the real broker: traffic goes through, the
payment stand-in answers every recharge request, and the worker's metrics agree with
what is in the topics."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from rater.core.partitioning import partition_for
from rater.dev.demoview import parse_metrics
from rater.dev.procs import WorkerChild, http_status
from rater.sim.traffic import BAD_KINDS
from tests.support.kafka import consume_all

ROOT = Path(__file__).resolve().parents[2]
RATES = ROOT / "rate_tables"


def _metrics(base: str) -> dict:
    status, body = http_status(base + "/metrics")
    assert status == 200
    return parse_metrics(body.decode())


def _by(metrics: dict, name: str, label: str) -> Counter:
    out: Counter = Counter()
    for labels, value in metrics.get(name, []):
        out[labels[label]] += int(value)
    return out


def _records(metrics: dict) -> Counter:
    out: Counter = Counter()
    for labels, value in metrics.get("rater_records_total", []):
        out[(labels["topic"], labels["outcome"])] += int(value)
    return out


@pytest.fixture
def topics():
    s = uuid.uuid4().hex[:8]
    return {name: f"sim-{name}-{s}" for name in ("cdrs", "commands", "rated", "events", "requests", "rejects")}


@pytest.fixture
def worker(kafka_broker, topics, tmp_path):
    app_id = "sim-" + topics["cdrs"].rsplit("-", 1)[1]
    w = WorkerChild(
        kafka_broker.bootstrap,
        app_id=app_id,
        topics=topics,
        state_dir=tmp_path / "state",
        log_path=tmp_path / "worker.log",
        rates_dir=RATES,
        partitions=4,
    )
    try:
        w.start().wait_ready(45)
        yield w.url
    finally:
        w.stop()


def _simulate(broker: str, topics: dict, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "rater",
        "simulate",
        "--broker",
        broker,
        "--rates",
        str(RATES),
        "--cdrs-topic",
        topics["cdrs"],
        "--commands-topic",
        topics["commands"],
        "--requests-topic",
        topics["requests"],
        "--events-topic",
        topics["events"],
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.kafka
@pytest.mark.timeout(120)
def test_simulated_traffic_is_rated_and_recharges_are_answered(kafka_broker, topics, worker):
    broker = kafka_broker.bootstrap
    # 20 tenants with 2 % of their usual funds: auto-recharge tenants fall under their
    # threshold at once, so recharge requests come within the 5 seconds.
    sim = _simulate(
        broker,
        topics,
        "--duration",
        "5",
        "--rate",
        "100",
        "--tenants",
        "20",
        "--seed",
        "7",
        "--bad-share",
        "0.04",
        "--funds-scale",
        "0.02",
        "--payment-delay",
        "0.2",
        "--linger",
        "3",
        "--status-interval",
        "1",
    )
    assert sim.returncode == 0, sim.stderr
    assert "setup of 20 tenants applied by the worker" in sim.stderr
    assert "done:" in sim.stderr.splitlines()[-1]

    cdrs = consume_all(broker, topics["cdrs"], timeout=20)
    commands = consume_all(broker, topics["commands"], timeout=20)
    assert 400 <= len(cdrs) <= 560  # 5 s at 100/s, less the top-ups on the commands topic
    # keyed by tenant, on the partition SPEC 2 names (murmur2); unkeyed only when not JSON
    for r in cdrs + commands:
        if r.key is not None:
            assert r.partition == partition_for(r.key.encode(), 4)
        else:
            assert isinstance(r.value, str)

    # the worker has consumed everything that is in the input topics
    deadline = time.monotonic() + 30
    while True:
        m = _metrics(worker)
        rec = _records(m)
        done_cdrs = sum(n for (t, _o), n in rec.items() if t == topics["cdrs"])
        done_cmds = sum(n for (t, _o), n in rec.items() if t == topics["commands"])
        if (done_cdrs, done_cmds) == (len(cdrs), len(commands)):
            break
        assert time.monotonic() < deadline, (rec, len(cdrs), len(commands))
        time.sleep(0.5)
    assert rec[(topics["cdrs"], "forwarded")] == 0 and rec[(topics["commands"], "forwarded")] == 0

    rated = consume_all(broker, topics["rated"], timeout=20)
    rejects = consume_all(broker, topics["rejects"], timeout=20)
    events = consume_all(broker, topics["events"], timeout=20)
    requests = consume_all(broker, topics["requests"], timeout=20)

    # rated CDRs arrived, and the metrics count exactly what is in the topics
    assert len(rated) == rec[(topics["cdrs"], "applied")] >= 350
    assert len(rejects) == rec[(topics["cdrs"], "rejected")] + rec[(topics["commands"], "rejected")]
    assert rec[(topics["commands"], "rejected")] == 0
    reasons = Counter(r.value["reason"] for r in rejects)
    assert reasons == _by(m, "rater_rejects_total", "reason")
    assert set(reasons) <= set(BAD_KINDS) and sum(reasons.values()) >= 5
    types = Counter(e.value["type"] for e in events)
    assert types == _by(m, "rater_balance_events_total", "type")
    assert types["funds_added"] >= 20  # every tenant's initial top-up
    assert sum(_by(m, "rater_tenants", "state").values()) == 20

    # every recharge request got a payment_result, and every answer was applied
    answers = [c.value for c in commands if isinstance(c.value, dict) and c.value.get("command") == "payment_result"]
    asked = {r.value["request_id"] for r in requests}
    assert len(asked) == len(requests) >= 3
    assert sorted(a["request_id"] for a in answers) == sorted(asked)
    succeeded = [a for a in answers if a["status"] == "succeeded"]
    failed = [a for a in answers if a["status"] == "failed"]
    assert types["auto_recharge_requested"] == len(requests)
    assert types["auto_recharge_succeeded"] == len(succeeded) >= 1
    payment_failures = [e.value for e in events if e.value["type"] == "auto_recharge_failed" and e.value["reason"] != "card_expired"]
    assert sorted(e["request_id"] for e in payment_failures) == sorted(a["request_id"] for a in failed)
    assert all(a["reason"] in ("card_declined", "insufficient_funds") for a in failed)


@pytest.mark.kafka
def test_simulate_creates_missing_topics_with_the_configured_partitions(kafka_broker):
    # No worker: simulate creates the topics itself (never the broker's default of 1
    # partition, which a worker would then refuse), sends the setup, and goes on.
    s = uuid.uuid4().hex[:8]
    missing = {name: f"absent-{name}-{s}" for name in ("cdrs", "commands", "requests", "events")}
    sim = _simulate(
        kafka_broker.bootstrap,
        missing,
        "--duration",
        "1",
        "--setup-timeout",
        "2",
        "--rate",
        "20",
        "--tenants",
        "3",
        "--partitions",
        "3",
        timeout=60,
    )
    assert sim.returncode == 0, sim.stderr
    assert "with 3 partitions" in sim.stderr
    assert asyncio.run(_partition_counts(kafka_broker.bootstrap, list(missing.values()))) == {t: 3 for t in missing.values()}


async def _partition_counts(broker: str, names: list[str]) -> dict[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        return {m["topic"]: len(m["partitions"]) for m in await admin.describe_topics(names)}
    finally:
        await admin.close()
