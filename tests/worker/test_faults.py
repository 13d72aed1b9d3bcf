"""Fault scenarios against a real broker and real ``rater worker`` processes.

1. The broker restarts in the middle of a stream: the worker waits, reconnects, and ends
   equal to ``rater rate`` on the same input (accounts, de-duplicated outputs, rejects).
2. A second worker joins the group mid-stream and later leaves (SIGTERM) while records
   keep arriving: same comparison.
3. Restart time of a worker holding N accounts in RocksDB (N = 5,000 here, 100,000 under
   ``-m slow``): seconds from process start to ``/readyz`` 200 and to the first new record
   rated, and proof from faust's recovery log that the changelog is not replayed.
4. Hostile input through Kafka: random bytes, invalid UTF-8, a 1 MB value, 100,000 levels
   of nesting, huge numbers, wrong types for every field, null keys, a key naming another
   tenant: each is rejected with its reason, valid records interleaved with them are rated
   at a normal pace, and no account changes.
5. SASL/SCRAM end to end, on a broker of its own; a wrong password is a one-line error;
   ``rater produce`` and ``rater simulate`` take the same connection flags.

The comparisons with ``rater rate`` are ``tests/support/chaos.py``'s (``compare``). Workers run
with ``--sweep-interval 3600``: the chaos input's recharge requests are a day old on the
wall clock, and the offline run has no wall-clock sweep to time them out. Figures are
printed (``pytest -s``) and recorded in ``docs/fault-tests.md``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import murmur2

from rater.dev import broker as devbroker
from rater.worker.pipeline import SLOW_RECOVERY_PAUSE
from tests.support.chaos import compare, generate, wait_consumed
from tests.support.kafka import consume_all, create_topic, produce
from tests.support.worker import ROOT, WorkerProcess, WorkerTopics, unique, wait_for

pytestmark = pytest.mark.kafka

PARTITIONS = 4
SWEEP_OFF = ["--sweep-interval", "3600"]


# ---------------------------------------------------------------------------- helpers


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def home(key: str | bytes, partitions: int = PARTITIONS) -> int:
    """The Java client's default partitioner (SPEC 2), from aiokafka, not from rater."""
    raw = key.encode() if isinstance(key, str) else key
    return (murmur2(raw) & 0x7FFFFFFF) % partitions


def report(line: str) -> None:
    """A measured figure: shown with ``pytest -s`` (and kept for docs/fault-tests.md)."""
    print(f"\n[fault-tests] {line}", flush=True)


@dataclass
class Stream:
    """A chaos.py input, split into parts to publish at different moments, and the
    offline run of the whole of it."""

    lines: list[bytes]
    offline: Path
    dir: Path

    def parts(self, *fractions: float) -> list[Path]:
        cuts = [0] + [int(len(self.lines) * f) for f in fractions] + [len(self.lines)]
        out = []
        for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
            path = self.dir / f"part{i + 1}.jsonl"
            path.write_bytes(b"".join(line + b"\n" for line in self.lines[a:b]))
            out.append(path)
        return out


def make_stream(tmp_path: Path, records: int, tenants: int, seed: int) -> Stream:
    path = tmp_path / "input.jsonl"
    generate(str(path), records, tenants, seed)
    offline = tmp_path / "offline"
    subprocess.run(
        [sys.executable, "-m", "rater", "rate", "--rates", str(ROOT / "rate_tables"), "--out", str(offline), str(path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    return Stream(lines, offline, tmp_path)


def rater_produce(broker: str, topic: str, path: Path, background: bool = False):
    """``rater produce --topic``: every line to one topic, in order."""
    cmd = [sys.executable, "-m", "rater", "produce", "--broker", broker, "--topic", topic, str(path)]
    if background:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return None


def finish_produce(proc: subprocess.Popen, timeout: float = 120) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"rater produce failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}"


def assert_like_offline(
    broker: str,
    topics: WorkerTopics,
    app_id: str,
    stream: Stream,
    worker: WorkerProcess,
    workers: tuple[WorkerProcess, ...],
    timeout: float = 180,
) -> dict:
    """Wait until the group committed the whole input, then compare with ``rater rate``."""
    if not wait_consumed(broker, app_id, [topics.cdrs], timeout=timeout):
        logs = "\n".join(f"----- {w.name} -----\n{w.tail(60)}" for w in workers)
        raise AssertionError(f"the input was not consumed within {timeout:.0f} s\n{logs}")
    worker.wait_ready(60)
    mismatches, repeats = compare(broker, topics, str(stream.offline), worker)
    assert mismatches == [], mismatches
    return repeats


def owned_partitions(w: WorkerProcess, topic: str) -> set[int]:
    return {
        int(dict(labels)["partition"])
        for (name, labels), _ in w.metrics().items()
        if name == "rater_consumer_lag" and dict(labels)["topic"] == topic
    }


def split_between(a: WorkerProcess, b: WorkerProcess, topic: str) -> bool:
    """Whether ``a`` and ``b`` each own some partitions of ``topic``, none twice, all of them."""
    pa, pb = owned_partitions(a, topic), owned_partitions(b, topic)
    return bool(pa and pb and not pa & pb and pa | pb == set(range(PARTITIONS)))


def broker_is_healthy(bootstrap: str) -> None:
    """A new topic, a record in and out: what every later test of the session needs."""
    topic = unique("health")
    create_topic(bootstrap, topic, 1)
    produce(bootstrap, topic, [("k", "v")])
    assert [r.value for r in consume_all(bootstrap, topic, 30)] == ["v"]


# ---------------------------------------------------------------------------- 1. broker restart


@pytest.mark.parametrize(
    "records, tenants, kill",
    [
        pytest.param(3000, 60, False, id="3k-sigterm"),
        pytest.param(40_000, 400, True, id="40k-sigkill", marks=pytest.mark.slow),
    ],
)
def test_a_broker_restart_mid_stream_loses_and_doubles_nothing(kafka_broker, tmp_path, records, tenants, kill):
    if not kafka_broker.managed:
        pytest.skip("the broker comes from RATER_TEST_BOOTSTRAP: this test may not restart it")
    broker = kafka_broker.bootstrap
    stream = make_stream(tmp_path, records=records, tenants=tenants, seed=21)
    before, after = stream.parts(0.6)
    topics = WorkerTopics.unique("f1")
    app_id = f"{topics.cdrs}-app"
    # Small batches: the stream takes a few seconds, so the broker goes away mid-stream.
    extra = SWEEP_OFF + ["--batch-size", "50", "--standby-replicas", "0"]
    with WorkerProcess(broker, topics=topics, app_id=app_id, name="f1-broker-restart", extra_args=extra, precreate_inputs=True) as w:
        rater_produce(broker, topics.cdrs, before)
        wait_for(lambda: w.records_done() >= 150, 60, interval=0.05, what="the stream under way", workers=(w,))
        done_at_stop = w.records_done()
        t0 = time.monotonic()
        devbroker.restart(kafka_broker.data_dir, kill=kill, down_for=3.0, quiet=True)
        outage = time.monotonic() - t0
        broker_is_healthy(broker)
        # Keep producing once the broker is back.
        rater_produce(broker, topics.cdrs, after)
        t1 = time.monotonic()
        repeats = assert_like_offline(broker, topics, app_id, stream, w, (w,))
        assert w.running() and w.starts == 1, "the worker exited during the broker's restart"
        report(
            f"broker {'SIGKILL' if kill else 'SIGTERM'} and restart mid-stream: {len(stream.lines):,} records, "
            f"broker down {outage:.1f} s "
            f"(stopped after {done_at_stop:,} done), input consumed {time.monotonic() - t1:.1f} s after the "
            f"last part was produced; repeats {repeats}"
        )


# ---------------------------------------------------------------------------- 2. rebalance under load


@pytest.mark.parametrize(
    "records, tenants",
    [
        pytest.param(4000, 80, id="4k"),
        pytest.param(40_000, 400, id="40k", marks=pytest.mark.slow),
    ],
)
def test_a_worker_joining_and_leaving_mid_stream_loses_and_doubles_nothing(kafka_broker, tmp_path, records, tenants):
    broker = kafka_broker.bootstrap
    stream = make_stream(tmp_path, records=records, tenants=tenants, seed=22)
    part1, part2, part3 = stream.parts(0.4, 0.7)
    topics = WorkerTopics.unique("f2")
    app_id = f"{topics.cdrs}-app"
    extra = SWEEP_OFF + ["--batch-size", "50"]
    a = WorkerProcess(broker, topics=topics, app_id=app_id, name="f2a", extra_args=extra, precreate_inputs=True)
    b = WorkerProcess(broker, topics=topics, app_id=app_id, name="f2b", extra_args=extra)
    with contextlib.ExitStack() as stack:
        stack.enter_context(a)
        t0 = time.monotonic()
        p1 = rater_produce(broker, topics.cdrs, part1, background=True)
        wait_for(lambda: a.records_done() >= 100, 60, interval=0.05, what="a under way", workers=(a,))
        # b joins while a works through part 1.
        stack.enter_context(b)
        finish_produce(p1)

        wait_for(lambda: split_between(a, b, topics.cdrs), 90, interval=0.5, what="the partitions split between a and b", workers=(a, b))
        joined = time.monotonic() - t0
        p2 = rater_produce(broker, topics.cdrs, part2, background=True)
        wait_for(lambda: b.records_done() >= 200, 60, interval=0.05, what="b rating", workers=(a, b))
        b_done = b.records_done()
        backlog = int(a.metric("rater_consumer_lag") + b.metric("rater_consumer_lag"))
        # b leaves while part 2 is still being consumed.
        assert b.stop() == 0
        finish_produce(p2)
        rater_produce(broker, topics.cdrs, part3)
        repeats = assert_like_offline(broker, topics, app_id, stream, a, (a, b))
        assert owned_partitions(a, topics.cdrs) == set(range(PARTITIONS))
        assert a.running() and a.starts == 1 and b.starts == 1
        assert a.errors() == [] and b.errors() == []
        report(
            f"rebalance under load: {len(stream.lines):,} records, b joined and the split settled "
            f"{joined:.1f} s after the stream began, b rated {b_done:,} and left with a backlog of {backlog:,}; "
            f"repeats {repeats}"
        )


# ---------------------------------------------------------------------------- 2b. state rebuilt from the changelog


@pytest.mark.parametrize("records", [pytest.param(20_000, id="20k"), pytest.param(60_000, id="60k", marks=pytest.mark.slow)])
def test_a_worker_rebuilding_its_state_from_the_changelog_skips_no_waiting_record(kafka_broker, tmp_path, records):
    """A worker on a new machine (empty state dir) rebuilds the accounts from the changelog
    while records wait in Kafka: every waiting record must still be applied once. The same
    start happens after a crash that leaves the local store behind the changelog, and when
    a partition moves to a worker whose copy is behind."""
    broker = kafka_broker.bootstrap
    stream = make_stream(tmp_path, records=records, tenants=1000, seed=23)
    first, backlog = stream.parts(0.5)
    topics = WorkerTopics.unique("f2b")
    app_id = f"{topics.cdrs}-app"
    with WorkerProcess(broker, topics=topics, app_id=app_id, name="f2b-rebuild", extra_args=SWEEP_OFF, precreate_inputs=True) as w:
        rater_produce(broker, topics.cdrs, first)
        assert wait_consumed(broker, app_id, [topics.cdrs], timeout=120)
        assert w.stop() == 0
        rater_produce(broker, topics.cdrs, backlog)
        changelog = consume_all(broker, f"{app_id}-accounts-changelog", 60)
        shutil.rmtree(w.state_dir)
        log_before = len(w.log())
        t0 = time.monotonic()
        w.start()
        ready = time.monotonic() - t0
        # The changelog is read in bulk before faust's recovery (rater/worker/catchup.py):
        # every record it holds, of the partitions that hold any.
        bulk = re.findall(
            r"changelog read in bulk: (\d+) records of (\d+) partition\(s\) in [\d.]+ s(;[^\n]*)?\s*$", w.log()[log_before:], re.M
        )
        assert bulk == [(str(len(changelog)), str(len({r.partition for r in changelog})), "")], w.log()[log_before:][-6000:]
        repeats = assert_like_offline(broker, topics, app_id, stream, w, (w,))
        report(
            f"state rebuilt from the changelog ({len(changelog):,} records, read in bulk) with "
            f"{len(backlog.read_bytes().splitlines()):,} records waiting: "
            f"ready {ready:.1f} s, all consumed {time.monotonic() - t0:.1f} s after the start; repeats {repeats}"
        )


# ---------------------------------------------------------------------------- 3. restart time

_ROW = re.compile(r"[│|]\s*(\S+)\s*[│|]\s*(\d+)\s*[│|]\s*(-?\d+)\s*[│|]")


def _changelog_table(log: str, title: str, changelog: str) -> dict[int, int]:
    """faust's recovery log tables ("Highwater - Active", "Reading Starts At - Active"):
    partition -> offset of the accounts changelog, from the last table of that title."""
    start = log.rfind(title)
    if start < 0:
        return {}
    rows: dict[int, int] = {}
    topic = None
    for line in log[start:].splitlines()[1:]:
        m = _ROW.search(line)
        if m is None:
            if rows and not line.strip().startswith(("+", "├", "└", "┌", "│", "|", "╒", "╞", "╘", "═", "─")):
                break
            continue
        name, partition, offset = m.groups()
        if name not in ("〃", '"'):
            topic = name
        if topic == changelog:
            rows[int(partition)] = int(offset)
    return rows


def _setup_lines(tenants: list[str], at: datetime) -> bytes:
    out = []
    for t in tenants:
        out.append(
            orjson.dumps(
                {
                    "command_id": f"{t}-setup",
                    "tenant_id": t,
                    "command": "configure_account",
                    "occurred_at": iso(at),
                    "rate_plan": "standard-usd",
                    "low_balance_threshold": "1",
                }
            )
        )
        out.append(
            orjson.dumps({"command_id": f"{t}-funds", "tenant_id": t, "command": "add_funds", "occurred_at": iso(at), "amount": "10"})
        )
    return b"\n".join(out) + b"\n"


def _outcomes(w: WorkerProcess) -> dict:
    return {f"{dict(ls)['topic']}/{dict(ls)['outcome']}": v for (name, ls), v in w.metrics().items() if name == "rater_records_total"}


def restart_time(broker: str, tmp_path: Path, n: int, store: str = "rocksdb") -> dict:
    """Figures of one restart with ``n`` accounts; ``store="memory"`` (which does replay
    the changelog) is the control that shows the log parsing sees a replay."""
    now = now_utc()
    tenants = [f"rt-{i:06d}" for i in range(n)]
    setup = tmp_path / "setup.jsonl"
    setup.write_bytes(_setup_lines(tenants, now - timedelta(hours=1)))
    topics = WorkerTopics.unique("f3")
    w = WorkerProcess(broker, topics=topics, name=f"f3-restart-{n}", extra_args=SWEEP_OFF + ["--store", store], precreate_inputs=True)
    figures: dict = {"accounts": n, "store": store}
    with w:
        t0 = time.monotonic()
        rater_produce(broker, topics.commands, setup)
        wait_for(lambda: w.records_done() >= 2 * n, 120 + n / 200, interval=1.0, what=f"{2 * n:,} commands applied", workers=(w,))
        figures["setup_seconds"] = time.monotonic() - t0
        assert w.metric("rater_records_total", outcome="applied") == 2 * n
        assert w.stop() == 0
        # One new call waits in Kafka while the worker is down.
        cdr = {
            "cdr_id": "rt-new-1",
            "tenant_id": tenants[-1],
            "call_type": "international",
            "to": "+919876543210",
            "started_at": iso(now - timedelta(minutes=5)),
            "duration_seconds": 60,
        }
        produce(broker, topics.cdrs, [(tenants[-1], cdr)])
        log_before = len(w.log())
        started_wall = time.time()
        started = time.monotonic()
        w.start(wait=False)
        while True:
            assert w.running(), f"the worker exited during its restart\n{w.tail()}"
            try:
                if w.get("/readyz", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() - started < 300, f"not ready after 300 s\n{w.tail()}"
            time.sleep(0.05)
        figures["ready_seconds"] = time.monotonic() - started
        rated = consume_all(broker, topics.rated, 60, expect=1)
        assert len(rated) == 1, f"the call waiting in Kafka was not rated within 60 s of the restart: {_outcomes(w)}\n{w.tail(30)}"
        assert rated[0].value["cdr_id"] == "rt-new-1" and rated[0].value["balance_after"] == "9.970000"
        figures["first_rated_seconds"] = rated[0].timestamp / 1000 - started_wall
        # The metric counts a batch once its accounts are written, just after its outputs.
        wait_for(lambda: w.records_done() >= 1, 30, what="the new call counted", workers=(w,))
        assert w.records_done() == 1, f"records consumed again after a clean stop: {_outcomes(w)}"
        log = w.log()[log_before:]
        assert "changelog read in bulk" not in log  # its store holds the changelog
        changelog = f"{w.app_id}-accounts-changelog"
        highwater = _changelog_table(log, "Highwater - Active", changelog)
        starts = _changelog_table(log, "Reading Starts At - Active", changelog)
        assert set(highwater) == set(range(PARTITIONS)), f"no recovery table for {changelog} in the log\n{log[-4000:]}"
        assert set(starts) == set(highwater), f"no start offsets for {changelog} in the log\n{log[-4000:]}"
        figures["changelog_records"] = sum(highwater.values()) + len(highwater)  # highwater is the last offset
        figures["replayed"] = sum(max(highwater[p] - starts[p], 0) for p in highwater)
        assert w.errors() == []
    return figures


def _restart_figures(figures: dict) -> str:
    return (
        f"restart with {figures['accounts']:,} accounts (setup applied in {figures['setup_seconds']:.1f} s): "
        f"ready {figures['ready_seconds']:.2f} s, first new record rated {figures['first_rated_seconds']:.2f} s "
        f"after process start; changelog records read in recovery {figures['replayed']} "
        f"of about {figures['changelog_records']:,}"
    )


def test_a_restart_with_5000_accounts_reads_no_changelog_and_is_ready_within_30_s(kafka_broker, tmp_path):
    figures = restart_time(kafka_broker.bootstrap, tmp_path, 5000)
    report(_restart_figures(figures))
    assert figures["replayed"] <= PARTITIONS, figures
    assert figures["ready_seconds"] < 30, figures


@pytest.mark.slow
def test_a_restart_with_100000_accounts_reads_no_changelog(kafka_broker, tmp_path):
    figures = restart_time(kafka_broker.bootstrap, tmp_path, 100_000)
    report(_restart_figures(figures))
    assert figures["replayed"] <= PARTITIONS, figures
    assert figures["ready_seconds"] < 60, figures


# ---------------------------------------------------------------------------- 3a. a standby takes over


def test_a_standby_kept_in_bulk_takes_over_its_partitions_reading_no_changelog(kafka_broker, tmp_path):
    """Two workers with a standby copy of each other's partitions: the standby records are
    written to the store in bulk, not by faust's recovery loop (``StandbysInBulk``,
    ``rater/worker/adapter.py``). When one worker stops, the other takes its partitions
    over from its standby copy: its recovery starts at the changelog's end (it reads no
    record) and every account is as the commands left it."""
    broker = kafka_broker.bootstrap
    tenants = [f"sb-{i:03d}" for i in range(200)]
    setup = tmp_path / "setup.jsonl"
    setup.write_bytes(_setup_lines(tenants, now_utc() - timedelta(hours=1)))
    topics = WorkerTopics.unique("f3a")
    app_id = f"{topics.cdrs}-app"
    extra = SWEEP_OFF + ["--standby-replicas", "1"]
    a = WorkerProcess(broker, topics=topics, app_id=app_id, name="f3a-a", extra_args=extra, precreate_inputs=True)
    b = WorkerProcess(broker, topics=topics, app_id=app_id, name="f3a-b", extra_args=extra)
    with contextlib.ExitStack() as stack:
        stack.enter_context(a)
        stack.enter_context(b)

        wait_for(lambda: split_between(a, b, topics.cdrs), 90, interval=0.5, what="the partitions split between a and b", workers=(a, b))
        b_owned = owned_partitions(b, topics.cdrs)
        rater_produce(broker, topics.commands, setup)
        wait_for(lambda: a.records_done() + b.records_done() >= 2 * len(tenants), 60, what="the commands applied", workers=(a, b))
        assert b.records_done() > 0
        time.sleep(3)  # a's standby copy follows b's last writes (fetches of 50 ms)
        standby_written = a.metric("rater_changelog_bulk_records_total", path="standby")
        assert a.metric("rater_changelog_bulk_records_total", path="recovery") == 0
        log_before = len(a.log())
        assert b.stop() == 0
        wait_for(lambda: owned_partitions(a, topics.cdrs) == set(range(PARTITIONS)), 90, what="a owns every partition", workers=(a,))
        wait_for(lambda: a.get("/readyz").status == 200, 60, what="a ready", workers=(a,))
        log = a.log()[log_before:]
        changelog = f"{app_id}-accounts-changelog"
        highwater = _changelog_table(log, "Highwater - Active", changelog)
        starts = _changelog_table(log, "Reading Starts At - Active", changelog)
        assert b_owned <= set(highwater) and set(highwater) == set(starts), log[-4000:]
        # Both tables show offsets of records: the partition's last one, the store's
        # persisted one (-1: none). A standby copy at the end holds the last record.
        assert {p: starts[p] for p in b_owned} == {p: highwater[p] for p in b_owned}, (starts, highwater)
        assert all(highwater[p] > 0 for p in b_owned), highwater
        # Written in bulk, not by faust's recovery loop: a, the standby of b's partitions
        # since before b wrote anything, wrote each of their records once.
        assert standby_written == sum(highwater[p] + 1 for p in b_owned), (standby_written, highwater)
        for tenant in tenants:
            r = a.get(f"/tenants/{tenant}")
            assert (r.status, r.json()["balance"]) == (200, "10.000000"), tenant
        assert a.errors() == [] and b.errors() == []


# ---------------------------------------------------------------------------- 3b. a recovery that stops


def test_a_table_recovery_that_receives_nothing_ends_the_worker_and_a_restart_recovers(kafka_broker, tmp_path):
    """A worker whose table recovery never receives a changelog record (faust would wait for
    ever, heartbeating, its partitions assigned and not rated) exits with code 75 and names
    the changelog partitions behind, once ``--recovery-stall-timeout`` passes; started
    again, it recovers, and a recovery that reads is not cut short even when it takes
    longer than the limit (``rater/worker/watchdog.py``). ``RATER_FAILPOINT=stall-recovery``
    drops every changelog record the consumer fetches, ``slow-recovery`` holds each fetch."""
    broker = kafka_broker.bootstrap
    tenants = [f"st-{i:02d}" for i in range(20)]
    setup = tmp_path / "setup.jsonl"
    setup.write_bytes(_setup_lines(tenants, now_utc() - timedelta(hours=1)))
    topics = WorkerTopics.unique("f3b")
    limit = 6.0
    extra = SWEEP_OFF + ["--recovery-stall-timeout", str(limit)]
    with WorkerProcess(broker, topics=topics, name="f3b-stall", extra_args=extra, precreate_inputs=True) as w:
        rater_produce(broker, topics.commands, setup)
        wait_for(lambda: w.records_done() >= 40, 60, what="40 commands applied", workers=(w,))
        assert w.stop() == 0
        shutil.rmtree(w.state_dir)  # a new machine: the accounts must come from the changelog
        w.env = {"RATER_FAILPOINT": "stall-recovery"}
        log_before = len(w.log())
        started = time.monotonic()
        w.start(wait=False)
        reasons = set()  # /readyz while it waits
        while w.running():
            assert time.monotonic() - started < 120, f"still running 120 s after its start\n{w.tail()}"
            try:
                r = w.get("/readyz", timeout=1)
                reasons.add((r.status, r.json()["reason"]))
            except OSError:  # not listening yet, or gone
                pass
            time.sleep(0.5)
        lived = time.monotonic() - started
        assert w.returncode == 75, w.tail()
        assert lived > limit
        assert reasons and reasons <= {(503, "rebalancing"), (503, "recovering tables")}, reasons
        log = w.log()[log_before:]
        changelog = f"{w.app_id}-accounts-changelog"
        stalled = re.search(
            r"not ready \((rebalancing|recovering tables)\) and no progress for (\d+) s; changelog partitions still to read: (.*); exiting",
            log,
        )
        assert stalled is not None, log[-3000:]
        assert limit <= int(stalled.group(2)) < lived
        found = re.findall(re.escape(changelog) + r"\[(\d)\] read to offset -1 of (\d+) \(([^)]*)\)", stalled.group(3))
        behind = {p: last for p, last, _state in found}
        # Every partition holds accounts (each tenant's home), none of them read.
        assert {int(p) for p in behind} == {home(t) for t in tenants}, stalled.group(0)
        # Each with how the consumer sees it: faust asked for it, and the consumer fetched
        # it to the end (its position is one past faust's last offset), yet recovery read
        # nothing: the records were lost between the two, as the failpoint does.
        for p, last, state in found:
            assert state.startswith(f"asked for by faust; consumer at {int(last) + 1}; "), (p, state)

        # Started again, it recovers. Slowly on purpose: a recovery that reads is never cut
        # short, however long it takes. One changelog record per fetch (--batch-size 1),
        # each fetch held SLOW_RECOVERY_PAUSE s, so the whole read outlasts the limit.
        to_read = sum(int(n) for n in behind.values())
        w.env = {"RATER_FAILPOINT": "slow-recovery"}
        w.extra_args = [*w.extra_args, "--batch-size", "1"]
        log_before = len(w.log())
        w.start(wait=False)
        deadline = time.monotonic() + 60 + 4 * to_read * SLOW_RECOVERY_PAUSE
        not_ready_since = None  # the first 503 from /readyz: the worker serves, not ready
        while True:
            assert w.running(), f"ended while recovering\n{w.tail()}"
            assert time.monotonic() < deadline, f"not ready in time\n{w.tail()}"
            try:
                r = w.get("/readyz", timeout=1)
            except OSError:  # not listening yet
                r = None
            if r is not None and r.status == 200:
                break
            if r is not None and not_ready_since is None:
                not_ready_since = time.monotonic()
            time.sleep(0.2)
        assert not_ready_since is not None
        waited = time.monotonic() - not_ready_since
        report(f"a slow recovery ({to_read} changelog records, one a fetch): not ready for {waited:.1f} s, limit {limit:.0f} s")
        assert waited > limit  # longer than the limit, and not cut short
        assert "no progress" not in w.log()[log_before:], w.tail()
        for t in tenants:  # every account back from the changelog
            r = w.get(f"/tenants/{t}")
            assert (r.status, r.json()["balance"]) == (200, "10.000000"), (t, r.status, r.body)


# ---------------------------------------------------------------------------- 4. hostile input


WRONG = {  # field -> values of the wrong type or out of range (never a valid value)
    "cdr_id": [1, 1.5, True, [], {}, "", "x" * 129],
    "tenant_id": [1, True, [], {}, "", "a b", "x" * 65],
    "call_type": [1, True, [], {}, ["international"], "INTERNATIONAL"],
    "to": [442071234567, True, [], {}, "442071234567", "+0123"],
    "from": [1, True, [], {}, "nope"],
    "started_at": [1700000000, True, [], {}, "2026-11-24T10:00:00", "yesterday"],
    "duration_seconds": ["60", 1.5, True, [], {}, -1, 86401, 10**30, 1e30],
    "command_id": [1, True, [], {}, ""],
    "command": [1, True, [], {}, "delete_account"],
    "occurred_at": [1700000000, True, [], {}, "2026-13-01T00:00:00Z"],
    "amount": [True, [], {}, "ten", "-5", "0", "1.0000001", 10**30, 1e30, "1e3"],
    "purchased_at": [1, True, [], {}, "2026-11-24"],
    "reference": [1, True, [], {}, "r" * 257],
    "rate_plan": [1, True, [], {}, ""],
    "low_balance_threshold": [True, [], {}, "-1", "x"],
    "included_domestic_minutes": ["10", 1.5, True, [], {}, -1],
    "auto_recharge": ["yes", 1, True, [], {"enabled": "yes"}, {"enabled": True}],
    "request_id": [1, True, [], {}, ""],
    "status": [1, True, [], {}, "maybe"],
    "reason": [1, True, [], {}, ""],
    "currency": [1, True, [], {}, "usd", "DOLLARS"],
}


def _wrong_type_records(tenant: str, at: str) -> list[dict]:
    """Every field of every kind of record, set to each wrong value in turn."""
    bases = {
        "cdr": {
            "cdr_id": "w-cdr",
            "tenant_id": tenant,
            "call_type": "international",
            "to": "+919876543210",
            "from": "+14155550100",
            "started_at": at,
            "duration_seconds": 60,
        },
        "configure_account": {
            "command_id": "w-cfg",
            "tenant_id": tenant,
            "command": "configure_account",
            "occurred_at": at,
            "rate_plan": "standard-usd",
            "low_balance_threshold": "1",
            "included_domestic_minutes": 5,
            "currency": "USD",
            "auto_recharge": {"enabled": True, "threshold": "1", "amount": "5", "payment_method": {"type": "card", "expires": "2099-12"}},
        },
        "add_funds": {
            "command_id": "w-add",
            "tenant_id": tenant,
            "command": "add_funds",
            "occurred_at": at,
            "amount": "5",
            "purchased_at": at,
            "reference": "r",
            "currency": "USD",
        },
        "payment_result": {
            "command_id": "w-pay",
            "tenant_id": tenant,
            "command": "payment_result",
            "occurred_at": at,
            "request_id": f"{tenant}/recharge/1",
            "status": "succeeded",
            "reason": "ok",
        },
    }
    out = []
    n = 0
    for base in bases.values():
        for field in base:
            for value in WRONG.get(field, []):
                n += 1
                rec = dict(base)
                rec[field] = value
                for idf in ("cdr_id", "command_id"):  # a fresh id each, unless the id is the field
                    if idf in rec and idf != field:
                        rec[idf] = f"{rec[idf]}-{n}"
                out.append(rec)
    return out


def _json(value) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits: the standard library writes it
        import json

        return json.dumps(value).encode()


def _hostile(tenant: str, other: str, at: str) -> list[tuple[str | None, bytes, set[str], str | None]]:
    """(key, value, acceptable reasons, expected reject tenant_id or "?" when either)."""
    rng = random.Random(4)
    cdr = {
        "cdr_id": "h-cdr",
        "tenant_id": tenant,
        "call_type": "international",
        "to": "+919876543210",
        "started_at": at,
        "duration_seconds": 60,
    }
    funds = {"command_id": "h-funds", "tenant_id": tenant, "command": "add_funds", "occurred_at": at, "amount": "5"}
    J, R = {"invalid_json"}, {"invalid_record"}
    out: list[tuple[str | None, bytes, set[str], str | None]] = []
    for i in range(8):  # random bytes, with and without a key
        out.append((tenant if i % 2 else None, rng.randbytes(rng.randint(1, 400)), J | R, "?"))
    out += [
        (tenant, b'{"cdr_id":"h-utf8","tenant_id":"' + tenant.encode() + b'","call_type":"\xff\xfe"}', J, None),
        (None, b"\xc3\x28\xa0\xa1", J, None),
        (tenant, b"\xef\xbb\xbf" + orjson.dumps({**cdr, "cdr_id": "h-bom"}), J | R, "?"),
        # Nesting: 100,000 levels, bare and inside a record that names the tenant.
        (None, b"[" * 100_000, J, None),
        (tenant, b'{"tenant_id":"' + tenant.encode() + b'","cdr_id":"h-deep","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", J, None),
        # Huge numbers in amount and duration fields.
        (tenant, orjson.dumps({**funds, "command_id": "h-n1"}).replace(b'"amount":"5"', b'"amount":1e400'), J | R, "?"),
        (tenant, _json({**funds, "command_id": "h-n2", "amount": 10**30}), R, tenant),
        (tenant, orjson.dumps({**cdr, "cdr_id": "h-n3"}).replace(b'"duration_seconds":60', b'"duration_seconds":1e400'), J | R, "?"),
        (tenant, _json({**cdr, "cdr_id": "h-n4", "duration_seconds": 10**30}), R, tenant),
        (tenant, _json({**cdr, "cdr_id": "h-n5", "duration_seconds": -(10**30)}), R, tenant),
        (tenant, _json({**funds, "command_id": "h-n6", "amount": "9" * 400}), R, tenant),
        # JSON that is not an object, or an object that is neither kind.
        (None, b"null", R, None),
        (None, b'"a string"', R, None),
        (None, b"[]", R, None),
        (None, b"{}", R, None),
        (None, b"", J, None),
        # Null keys, with a record that is bad otherwise (no tenant to route it by).
        (None, _json({**cdr, "cdr_id": "h-nk1", "tenant_id": None}), R, None),
        (None, _json({k: v for k, v in cdr.items() if k != "tenant_id"} | {"cdr_id": "h-nk2"}), R, None),
        # The key names one tenant, the value another (both exist).
        (other, _json({**cdr, "cdr_id": "h-mix1"}), R, tenant),
        (tenant, _json({**funds, "command_id": "h-mix2", "tenant_id": other}), R, other),
        (other, _json({**cdr, "cdr_id": "h-mix3", "tenant_id": "somebody-else"}), R, "somebody-else"),
    ]
    for rec in _wrong_type_records(tenant, at):
        t = rec.get("tenant_id")
        key = t if isinstance(t, str) and t else tenant
        out.append((key, _json(rec), R, "?"))
    # 1 MB, just under the broker's default maximum: a record with a huge attribute and a
    # bad "to", and 1 MB of unterminated JSON. Both are over --max-record-bytes (512 KiB):
    # "record too large", never decoded, so no tenant is read (rater/core/bounds.py).
    big = {**cdr, "cdr_id": "h-big1", "to": "not a number", "note": ""}
    pad = 1_000_000 - len(_json(big))
    out.append((tenant, _json({**big, "note": "n" * pad}), R, None))
    out.append((tenant, b'{"cdr_id":"h-big2","tenant_id":"' + tenant.encode() + b'","x":"' + b"y" * 999_900, R, None))
    return out


RAW_LIMIT = 16 * 1024  # a reject's raw holds at most this many bytes of the input (docs/decisions.md)


def _expected_raw(value: bytes) -> dict:
    """The raw fields of a reject of ``value``, as the contract states them."""
    cut = value[:RAW_LIMIT]
    try:
        value.decode("utf-8")
        out = {"raw": cut.decode("utf-8", "ignore"), "raw_encoding": "utf-8"}
    except UnicodeDecodeError:
        out = {"raw": base64.b64encode(cut).decode(), "raw_encoding": "base64"}
    if len(value) > RAW_LIMIT:
        out.update(raw_truncated=True, raw_size=len(value), raw_sha256=hashlib.sha256(value).hexdigest())
    return out


def _partition_for(key: str | None, value: bytes) -> int:
    """Where a record goes so the worker does not forward it: its key's home, or its
    value's tenant's home, or partition 0 when nothing names a tenant."""
    if key:
        return home(key)
    if b'"tenant_id"' in value:
        try:
            t = orjson.loads(value).get("tenant_id")
        except (orjson.JSONDecodeError, AttributeError):
            t = None
        if isinstance(t, str) and t:
            return home(t)
    return 0


def test_hostile_input_is_rejected_with_reasons_while_valid_records_are_rated(kafka_broker):
    broker = kafka_broker.bootstrap
    now = now_utc()
    at = iso(now - timedelta(minutes=30))
    victim, other, good = "hx-victim", "hx-other", "hx-good"
    setup = []
    for t in (victim, other, good):
        setup += [
            (
                t,
                {
                    "command_id": f"{t}-setup",
                    "tenant_id": t,
                    "command": "configure_account",
                    "occurred_at": iso(now - timedelta(hours=2)),
                    "rate_plan": "standard-usd",
                    "low_balance_threshold": "5",
                    "included_domestic_minutes": 10,
                },
            ),
            (
                t,
                {
                    "command_id": f"{t}-funds",
                    "tenant_id": t,
                    "command": "add_funds",
                    "occurred_at": iso(now - timedelta(hours=2)),
                    "amount": "100",
                },
            ),
            (
                t,
                {
                    "command_id": f"{t}-auto",
                    "tenant_id": t,
                    "command": "configure_account",
                    "occurred_at": iso(now - timedelta(hours=2)),
                    "auto_recharge": {
                        "enabled": True,
                        "threshold": "1",
                        "amount": "10",
                        "payment_method": {"type": "card", "expires": "2099-12"},
                    },
                },
            ),
        ]
    hostile = _hostile(victim, other, at)
    with WorkerProcess(broker, name="f4-hostile", extra_args=SWEEP_OFF, precreate_inputs=True) as w:
        t = w.topics
        produce(broker, t.commands, [(k, v, home(k)) for k, v in setup])
        wait_for(lambda: w.records_done() == len(setup), 60, what="setup applied", workers=(w,))
        accounts_before = {x: w.get(f"/tenants/{x}").json() for x in (victim, other)}
        events_before = [r.value for r in consume_all(broker, t.events, 30)]
        assert [e["type"] for e in events_before] == ["funds_added"] * 3

        # Hostile records interleaved with valid calls of another tenant, all on the cdrs
        # topic (commands too: either topic takes either kind), each on its home partition.
        rng = random.Random(9)
        sends = []
        valid = 0
        for i, (key, value, _reasons, _tenant) in enumerate(hostile):
            sends.append(("h", i, key, value, _partition_for(key, value)))
            if i % 2 == 0:
                valid += 1
                cdr = {
                    "cdr_id": f"good-{valid}",
                    "tenant_id": good,
                    "call_type": "international",
                    "to": "+919876543210",
                    "started_at": at,
                    "duration_seconds": rng.choice([30, 60, 90]),
                }
                sends.append(("v", valid, good, orjson.dumps(cdr), home(good)))

        async def send_all():
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", enable_idempotence=True, max_request_size=1_048_576)
            await producer.start()
            try:
                futs = [
                    await producer.send(t.cdrs, value, key=key.encode() if key is not None else None, partition=p)
                    for _kind, _i, key, value, p in sends
                ]
                return [await f for f in futs]
            finally:
                await producer.stop()

        t0 = time.monotonic()
        metas = asyncio.run(send_all())
        sent_s = time.monotonic() - t0
        total = len(setup) + len(sends)
        wait_for(lambda: w.records_done() >= total, 120, interval=0.2, what="every record done", workers=(w,))
        done_s = time.monotonic() - t0
        assert w.running() and w.starts == 1

        # Every hostile record is on the reject topic, found by its source, with a reason.
        rejects = {(r.value["source"]["partition"], r.value["source"]["offset"]): r for r in consume_all(broker, t.rejects, 60)}
        assert w.metric("rater_records_total", outcome="forwarded") == 0
        problems = []
        for (kind, i, key, value, _p), meta in zip(sends, metas):
            if kind != "h":
                continue
            r = rejects.pop((meta.partition, meta.offset), None)
            _k, _v, reasons, tenant = hostile[i]
            if r is None:
                problems.append(f"hostile #{i} ({value[:60]!r}...): no reject")
                continue
            v = r.value
            if v["reason"] not in reasons:
                problems.append(f"hostile #{i} ({value[:80]!r}): reason {v['reason']} ({v['detail']}), want {reasons}")
            if tenant != "?" and v["tenant_id"] != tenant:
                problems.append(f"hostile #{i}: reject tenant_id {v['tenant_id']!r}, want {tenant!r}")
            if not v["detail"]:
                problems.append(f"hostile #{i}: empty detail")
            if r.key != key:
                problems.append(f"hostile #{i}: reject key {r.key!r}, want the input's {key!r}")
            want_raw = _expected_raw(value)
            if {k: v.get(k) for k in want_raw} != want_raw or ("raw_truncated" in v) != ("raw_truncated" in want_raw):
                problems.append(f"hostile #{i}: raw is not the input's bytes (cut to 16 KiB with its size and hash)")
            if len(value) > 512 * 1024 and not v["detail"].startswith("record too large: "):
                problems.append(f"hostile #{i}: {len(value)} bytes but {v['detail']!r}")
        assert problems == [], "\n".join(problems)
        assert rejects == {}, f"unexpected rejects: {[r.value['detail'] for r in rejects.values()]}"

        # The valid calls were all rated, and the victims' accounts did not move.
        rated = [r.value for r in consume_all(broker, t.rated, 60)]
        assert sorted(r["cdr_id"] for r in rated) == sorted(f"good-{i}" for i in range(1, valid + 1))
        assert {x: w.get(f"/tenants/{x}").json() for x in (victim, other)} == accounts_before
        events = [r.value for r in consume_all(broker, t.events, 30)]
        assert sorted((e for e in events if e["tenant_id"] != good), key=lambda e: e["event_id"]) == sorted(
            (e for e in events_before if e["tenant_id"] != good), key=lambda e: e["event_id"]
        )
        assert w.metric("rater_rejects_total") == len(hostile)
        # A normal pace: every record (hostile ones included) in and out well under a second.
        count = w.metric("rater_processing_seconds_count")
        within_1s = w.metric("rater_processing_seconds_bucket", le="1.0")
        assert count == total and within_1s >= 0.99 * count, (within_1s, count)
        assert w.errors() == []
        report(
            f"hostile input: {len(hostile)} hostile records interleaved with {valid} valid calls "
            f"({sum(len(v) for *_x, v, _p in sends) / 1e6:.1f} MB) produced in {sent_s:.1f} s, all done "
            f"{done_s:.1f} s after the first send; {within_1s:.0f}/{count:.0f} records processed within 1 s"
        )


# ---------------------------------------------------------------------------- 5. SASL/SCRAM


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory):
    """A broker of its own with a SASL_PLAINTEXT SCRAM-SHA-512 listener (user rater)."""
    data_dir = tmp_path_factory.mktemp("kafka-scram")
    try:
        info = devbroker.start(data_dir=data_dir, scram_users={"rater": "secret"}, die_with_parent=True, quiet=True)
    except devbroker.DevBrokerError as exc:
        pytest.fail(f"cannot start the SCRAM broker: {exc}", pytrace=False)
    try:
        assert info.sasl_bootstrap, info
        yield info
    finally:
        devbroker.stop(data_dir=data_dir, quiet=True)


def _sasl(password: str = "secret") -> list[str]:
    return [
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        "SCRAM-SHA-512",
        "--sasl-username",
        "rater",
        "--sasl-password",
        password,
    ]


SASL_CLIENT = dict(
    security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="rater", sasl_plain_password="secret"
)


def test_the_worker_rates_over_sasl_scram(scram_broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    sasl = scram_broker.sasl_bootstrap
    now = now_utc()
    tenant = "scram-co"
    records = [
        {
            "command_id": "s-setup",
            "tenant_id": tenant,
            "command": "configure_account",
            "occurred_at": iso(now - timedelta(hours=1)),
            "rate_plan": "standard-usd",
        },
        {
            "command_id": "s-funds",
            "tenant_id": tenant,
            "command": "add_funds",
            "occurred_at": iso(now - timedelta(hours=1)),
            "amount": "10",
        },
    ] + [
        {
            "cdr_id": f"s-{i}",
            "tenant_id": tenant,
            "call_type": "international",
            "to": "+919876543210",
            "started_at": iso(now - timedelta(minutes=30 - i)),
            "duration_seconds": 60,
        }
        for i in range(3)
    ]
    with WorkerProcess(sasl, name="f6-sasl", extra_args=SWEEP_OFF + _sasl()) as w:

        async def send():
            producer = AIOKafkaProducer(bootstrap_servers=sasl, acks="all", **SASL_CLIENT)
            await producer.start()
            try:
                for r in records:
                    await producer.send_and_wait(w.topics.cdrs, orjson.dumps(r), key=tenant.encode())
            finally:
                await producer.stop()

        async def read_rated(n: int) -> list[dict]:
            consumer = AIOKafkaConsumer(bootstrap_servers=sasl, auto_offset_reset="earliest", **SASL_CLIENT)
            await consumer.start()
            try:
                tps = [TopicPartition(w.topics.rated, p) for p in consumer.partitions_for_topic(w.topics.rated) or range(4)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                out: list[dict] = []
                deadline = time.monotonic() + 30
                while len(out) < n and time.monotonic() < deadline:
                    for msgs in (await consumer.getmany(timeout_ms=500)).values():
                        out += [orjson.loads(m.value) for m in msgs]
                return out
            finally:
                await consumer.stop()

        asyncio.run(send())
        wait_for(lambda: w.records_done() == len(records), 60, what="records rated over SASL", workers=(w,))
        rated = asyncio.run(read_rated(3))
        assert sorted(r["cdr_id"] for r in rated) == ["s-0", "s-1", "s-2"]
        assert w.get(f"/tenants/{tenant}").json()["balance"] == "9.910000"  # 10 - 3 x 0.03 (India, 1 min)
        assert w.errors() == []


def test_a_wrong_sasl_password_is_a_clear_one_line_error(scram_broker, tmp_path):
    topics = WorkerTopics.unique("f6-bad")
    cmd = [
        sys.executable,
        "-m",
        "rater",
        "worker",
        "--broker",
        scram_broker.sasl_bootstrap,
        "--rates",
        str(ROOT / "rate_tables"),
        "--state-dir",
        str(tmp_path / "state"),
        "--web-port",
        "0",
        "--partitions",
        "4",
        "--app-id",
        unique("f6-bad"),
        *topics.args(),
        *_sasl("wrong-password"),
    ]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"the worker hung for 90 s with a wrong password instead of exiting:\n{(out + err)[-3000:]}")
    took = time.monotonic() - t0
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output[-3000:]
    assert lines[0].startswith("rater: ") and re.search(r"auth|password|SASL|SCRAM", lines[0], re.I), lines[0]
    report(f"wrong SASL password: exit {proc.returncode} after {took:.1f} s: {lines[0]}")


def _produce_over_sasl(scram_broker, tmp_path, topic: str, password: str) -> subprocess.CompletedProcess:
    """`rater produce` with the worker's connection flags, the password in RATER_SASL_PASSWORD."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"cdr_id": "p-1", "tenant_id": "scram-co"}\n{"cdr_id": "p-2", "tenant_id": "scram-co"}\nnot json\n')
    cmd = [
        sys.executable,
        "-m",
        "rater",
        "produce",
        str(src),
        "--broker",
        scram_broker.sasl_bootstrap,
        "--topic",
        topic,
        "--partitions",
        "1",
        *_sasl()[:-2],
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1", RATER_SASL_PASSWORD=password)
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("rater produce hung for 90 s on the SASL listener")


def test_rater_produce_publishes_over_sasl_scram(scram_broker, tmp_path):
    """The connection flags of issue 16 reach `rater produce`'s admin client and producer: the
    SASL listener accepts nothing else, so the three lines arriving prove SCRAM was used."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = unique("f6-produce")
    proc = _produce_over_sasl(scram_broker, tmp_path, topic, "secret")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == f"3 to {topic}"

    async def read(n: int) -> list[tuple[bytes | None, bytes]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=scram_broker.sasl_bootstrap, **SASL_CLIENT)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            out: list[tuple[bytes | None, bytes]] = []
            deadline = time.monotonic() + 30
            while len(out) < n and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    out += [(m.key, m.value) for m in msgs]
            return out
        finally:
            await consumer.stop()

    assert asyncio.run(read(3)) == [
        (b"scram-co", b'{"cdr_id": "p-1", "tenant_id": "scram-co"}'),
        (b"scram-co", b'{"cdr_id": "p-2", "tenant_id": "scram-co"}'),
        (None, b"not json"),
    ]


def test_rater_produce_with_a_wrong_sasl_password_is_a_one_line_error(scram_broker, tmp_path):
    proc = _produce_over_sasl(scram_broker, tmp_path, unique("f6-produce-bad"), "wrong-password")
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output[-3000:]
    assert lines[0].startswith(f"rater: cannot publish to Kafka at {scram_broker.sasl_bootstrap}: "), lines[0]
    assert "SaslAuthenticationFailed" in lines[0], lines[0]  # aiokafka's reason, kept from its log
    report(f"rater produce, wrong SASL password: exit {proc.returncode}: {lines[0]}")


def test_rater_simulate_with_a_wrong_sasl_password_names_the_refusal(scram_broker, tmp_path):
    """`rater simulate` takes the same connection flags; a refused login is named in its error."""
    base = unique("f6-sim")
    cmd = [
        sys.executable,
        "-m",
        "rater",
        "simulate",
        "--broker",
        scram_broker.sasl_bootstrap,
        "--duration",
        "1",
        "--setup-timeout",
        "20",
        "--cdrs-topic",
        f"{base}-cdrs",
        "--commands-topic",
        f"{base}-commands",
        "--events-topic",
        f"{base}-events",
        "--requests-topic",
        f"{base}-requests",
        *_sasl()[:-2],
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1", RATER_SASL_PASSWORD="wrong-password")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("rater simulate hung for 90 s with a wrong SASL password")
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("rater: ")]
    assert len(errors) == 1, output[-3000:]
    assert errors[0].startswith(f"rater: simulate: cannot reach the broker at {scram_broker.sasl_bootstrap} "), errors[0]
    assert "SaslAuthenticationFailed" in errors[0], errors[0]
    assert "Unable connect" not in output.replace(errors[0], ""), output[-3000:]  # no loose aiokafka lines
