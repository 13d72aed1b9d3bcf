"""The commit pipeline without a broker: crashed between every pair of steps, restarted.

``FakeKafka`` is a test double of the pipeline's own port (``rater/worker/pipeline.py``,
``KafkaPort``), in memory: what survives a crash (the input logs, committed offsets,
acknowledged outputs, the changelog) lives in ``FakeKafka``; a ``Process`` is one life of
the worker (its port, account store, batch processor and pipeline). A crash at a named
point kills the process there (nothing it does afterwards reaches Kafka), the next process
starts on what was written (the local table rebuilt from the changelog, as faust's
recovery does) and consumes to the end. Every test runs on both batch steps, each with
its account store (``BatchProcessor`` and ``AccountStore``; ``NativeBatchProcessor`` and
``NativeAccountStore`` when the native engine is built). The real-broker tests (``tests/worker/test_replay.py``,
``tests/worker/test_chaos.py``) stay; these check the protocol's order itself, in milliseconds.

Expected values are worked out by hand from ``tests/support/ledger.py``'s plan: a call
to +44 costs 0.060000 a minute, in whole minutes (first and next increment 60 s).
"""

from __future__ import annotations

import asyncio
from collections import namedtuple

import orjson
import pytest

from rater.core.batch import BatchProcessor, Message, Topics
from rater.core.codec import decode_account
from rater.core.native_engine import NativeBatchProcessor, available
from rater.core.partitioning import partition_for
from rater.worker.pipeline import CommitPipeline, processing_clock
from rater.worker.store import AccountStore, NativeAccountStore
from tests.support.ledger import NOW, cdr, configure, funds, write_tables

TP = namedtuple("TP", "topic partition")
# Both batch steps, each with its account store (the native one when it is built).
ENGINES = ["python"] + (["native"] if available() else [])
PARTITIONS = 2
FETCH = 2  # records per partition per fetch: several batches per partition
UK = "+442071234567"  # 0.060000 a minute, whole minutes

# Where a process dies, in the order the pipeline reaches them for one batch.
CRASH_POINTS = [
    "1-2",  # asking the broker where newly assigned partitions start (step 1)
    "2-3",  # step 2 done, before any output is sent
    "in-3",  # half of the outputs acknowledged
    "3-4",  # every output acknowledged, no account written
    "in-4B",  # the first changelog record of the batch acknowledged and stored, not the rest
    "4-store",  # the whole of step 4 on the changelog, not yet in the local store
    "4-5",  # step 4 done, the offsets not committed
    "after-5",  # the offsets committed
]


class Crash(BaseException):
    """The process ended here (os._exit in production)."""


class FakeKafka:
    """What outlives a process: input logs, committed offsets, outputs, the changelog."""

    def __init__(self, logs: dict[TP, list[Message]]):
        self.logs = logs
        self.committed: dict[TP, int] = {}
        self.outputs: list[tuple[str, bytes | None, bytes]] = []
        self.changelog: list[tuple[int, bytes, bytes | None]] = []

    def recovered_table(self) -> dict[int, dict[bytes, bytes]]:
        """The local table a restarted worker has once faust's recovery read the changelog."""
        table: dict[int, dict[bytes, bytes]] = {p: {} for p in range(PARTITIONS)}
        for partition, key, value in self.changelog:
            if value is None:
                table[partition].pop(key, None)
            else:
                table[partition][key] = value
        return table


class FakePort:
    """One process's view of ``FakeKafka``, through the pipeline's port interface."""

    changelog = "rater-accounts-changelog"

    def __init__(self, kafka: FakeKafka, crash_at: str | None, crash_batch: int):
        self.kafka = kafka
        self.table = kafka.recovered_table()
        self.crash_at = crash_at
        self.crash_batch = crash_batch  # the input batch (1, 2, ...) whose steps crash
        self.batch = 0
        self.dead = False
        self.seeks: dict[TP, int] = {}

    def _point(self, name: str) -> None:
        if self.dead:
            raise Crash("already dead")
        if self.crash_at == name and self.batch == self.crash_batch:
            self.dead = True
            raise Crash(name)

    def tp(self, topic, partition):
        return TP(topic, partition)

    def fetch_is_current(self, generation):
        return not self.dead

    def active(self):
        return set(self.kafka.logs)

    async def start_offsets(self, tps):
        self._point("1-2")
        return {tp: self.kafka.committed.get(tp, 0) for tp in tps}

    def highwater(self, tp):
        return len(self.kafka.logs[tp])

    async def seek(self, seeks):
        self.seeks.update(seeks)

    def committed(self):
        return dict(self.kafka.committed)

    async def commit(self, offsets):
        self._point("4-5")
        self.kafka.committed.update(offsets)
        self._point("after-5")

    async def produce(self, records, outputs, replace):
        self._point("2-3")
        everything = [(topic, key, value) for topic, _partition, key, value, _headers in records] + list(outputs)
        half = len(everything) // 2
        for i, (topic, key, value) in enumerate(everything):
            if i == half:
                self._point("in-3")
            self.kafka.outputs.append((topic, key, value))
        self._point("3-4")

    async def deliver(self, records):
        if self.dead:
            raise Crash("already dead")
        if self.crash_at == "in-4B" and self.batch == self.crash_batch:
            _topic, partition, key, value, _headers = records[0]
            self.kafka.changelog.append((partition, key, value))
            self._table_put(partition, key, value)
            self._point("in-4B")
        for _topic, partition, key, value, _headers in records:
            self.kafka.changelog.append((partition, key, value))
        self._point("4-store")
        for _topic, partition, key, value, _headers in records:
            self._table_put(partition, key, value)

    def _table_put(self, partition, key, value):
        if value is None:
            self.table[partition].pop(key, None)
        else:
            self.table[partition][key] = value

    def table_get(self, partition, key):
        return self.table[partition].get(key)


def worker_parts(
    engine: str, port, tables, cache_limit: int, partitions: int = PARTITIONS, idle_after: int | None = None, account_format: int = 2
):
    """The account store and batch processor of a worker on ``engine``, as the app wires them
    (``idle_after``: the native store's, when not its default; ``account_format``: of the
    values it writes, ``--account-format``)."""
    if engine == "native":
        store = NativeAccountStore(port, partitions, cache_limit, idle_after, account_format=account_format)
        return store, NativeBatchProcessor(tables, partitions, Topics(), store)
    store = AccountStore(port, partitions, cache_limit, account_format=account_format)
    return store, BatchProcessor(tables, partitions, Topics(), store.load)


class Process:
    """One life of the worker over ``FakeKafka``: consumes every input to its end."""

    def __init__(
        self,
        kafka: FakeKafka,
        tables,
        crash_at: str | None = None,
        crash_batch: int = 0,
        pipeline_class=CommitPipeline,
        engine: str = "python",
    ):
        self.kafka = kafka
        self.port = FakePort(kafka, crash_at, crash_batch)
        store, processor = worker_parts(engine, self.port, tables, cache_limit=100)
        self.pipeline = pipeline_class(self.port, store, processor)
        self.pipeline.clock = lambda: NOW * 1000  # the same processing time in every life

        def die(code, message, *args, **kwargs):
            self.port.dead = True
            raise Crash(message % args)

        self.pipeline.die = die

    async def run(self) -> None:
        """Fetch FETCH records a partition at a time from the committed offsets, as the
        consumer does after an assignment, each fetch one batch; commit after each (the
        pipeline's 1 s timer), and stop cleanly at the end."""
        logs = self.kafka.logs
        position = {tp: self.kafka.committed.get(tp, 0) for tp in logs}
        while True:
            chunks = {tp: log[position[tp] : position[tp] + FETCH] for tp, log in logs.items()}
            chunks = {tp: records for tp, records in chunks.items() if records}
            if not chunks:
                break
            for tp, records in chunks.items():
                position[tp] += len(records)
            self.port.batch += 1
            await self.pipeline.take(chunks, generation=1)
            await self.pipeline.drain()
            await self.pipeline.commit_timer()
            position.update(self.port.seeks)
            self.port.seeks.clear()
        await self.pipeline.on_stop()


def _home(tenant: str) -> int:
    return partition_for(tenant.encode(), PARTITIONS)


def scenario() -> dict[TP, list[Message]]:
    """Two tenants on two partitions (their home partitions: no forwards). A fetch takes
    the partitions in this order, so a batch applies records in it.

    acme: configured and funded 5.000000, then CDRs c1, c2 (60 s each), c1 again (a
    duplicate), c3 (60 s) and one record that is not JSON. bolt: a CDR b0 and a record that
    is not JSON in the same batch as, and *before*, its configure and funds of 2.000000
    (b0 is rejected, and must stay rejected: judged again after the configure, it would be
    charged), then b1 (120 s)."""
    a, b = _home("acme"), _home("bolt")
    assert a != b
    cmds, cdrs = Topics().commands, Topics().cdrs

    def log(topic, partition, records):
        return [Message(topic, partition, i, key, value) for i, (key, value) in enumerate(records)]

    def rec(r):
        return r["tenant_id"].encode(), orjson.dumps(r)

    return {
        TP(cmds, a): log(cmds, a, [rec(configure("acme")), rec(funds("5", "acme-f1"))]),
        TP(cdrs, a): log(
            cdrs,
            a,
            [rec(cdr("c1", UK, 60)), rec(cdr("c2", UK, 60)), rec(cdr("c1", UK, 60)), rec(cdr("c3", UK, 60)), (b"acme", b"{not json")],
        ),
        TP(cdrs, b): log(cdrs, b, [rec(cdr("b0", UK, 60, tenant="bolt")), (b"bolt", b"{not json"), rec(cdr("b1", UK, 120, tenant="bolt"))]),
        TP(cmds, b): log(cmds, b, [rec(configure("bolt", cid="cfg-b")), rec(funds("2", "bolt-f1", tenant="bolt"))]),
    }


def _balances(kafka: FakeKafka) -> dict[str, int]:
    table = kafka.recovered_table()
    return {tenant: decode_account(table[_home(tenant)][tenant.encode()]).balance for tenant in ("acme", "bolt")}


def _outcomes(kafka: FakeKafka) -> list[tuple[str, str, str]]:
    """(topic, what it is about, its type or reason) of every output, in order."""
    out = []
    for topic, _key, value in kafka.outputs:
        body = orjson.loads(value)
        about = body.get("cdr_id") or body.get("cause", {}).get("id") or "{topic}/{partition}@{offset}".format(**body["source"])
        out.append((topic, about, body.get("reason") or body.get("type") or ""))
    return out


def _run(tables, crash_at=None, crash_batch=0, pipeline_class=CommitPipeline, engine="python") -> tuple[FakeKafka, bool]:
    kafka = FakeKafka(scenario())
    crashed = False
    try:
        asyncio.run(Process(kafka, tables, crash_at, crash_batch, pipeline_class, engine).run())
    except Crash:
        crashed = True
        asyncio.run(Process(kafka, tables, pipeline_class=pipeline_class, engine=engine).run())
    return kafka, crashed


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return write_tables(str(tmp_path_factory.mktemp("rates")))


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture(scope="module")
def reference(tables, engine):
    kafka, crashed = _run(tables, engine=engine)
    assert not crashed
    return kafka


def test_without_a_crash_every_record_is_judged_once_with_hand_worked_balances(reference):
    # acme: 5.000000 - 3 x 0.060000 (c1, c2, c3; the second c1 is a duplicate)
    # bolt: 2.000000 - 2 x 0.060000 (b1: 120 s); b0 came before the account existed
    assert _balances(reference) == {"acme": 4_820_000, "bolt": 1_880_000}
    a, b = _home("acme"), _home("bolt")
    assert sorted(_outcomes(reference)) == sorted(
        [
            ("balance-events", "acme-f1", "funds_added"),
            ("balance-events", "bolt-f1", "funds_added"),
            ("rated-cdrs", "c1", ""),
            ("rated-cdrs", "c2", ""),
            ("rated-cdrs", "c3", ""),  # the second c1: a duplicate, no output
            ("rated-cdrs", "b1", ""),
            ("rater-rejects", f"cdrs/{b}@0", "unknown_tenant"),  # b0
            ("rater-rejects", f"cdrs/{b}@1", "invalid_json"),
            ("rater-rejects", f"cdrs/{a}@4", "invalid_json"),
        ]
    )


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_between_any_two_steps_loses_nothing_and_applies_nothing_twice(tables, engine, reference, point, batch):
    kafka, crashed = _run(tables, point, batch, engine=engine)
    if point == "1-2" and batch > 1:
        assert not crashed  # offsets are asked of the broker once per assignment
    else:
        assert crashed
    # Every debit exactly once: the balances of the run without a crash.
    assert _balances(kafka) == {"acme": 4_820_000, "bolt": 1_880_000}
    # Every output at least once, and nothing judged otherwise: the same outcomes.
    assert set(kafka.outputs) == set(reference.outputs)
    # Offsets end committed at every log's end.
    assert kafka.committed == {tp: len(log) for tp, log in kafka.logs.items()}
    if point in ("4-5", "after-5"):
        # Step 4 (the accounts and the applied marks) was durable: the replay judges
        # none of the batch's records again, so no output is written twice.
        assert len(kafka.outputs) == len(reference.outputs)


def test_the_processing_clock_is_the_wall_clock_unless_a_test_runs_it_ahead(monkeypatch):
    monkeypatch.setattr("time.time_ns", lambda: 1_800_000_000_000_000_000)
    assert processing_clock("")() == 1_800_000_000_000_000_000
    assert processing_clock("after-step-4")() == 1_800_000_000_000_000_000
    assert processing_clock("clock+242")() == 1_800_000_242_000_000_000
    assert processing_clock("clock+soon")() == 1_800_000_000_000_000_000  # not a number: no shift
