"""``rater produce`` (rater/sim/produce.py, rater/worker/topics.py) against the real broker: the
README's quick start gives the README's balances, and missing topics are created with
the configured partition count before anything is published."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from tests.support.worker import ROOT, WorkerProcess, WorkerTopics, unique, wait_for
from tests.worker.test_worker import WORKED, _require_example_window

pytestmark = pytest.mark.kafka


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rater", *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def _partition_counts(broker: str, names: list[str]) -> dict[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    async def describe() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            return {m["topic"]: len(m["partitions"]) for m in await admin.describe_topics(names)}
        finally:
            await admin.close()

    return asyncio.run(describe())


def test_the_readme_quick_start_command_gives_the_worked_examples_balances(kafka_broker):
    """README "Running on Kafka": `rater produce --broker B examples/worked-example.jsonl`
    with a worker on the default topic names (here renamed through RATER_TOPIC_*)."""
    _require_example_window()
    broker = kafka_broker.bootstrap
    topics = WorkerTopics.unique("quick")
    env = {"RATER_TOPIC_CDRS": topics.cdrs, "RATER_TOPIC_COMMANDS": topics.commands, "RATER_PARTITIONS": "4"}
    with WorkerProcess(broker, topics=topics, partitions=4, name="quick") as w:
        r = _run(["produce", "--broker", broker, str(WORKED)], env)
        assert r.returncode == 0, r.stderr
        assert r.stderr.splitlines()[-1] == f"15 to {topics.cdrs}"
        wait_for(lambda: w.records_done() == 15, 60, what="15 records done", workers=(w,))
        # README, worked example: acme ends at 12.916000 (20 - 0.66 - 0.09 - 1.334 - 30 + 25),
        # globex at -0.092000.
        assert w.get("/tenants/acme").json()["balance"] == "12.916000"
        assert w.get("/tenants/globex").json()["balance"] == "-0.092000"


def test_produce_creates_missing_topics_with_the_configured_partitions(kafka_broker):
    broker = kafka_broker.bootstrap
    one, cdrs, commands = unique("p-one"), unique("p-cdrs"), unique("p-cmds")
    r = _run(["produce", "--broker", broker, "--topic", one, str(WORKED)], {"RATER_PARTITIONS": "3"})
    assert r.returncode == 0, r.stderr
    r = _run(
        ["produce", "--broker", broker, "--split", "--partitions", "5", "--cdrs-topic", cdrs, "--commands-topic", commands, str(WORKED)], {}
    )
    assert r.returncode == 0, r.stderr
    # The worked example: 5 commands and 10 other lines (9 CDRs, one truncated line),
    # listed by topic name ("p-cdrs-..." sorts before "p-cmds-...").
    assert r.stderr.splitlines()[-1] == f"10 to {cdrs}, 5 to {commands}"  # after any retried-send warnings
    assert _partition_counts(broker, [one, cdrs, commands]) == {one: 3, cdrs: 5, commands: 5}
