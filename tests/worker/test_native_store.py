"""The native account store against the Python one: the same writes, byte for byte.

A worker in miniature (no broker): the real ``AccountStore`` or ``NativeAccountStore``,
the real batch processor and ``CommitPipeline.plan`` over an in-memory table that each
batch's writes land in at once. Both run the same batches; every batch's ``Writes``
(outputs, forwards, id segments, account values with their judged offsets, applied
marks) and the sweep index must be equal. The batches reach cache hits, evictions (a
cache of 0, 1 and 2 accounts), ``forget`` (a rebalance), id segments moved and deleted,
and the wall-clock sweep. Skipped when the native engine is not built.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rater.core import idsegments
from rater.core.batch import Message, Topics
from rater.core.codec import decode_account, decode_judged, encode_account
from rater.core.engine import Tally
from rater.core.idsegments import SEGMENT_AT, is_segment_key
from rater.core.native_engine import available
from rater.core.partitioning import partition_for
from rater.core.records import TENANT_RE
from rater.core.timeutil import format_time, parse_time
from rater.worker import sweeper
from rater.worker.pipeline import CommitPipeline
from rater.worker.replay import Judged
from rater.worker.sweeper import Sweeper
from tests.core.test_native_diff import DIFF, NOW, streams
from tests.support.ledger import write_tables
from tests.worker.test_fetched import v2_batch
from tests.worker.test_pipeline import TP, worker_parts

pytestmark = pytest.mark.skipif(not available(), reason="the native engine is not built (pip install ./native)")

PARTITIONS = 4
SWEEP_AT = parse_time("2026-12-10T00:00:00Z")  # the sweep's wall clock: lots bought in 2025-11 expired


class TablePort:
    """The port of a worker whose writes land in the table as soon as they are planned."""

    changelog = "rater-accounts-changelog"

    def __init__(self):
        self.table: dict[int, dict[bytes, bytes]] = {p: {} for p in range(PARTITIONS)}

    def table_get(self, partition, key):
        return self.table[partition].get(key)

    def table_items(self, owned):
        for p in owned:
            yield from list(self.table[p].items())

    def active(self):
        return {TP("cdrs", p) for p in range(PARTITIONS)}

    async def produce(self, records, outputs, replace):
        pass

    async def deliver(self, records):
        for _topic, partition, key, value, _headers in records:
            if value is None:
                self.table[partition].pop(key, None)
            else:
                self.table[partition][key] = value


class Worker:
    """One engine's store, processor and pipeline over its own table."""

    def __init__(self, engine: str, tables, cache_limit: int, idle_after: int | None = None, account_format: int = 2):
        self.port = TablePort()
        self.store, self.processor = worker_parts(engine, self.port, tables, cache_limit, PARTITIONS, idle_after, account_format)
        self.pipeline = CommitPipeline(self.port, self.store, self.processor)
        self.stats = SimpleNamespace(tally=Tally())
        self.sweeper = Sweeper(self.pipeline, self.port, Topics(), PARTITIONS, self.stats, lambda: [])

    def batch(self, msgs: list[Message], now: int = NOW):
        """Steps 2 to 4 of one batch, as ``handle_batch`` does them (no Kafka)."""
        self.store.durable.clear()
        result = self.processor.process(msgs, now)
        positions = {}
        for m in msgs:
            positions[(m.topic, m.partition)] = m.offset
        w = self.pipeline.plan(result, positions)
        self.store.hand_over(w.segments, w.accounts, result.accounts)
        asyncio.run(self._write(w))
        return w

    def batch_runs(self, runs: list, now: int = NOW):
        """``batch``, the records fed run by run (``rater_native.Records``), as
        ``handle_batch`` feeds them."""
        self.store.durable.clear()
        result = self.processor.begin()
        for run in runs:
            self.processor.feed(result, run, now)
        self.processor.end(result)
        positions = {(run[-1].topic, run[-1].partition): run[-1].offset for run in runs}
        w = self.pipeline.plan(result, positions)
        self.store.hand_over(w.segments, w.accounts, result.accounts)
        asyncio.run(self._write(w))
        return w

    async def _write(self, w):
        await self.port.deliver(w.segments)
        await self.port.deliver(w.accounts)
        self.store.written(w.segments, w.accounts)

    def sweep(self):
        """The wall-clock sweep, its clock set past every record's time; its writes."""
        written = []
        deliver = self.port.deliver

        async def record(records):
            written.extend(records)
            await deliver(records)

        self.port.deliver = record
        clock = sweeper.time
        sweeper.time = SimpleNamespace(time_ns=lambda: SWEEP_AT * 1000)
        try:
            asyncio.run(self.sweeper.sweep())
        finally:
            sweeper.time = clock
            self.port.deliver = deliver
        return written


def _index(w) -> tuple:
    """The store's tenant index: dues, states, and who is due at the sweep's time."""
    ix = w.store.index
    return ix.dues(), ix.states(), ix.due_by(SWEEP_AT)


def _writes(w) -> tuple:
    forwarded, origins = ([(m.topic, m.partition, m.offset) for m in ms] for ms in (w.forwarded, w.origins))
    return (w.produce, list(w.outputs), forwarded, origins, w.segments, w.accounts, w.positions, w.records)


def _messages(raws: list[bytes], wrong_every: int) -> list[Message]:
    msgs = []
    for i, raw in enumerate(raws):
        try:
            tenant = orjson.loads(raw).get("tenant_id")
        except (orjson.JSONDecodeError, AttributeError):
            tenant = None
        named = isinstance(tenant, str) and tenant
        key = tenant.encode() if named and i % 3 else None
        home = partition_for(tenant.encode(), PARTITIONS) if named else 0
        partition = (home + 1) % PARTITIONS if wrong_every and i % wrong_every == 0 else home
        msgs.append(Message("cdrs" if i % 2 else "tenant-commands", partition, i, key, raw))
    return msgs


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return write_tables(str(tmp_path_factory.mktemp("rates")))


def _same_run(tables, msgs, batch, cache_limit, forget_every=0, idle_after=None, account_format=2):
    workers = [Worker(e, tables, cache_limit, idle_after if e == "native" else None, account_format) for e in ("python", "native")]
    for n, start in enumerate(range(0, len(msgs), batch)):
        chunk = msgs[start : start + batch]
        py, nat = (_writes(w.batch(chunk)) for w in workers)
        assert nat == py
        if idle_after:  # a batch of nothing: what the batch before used goes idle sooner
            py, nat = (_writes(w.batch([])) for w in workers)
            assert nat == py
        if forget_every and n % forget_every == forget_every - 1:
            for w in workers:
                w.store.forget()
        assert _index(workers[1]) == _index(workers[0])
        assert len(workers[1].store.held) <= max(cache_limit, 0)
    assert workers[1].port.table == workers[0].port.table
    py_sweep, nat_sweep = (w.sweep() for w in workers)
    assert nat_sweep == py_sweep
    assert workers[1].port.table == workers[0].port.table
    assert _index(workers[1]) == _index(workers[0])
    return workers


@DIFF
@given(
    stream=streams,
    batch=st.integers(1, 30),
    wrong_every=st.sampled_from([0, 0, 7]),
    cache_limit=st.sampled_from([0, 1, 2, 100]),
    forget_every=st.sampled_from([0, 0, 2]),
    idle_after=st.sampled_from([None, 1, 2]),
)
def test_batches_give_the_same_writes_from_both_stores(tables, stream, batch, wrong_every, cache_limit, forget_every, idle_after):
    """Cache hits, evictions, forget(), held accounts gone idle (kept in their stored form)
    and the sweep: the same writes, batch by batch."""
    _same_run(tables, _messages(stream, wrong_every), batch, cache_limit, forget_every, idle_after)


def _funded(tenant: str, at: str, amount: str) -> list[bytes]:
    """A tenant's account on test-usd, and funds added: its two commands (ids c and f)."""
    configure = {"command_id": "c", "tenant_id": tenant, "command": "configure_account", "occurred_at": at, "rate_plan": "test-usd"}
    funds = {"command_id": "f", "tenant_id": tenant, "command": "add_funds", "occurred_at": at, "amount": amount}
    return [orjson.dumps(configure), orjson.dumps(funds)]


def _cdr(tenant: str, cdr_id: str, at: int) -> bytes:
    return orjson.dumps(
        {
            "cdr_id": cdr_id,
            "tenant_id": tenant,
            "call_type": "international",
            "to": "+442071234567",
            "started_at": format_time(at),
            "duration_seconds": 60,
        }
    )


@pytest.mark.parametrize(("idle_after", "account_format"), [(None, 2), (1, 2), (None, 1), (1, 1)])
def test_ids_moved_into_segments_and_deleted_give_the_same_writes(tables, idle_after, account_format):
    """One busy tenant: 5 x SEGMENT_AT calls over 12 days in batches of a little more, so ids move into
    segments (after the account holding them was written) and the first segments are
    deleted once past the 7-day horizon; repeats of moved ids are duplicates. Also with
    the held account kept in its stored form between the batches (``idle_after=1``), and
    with both stores writing format 1 (``--account-format 1``)."""
    tenant = "busy"
    p = partition_for(tenant.encode(), PARTITIONS)
    setup = _funded(tenant, "2026-11-20T00:00:00Z", "1000000")
    start = parse_time("2026-11-20T00:01:00Z")
    step = 12 * 86_400 * 10**6 // (5 * SEGMENT_AT)  # 5 x SEGMENT_AT calls over 12 days
    raws = setup + [_cdr(tenant, f"k{i}", start + i * step) for i in range(5 * SEGMENT_AT)]
    msgs = [Message("cdrs", p, i, tenant.encode(), r) for i, r in enumerate(raws)]
    workers = _same_run(tables, msgs, SEGMENT_AT + 50, cache_limit=50, idle_after=idle_after, account_format=account_format)
    table = workers[1].port.table[p]
    assert table[tenant.encode()][:1] == (b"{" if account_format == 1 else b"\x02")
    acct = decode_account(table[tenant.encode()])
    # Every call charged once (a minute at 0.060000 on test-usd to +44).
    assert acct.balance == 1_000_000_000_000 - 5 * SEGMENT_AT * 60_000
    # The first segments are past the horizon (deleted); the newer ones are listed and stored.
    listed = [n for n, _latest in acct.id_segments]
    assert listed and listed[0] >= 1 and acct.next_segment >= 3
    assert sorted(k for k in table if is_segment_key(k)) == sorted(f"busy\x00ids\x00{n}".encode() for n in listed)
    assert len(acct.seen_cdrs) < 2 * SEGMENT_AT
    # Repeats of the newest ids of the newest segment (within the horizon, no longer in
    # the account): duplicates on both, answered from the segment.
    moved = table[f"busy\x00ids\x00{listed[-1]}".encode()].decode().split("\n")[-3:]
    assert not set(moved) & set(acct.seen_cdrs)
    again = [Message("cdrs", p, len(raws) + i, tenant.encode(), _cdr(tenant, k, start + int(k[1:]) * step)) for i, k in enumerate(moved)]
    py, nat = (w.batch(again) for w in workers)
    assert _writes(nat) == _writes(py)
    assert nat.produce == [] and list(nat.outputs) == [] and nat.records == Counter({("cdrs", "duplicate"): 3})


@pytest.mark.parametrize("engine", ["python", "native"])
def test_a_table_written_in_format_1_is_carried_on_in_format_2(tables, engine):
    """The upgrade: a worker writing format 1 (a release before format 2, or one run with
    ``--account-format 1``) leaves its table to a worker writing format 2 (a new one, its
    own empty cache, as after a rebalance). The new worker reads the format 1 accounts and
    writes each in format 2 when it changes it; an account it does not change stays in
    format 1. At the end every account is what one run in format 2 gives, charged once."""
    raws = []
    for t in ("t1", "t2"):
        raws += _funded(t, "2026-11-01T00:00:00Z", "5")
    raws += [_cdr("t1", f"k{i}", parse_time("2026-11-02T10:00:00Z") + i * 10**9) for i in range(3)]
    later = [_cdr("t1", f"k{i}", parse_time("2026-11-02T10:00:00Z") + i * 10**9) for i in range(5)]  # k0..k2 again
    msgs = []
    for i, raw in enumerate(raws + later):
        tenant = orjson.loads(raw)["tenant_id"].encode()
        msgs.append(Message("cdrs", partition_for(tenant, PARTITIONS), i, tenant, raw))
    first, second = msgs[: len(raws)], msgs[len(raws) :]
    old = Worker(engine, tables, cache_limit=10, account_format=1)
    old.batch(first)

    def accounts(w) -> dict[bytes, bytes]:  # the account values (not the applied marks)
        return {k: v for p in w.port.table.values() for k, v in p.items() if not k.startswith(b"\x00")}

    assert {k: v[:1] for k, v in accounts(old).items()} == {b"t1": b"{", b"t2": b"{"}
    new = Worker(engine, tables, cache_limit=10)
    new.port.table = old.port.table
    w = new.batch(second)
    assert w.records == Counter({("cdrs", "applied"): 2, ("cdrs", "duplicate"): 3})
    once = Worker(engine, tables, cache_limit=10)
    once.batch(first)
    once.batch(second)
    stored = accounts(new)
    assert stored[b"t1"][:1] == b"\x02" and stored[b"t2"][:1] == b"{"  # t2 had no change
    expected = accounts(once)
    assert {k: decode_account(v) for k, v in stored.items()} == {k: decode_account(v) for k, v in expected.items()}
    assert stored[b"t1"] == expected[b"t1"]  # the same bytes, judged offsets included
    assert decode_account(stored[b"t1"]).balance == 5_000_000 - 5 * 60_000  # five minutes at 0.060000


def test_segments_as_large_as_the_list_give_the_same_writes(tables, monkeypatch):
    """A segment holds at least as many ids as the account lists segments: with the least
    size set to 4, 900 calls over 12 days in batches of 7 make the list grow past 7, and
    both engines cut, list and delete the same segments. Without the growth every segment
    would hold one batch's 7 ids."""
    monkeypatch.setattr(idsegments, "SEGMENT_AT", 4)  # both stores read it when made
    tenant = "busy"
    p = partition_for(tenant.encode(), PARTITIONS)
    setup = _funded(tenant, "2026-11-20T00:00:00Z", "1000000")
    start = parse_time("2026-11-20T00:01:00Z")
    step = 12 * 86_400 * 10**6 // 900
    raws = setup + [_cdr(tenant, f"k{i}", start + i * step) for i in range(900)]
    msgs = [Message("cdrs", p, i, tenant.encode(), r) for i, r in enumerate(raws)]
    workers = _same_run(tables, msgs, 7, cache_limit=50)
    table = workers[1].port.table[p]
    acct = decode_account(table[tenant.encode()])
    assert acct.balance == 1_000_000_000_000 - 900 * 60_000
    sizes = [len(table[f"busy\x00ids\x00{n}".encode()].split(b"\n")) for n, _latest in acct.id_segments]
    assert len(sizes) > 7 and max(sizes) > 7
    # The first segments are past the 7-day horizon: deleted, and no longer listed.
    assert acct.id_segments[0][0] > 0
    assert sorted(k for k in table if is_segment_key(k)) == sorted(f"busy\x00ids\x00{n}".encode() for n, _ in acct.id_segments)


@pytest.mark.parametrize("engine", ["python", "native"])
def test_a_failed_segment_read_leaves_no_partial_set_of_segment_ids(tables, monkeypatch, engine):
    """The store's read of one of a tenant's segments raises while a new CDR id is checked
    against them: the batch fails (the worker would end), and what the step read of the
    other segments is not kept as the tenant's segment ids. Once the store answers again,
    a repeat of an id of the segment that failed is a duplicate: with the partial set
    kept, it would have been rated a second time."""
    monkeypatch.setattr(idsegments, "SEGMENT_AT", 4)  # both stores read it when made
    tenant = "busy"
    p = partition_for(tenant.encode(), PARTITIONS)
    start = parse_time("2026-11-20T00:01:00Z")
    raws = _funded(tenant, "2026-11-20T00:00:00Z", "1000000") + [_cdr(tenant, f"k{i}", start + i * 60 * 10**6) for i in range(30)]
    w = Worker(engine, tables, cache_limit=50)
    for i in range(0, len(raws), 5):
        w.batch([Message("cdrs", p, j, tenant.encode(), raws[j]) for j in range(i, min(i + 5, len(raws)))])
    table = w.port.table[p]
    listed = [n for n, _latest in decode_account(table[tenant.encode()]).id_segments]
    assert len(listed) >= 3
    failing = f"busy\x00ids\x00{listed[1]}".encode()
    repeat = table[failing].decode().split("\n")[0]  # an id only that segment holds now
    w.store.forget()  # a rebalance: nothing of the tenant is held, its segments unread
    get = w.port.table_get

    def table_get(partition, key):
        if key == failing:
            raise OSError("the store is gone")
        return get(partition, key)

    w.port.table_get = table_get
    result = w.processor.begin()
    with pytest.raises(OSError, match="the store is gone"):
        w.processor.feed(result, [Message("cdrs", p, 100, tenant.encode(), _cdr(tenant, "new", start + 40 * 60 * 10**6))], NOW)
    w.processor.end(result)
    w.port.table_get = get
    again = w.batch([Message("cdrs", p, 101, tenant.encode(), _cdr(tenant, repeat, start + int(repeat[1:]) * 60 * 10**6))])
    assert again.records == Counter({("cdrs", "duplicate"): 1}) and again.produce == [] and list(again.outputs) == []


def test_a_held_account_carries_a_batch_change_into_the_next_batch(tables):
    """The native step's held account is the value its last batch wrote: the next batch
    charges from there (a cache hit), with no read of the table."""
    w = Worker("native", tables, cache_limit=10)
    p = partition_for(b"t1", PARTITIONS)
    setup = _funded("t1", "2026-11-01T00:00:00Z", "5")
    w.batch([Message("cdrs", p, i, b"t1", r) for i, r in enumerate(setup)])
    assert len(w.store.held) == 1
    w.port.table[p].clear()  # a read would find nothing now
    out = w.batch([Message("cdrs", p, 2, b"t1", _cdr("t1", "k1", parse_time("2026-11-02T10:00:00Z")))])
    (_topic, _partition, key, value, _h), mark = out.accounts
    assert key == b"t1"
    assert decode_account(value).balance == 5_000_000 - 60_000  # one minute at 0.060000
    assert decode_judged(value)[1] == {"cdrs": 2}


def test_held_get_refuses_during_a_batch_and_answers_after_it(tables):
    """Between ``begin`` and ``end_batch`` the held accounts are the engine's: an account
    ``Held.get`` read then would be held nowhere, so it refuses, and answers once the
    batch has ended."""
    w = Worker("native", tables, cache_limit=10)
    p = partition_for(b"t1", PARTITIONS)
    w.batch([Message("cdrs", p, i, b"t1", r) for i, r in enumerate(_funded("t1", "2026-11-01T00:00:00Z", "5"))])
    held, native = w.store.held, w.processor.engine.native
    held.begin(native)
    with pytest.raises(RuntimeError, match="Held.get during a batch"):
        held.get("t1")
    held.end_batch(native)
    assert decode_account(held.get("t1")).balance == 5_000_000


def test_an_account_no_batch_used_for_idle_after_batches_is_held_in_its_stored_form(tables):
    """Held idle (the changelog value, not the decoded account) once two batches did not
    use it, then decoded again by the batch that does: it charges from the value the last
    batch wrote, with no read of the table."""
    w = Worker("native", tables, cache_limit=10, idle_after=2)
    p = partition_for(b"t1", PARTITIONS)
    setup = _funded("t1", "2026-11-01T00:00:00Z", "5")
    other = partition_for(b"t2", PARTITIONS)
    w.batch([Message("cdrs", p, i, b"t1", r) for i, r in enumerate(setup)])  # batch 1: t1 used
    assert (len(w.store.held), w.store.held.idle_len()) == (1, 0)
    t2 = orjson.dumps({**orjson.loads(setup[0]), "tenant_id": "t2"})
    w.batch([Message("cdrs", other, 0, b"t2", t2)])  # batch 2: the check runs, t1 used 1 batch ago
    assert w.store.held.idle_len() == 0
    w.batch([])  # 3
    w.batch([])  # 4: t1 unused since batch 1, t2 since 2: both idle
    assert (len(w.store.held), w.store.held.idle_len()) == (2, 2)
    assert w.store.load("t1").balance == 5_000_000  # the sweep's read: the stored form
    w.port.table[p].clear()  # a read would find nothing now
    out = w.batch([Message("cdrs", p, 2, b"t1", _cdr("t1", "k1", parse_time("2026-11-02T10:00:00Z")))])
    (_topic, _partition, key, value, _h), _mark = out.accounts
    assert key == b"t1"
    assert decode_account(value).balance == 5_000_000 - 60_000  # one minute at 0.060000
    assert (len(w.store.held), w.store.held.idle_len()) == (2, 1)
    w.store.clear_cache()
    assert len(w.store.held) == 0


def _both(tables, msgs, **kw):
    workers = [Worker(e, tables, cache_limit=10) for e in ("python", "native")]
    for w in workers:
        for name, value in kw.items():
            setattr(w.processor, name, value)
    py, nat = (w.batch(msgs) for w in workers)
    assert _writes(nat) == _writes(py)
    return nat


_SETUP = [
    orjson.dumps(
        {
            "command_id": "c",
            "tenant_id": "t1",
            "command": "configure_account",
            "occurred_at": "2026-11-01T00:00:00Z",
            "rate_plan": "test-usd",
        }
    ),
    orjson.dumps({"command_id": "f", "tenant_id": "t1", "command": "add_funds", "occurred_at": "2026-11-01T00:00:00Z", "amount": "5"}),
]


def test_a_tombstone_is_rejected_alike(tables):
    nat = _both(tables, [Message("cdrs", partition_for(b"t1", PARTITIONS), 1, b"t1", None)])
    assert [t for t, *_ in nat.outputs] == ["rater-rejects"] and nat.accounts[:-1] == []


def test_an_output_over_the_size_bound_is_replaced_by_the_same_reject(tables):
    """A rated CDR larger than max_output_bytes (its attributes) becomes the reject of
    its input, on both engines, and the call is still charged."""
    p = partition_for(b"t1", PARTITIONS)
    big = orjson.dumps({**orjson.loads(_cdr("t1", "c1", parse_time("2026-11-10T00:00:00Z"))), "note": "z" * 3_000})
    msgs = [Message("cdrs", p, i, b"t1", r) for i, r in enumerate(_SETUP + [big])]
    nat = _both(tables, msgs, max_output_bytes=2_000)
    assert [t for t, *_ in nat.outputs] == ["balance-events", "rater-rejects"]  # funds_added, the rated CDR's reject
    assert decode_account(nat.accounts[0][3]).balance == 5_000_000 - 60_000  # charged: a minute at 0.060000


def test_records_judged_before_are_skipped_alike(tables):
    """The worker's replay skip (rater/core/applied.py): both batch steps skip the same records."""
    p = partition_for(b"t1", PARTITIONS)
    call = _cdr("t1", "c1", parse_time("2026-11-10T00:00:00Z"))
    msgs = [Message("cdrs", p, i, b"t1", r) for i, r in enumerate(_SETUP + [call])]
    nat = _both(tables, msgs, judged=lambda msg, key: msg.offset <= 1)
    # The setup was skipped: no account, so the call is rejected (unknown tenant).
    assert nat.records == Counter({("cdrs", "rejected"): 1})
    assert [t for t, *_ in nat.outputs] == ["rater-rejects"]


def _command(tenant: str, command_id: str, command: str, **fields) -> bytes:
    at = "2026-11-01T00:00:00Z"
    return orjson.dumps({"command_id": command_id, "tenant_id": tenant, "command": command, "occurred_at": at, **fields})


class _Said(Judged):
    """The worker's replay check, noting the records it said were judged before."""

    __slots__ = ("said",)

    def __init__(self, guard, accounts):
        super().__init__(guard, accounts)
        self.said: list[tuple[str, int, int]] = []

    def __call__(self, msg, key):
        judged = super().__call__(msg, key)
        if judged:
            self.said.append((msg.topic, msg.partition, msg.offset))
        return judged


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_the_replay_check_of_a_real_guard_skips_alike(tables, chunk):
    """Step 1c on both batch steps with a real ``ReplayGuard``: the accounts written by a
    batch (their ``"in"`` offsets), then a replay over suspect spans with the store's reads
    noting them (``note_judged``), fed ``chunk`` records at a time. The native step runs
    the check inside ``Held.feed`` (never record by record) and gives exactly the Python
    step's outputs, forwards, counts, ``skipped``, noted offsets and account writes: at
    and inside the span ends (only the span's last offset bounds it, as
    ``judged_before`` does), at the judged offset and past it, keyless records homed by
    their tenant_id, a tombstone, keys that are not tenant ids (invalid UTF-8, non-ASCII,
    too long, a space), a tenant without an account, one whose stored offsets were not
    noted, records on the wrong partition inside a span (forwarded, never skipped)."""
    a, b, c, d, e = "t1", "t2", "t4", "t6", "t5"
    pa, pb, pc, pd = (partition_for(t.encode(), PARTITIONS) for t in (a, b, c, d))
    assert len({pa, pb, pc, pd}) == 4 and partition_for(e.encode(), PARTITIONS) == pc
    at = parse_time("2026-11-10T00:00:00Z")
    funds = {"amount": "5"}
    setup = [
        Message("tenant-commands", pa, 0, a.encode(), _command(a, "c", "configure_account", rate_plan="test-usd")),
        Message("tenant-commands", pa, 1, a.encode(), _command(a, "f", "add_funds", **funds)),
        Message("tenant-commands", pb, 0, b.encode(), _command(b, "c", "configure_account", rate_plan="test-usd")),
        Message("tenant-commands", pb, 1, b.encode(), _command(b, "f", "add_funds", **funds)),
        Message("cdrs", pc, 0, c.encode(), _command(c, "c", "configure_account", rate_plan="test-usd")),
        Message("cdrs", pc, 1, c.encode(), _command(c, "f", "add_funds", **funds)),
        Message("cdrs", pd, 0, d.encode(), _command(d, "c", "configure_account", rate_plan="test-usd")),
        Message("cdrs", pd, 1, d.encode(), _command(d, "f", "add_funds", **funds)),
    ]
    setup += [Message("cdrs", pa, i, a.encode(), _cdr(a, f"s{i}", at)) for i in range(10)]
    setup += [Message("cdrs", pb, i, b.encode(), _cdr(b, f"s{i}", at)) for i in range(10)]

    def call(topic, partition, offset, key, tenant=None, value=None):
        raw = value if value is not None or tenant is None else _cdr(tenant, f"r{partition}-{offset}", at + offset)
        return Message(topic, partition, offset, key, raw)

    replay = [
        # a's partition: suspect 5..14, its account judged through cdrs 9.
        call("cdrs", pa, 5, a.encode(), a),  # the span's first offset: skipped
        call("cdrs", pa, 6, None, a),  # keyless, homed by its tenant_id: skipped
        Message("cdrs", pa, 7, a.encode(), None),  # a tombstone: skipped
        call("cdrs", pa, 8, None, value=b"not json"),  # homes nothing: rejected where it is
        call("cdrs", pa, 9, a.encode(), a),  # at the judged offset: skipped
        call("cdrs", pa, 10, a.encode(), a),  # past it: rated
        call("cdrs", pa, 11, None, a),  # keyless, past it: rated
        call("cdrs", pa, 12, b.encode(), b),  # the wrong partition (by key) inside a span: forwarded
        call("cdrs", pa, 13, None, b),  # the wrong partition (by tenant_id): forwarded
        # b's partition: suspect 2..7, its account judged through cdrs 9.
        call("cdrs", pb, 1, b.encode(), b),  # before the span's first offset: skipped (only its last bounds it)
        call("cdrs", pb, 2, b.encode(), b),  # skipped
        call("cdrs", pb, 3, b"bad key", b),  # a key that is no tenant id: judged again
        call("cdrs", pb, 4, b"x" * 65, b),  # too long for a tenant id
        call("cdrs", pb, 5, a.encode(), a),  # the wrong partition: forwarded
        call("cdrs", pb, 6, b.encode(), a),  # the key names b (judged through 9): skipped
        call("cdrs", pb, 7, b.encode(), b),  # the span's last offset: skipped
        call("cdrs", pb, 8, b.encode(), b),  # past the span (judged through 9 all the same): rated
        call("cdrs", pb, 9, None, b),  # keyless, past the span: rated
        # c's partition: suspect from 5 on (no end said), c's offsets (cdrs 1) not noted.
        call("cdrs", pc, 6, c.encode(), c),
        call("cdrs", pc, 7, b"t1!", a),
        call("cdrs", pc, 8, b"t1\xff", a),
        call("cdrs", pc, 9, "caf\u00e9".encode(), a),
        call("cdrs", pc, 10, e.encode(), e),  # no account
        # d's partition: not suspect.
        call("cdrs", pd, 3, d.encode(), d),
        # a's commands: suspect 0..0, judged through 1.
        Message("tenant-commands", pa, 0, a.encode(), _command(a, "c2", "configure_account", rate_plan="test-usd")),  # skipped
        Message("tenant-commands", pa, 1, a.encode(), _command(a, "f2", "add_funds", **funds)),  # past the span: applied
    ]
    assert all(partition_for(k, PARTITIONS) == pb for k in (b"bad key", b"x" * 65))
    assert all(partition_for(k, PARTITIONS) == pc for k in (b"t1!", b"t1\xff", "caf\u00e9".encode()))
    results, guards, writes, checks = [], [], [], []
    for engine in ("python", "native"):
        w = Worker(engine, tables, cache_limit=10)
        w.batch(setup)
        w.store.forget()  # a new worker: every account read from the table
        guard = w.pipeline.replay
        assert guard.resume_at(("cdrs", pa), 5, None, 15) == 5
        guard.resume_at(("cdrs", pb), 2, None, 8)
        guard.resume_at(("cdrs", pc), 5, None, None)
        guard.resume_at(("tenant-commands", pa), 0, None, 1)
        guard.resume_at(("cdrs", pd), 4, 3, 4)  # past the end: not suspect
        # As ``CommitPipeline.handle_batch`` wires them.
        w.store.note_judged = guard.note_judged
        w.processor.judged = (_Said if engine == "python" else Judged)(guard, w.processor.engine.accounts)
        checks.append(w.processor.judged)
        if engine == "native":
            w.processor._feed_each = None  # the check runs in the native call, never record by record
        result = _result(w, replay, chunk)
        positions = {}
        for m in replay:
            positions[(m.topic, m.partition)] = max(m.offset, positions.get((m.topic, m.partition), -1))
        writes.append(_writes(w.pipeline.plan(result, positions)))
        results.append(result)
        guards.append(guard)
    py, nat = results
    assert list(nat.outputs) == py.outputs
    assert [(m.offset, p, k) for m, p, k in nat.forwards] == [(m.offset, p, k) for m, p, k in py.forwards]
    assert [(m.topic, m.partition, m.offset) for m in nat.origins] == [(m.topic, m.partition, m.offset) for m in py.origins]
    assert list(nat.records.items()) == list(py.records.items())
    assert writes[1] == writes[0]
    assert guards[1].suspect == guards[0].suspect and guards[1].judged_in == guards[0].judged_in
    # c's stored offsets are before its span: not noted; d's (read to rate its call) are,
    # its partition not being suspect (harmless: no record of d is checked).
    assert set(guards[0].judged_in) == {a, b, d}
    skipped = [("cdrs", pa, 5), ("cdrs", pa, 6), ("cdrs", pa, 7), ("cdrs", pa, 9)]
    skipped += [("cdrs", pb, 1), ("cdrs", pb, 2), ("cdrs", pb, 6), ("cdrs", pb, 7), ("tenant-commands", pa, 0)]
    assert py.skipped == nat.skipped == len(skipped)
    assert checks[0].said == skipped  # the Python step's check said so of exactly these, in order
    # The known cases, on the native step's own outputs.
    origins = {(m.topic, m.partition, m.offset) for m in nat.origins}
    assert not origins & set(skipped)
    assert {("cdrs", pa, 10), ("cdrs", pa, 11), ("cdrs", pb, 8), ("cdrs", pb, 9), ("cdrs", pc, 6)} <= origins
    assert [m.offset for m, _p, _k in nat.forwards if m.partition == pa] == [12, 13]
    assert [m.offset for m, _p, _k in nat.forwards if m.partition == pb] == [5]
    counted = sum(nat.records.values())
    assert counted + nat.skipped == len(replay)


_EDGE_KEYS = [
    b"a",
    b"a" * 64,
    b"a" * 65,
    b"A-Z_a.z:0-9",
    b"-",
    b"t 1",
    b"t1\n",
    b"t1/x",
    b"t1\x00",
    b"t1+",
    "t1\u00e9".encode(),
    "\u0661".encode(),  # ARABIC-INDIC DIGIT ONE
    "\u212a".encode(),  # KELVIN SIGN
    "\uff21".encode(),  # FULLWIDTH A
    b"t1\xff",  # not UTF-8: read with a replacement character
    b"\xed\xa0\x80",  # a surrogate
]


@pytest.mark.parametrize("key", _EDGE_KEYS)
def test_the_replay_check_takes_a_key_for_a_tenant_id_as_tenant_re_does(tables, key):
    """The native check's tenant-id test (native/src/records.rs ``is_tenant``) against
    ``TENANT_RE``: an account value judged through offset 100 is stored under ``key``, so
    a record under ``key`` inside a suspect span is skipped exactly when the key is read
    as a tenant id, on both steps."""
    p = partition_for(key, PARTITIONS)
    pb = partition_for(b"t2", PARTITIONS)
    setup = [
        Message("cdrs", pb, 0, b"t2", _command("t2", "c", "configure_account", rate_plan="test-usd")),
        Message("cdrs", pb, 1, b"t2", _command("t2", "f", "add_funds", amount="5")),
    ]
    record = Message("cdrs", p, 5, key, _cdr("t2", "k", parse_time("2026-11-10T00:00:00Z")))
    results = []
    for engine in ("python", "native"):
        w = Worker(engine, tables, cache_limit=10)
        w.batch(setup)
        w.store.forget()
        w.port.table[p][key] = encode_account(decode_account(w.port.table[pb][b"t2"]), {"cdrs": 100})
        guard = w.pipeline.replay
        guard.resume_at(("cdrs", p), 0, None, 10)
        w.store.note_judged = guard.note_judged
        w.processor.judged = Judged(guard, w.processor.engine.accounts)
        results.append(_result(w, [record], 1))
    py, nat = results
    assert list(nat.outputs) == py.outputs and list(nat.records.items()) == list(py.records.items())
    assert nat.skipped == py.skipped == (1 if TENANT_RE.fullmatch(key.decode("utf-8", "replace")) else 0)


def test_the_sweep_expires_a_held_account_alike(tables):
    """Funds bought 2025-11-05 expire 12 months later: the sweep (its clock 2026-12-10)
    writes the account without them on both stores, from the native store's held account."""
    p = partition_for(b"t1", PARTITIONS)
    setup = [
        _SETUP[0],
        orjson.dumps(
            {
                "command_id": "f",
                "tenant_id": "t1",
                "command": "add_funds",
                "occurred_at": "2026-11-01T00:00:00Z",
                "amount": "5",
                "purchased_at": "2025-11-05T00:00:00Z",
            }
        ),
    ]
    workers = [Worker(e, tables, cache_limit=10) for e in ("python", "native")]
    for w in workers:
        w.batch([Message("cdrs", p, i, b"t1", r) for i, r in enumerate(setup)])
    assert len(workers[1].store.held) == 1
    # The lot bought 2025-11-05 is due first (its expiry, 12 months on); the balance is
    # 5 against no threshold: ok.
    expiry = parse_time("2026-11-05T00:00:00Z")
    for w in workers:
        assert _index(w) == ({"t1": expiry}, {"t1": "ok"}, ["t1"])
        assert w.store.index.due_by(expiry - 1) == []
        assert w.store.index.state_counts() == {"ok": 1, "low": 0, "negative": 0}
    py, nat = (w.sweep() for w in workers)
    assert nat == py
    ((_topic, _partition, key, value, _h),) = nat
    assert key == b"t1" and decode_account(value).lots == [] and decode_account(value).balance == 0
    assert _index(workers[1]) == _index(workers[0]) == ({}, {"t1": "ok"}, [])


@pytest.mark.parametrize("account_format", [1, 2])
def test_the_rescan_after_a_rebalance_rebuilds_the_same_index_on_both_stores(tables, account_format):
    """``Sweeper._rescan`` reads every account of the partitions gained from the table (the
    native store decodes them natively): the index it rebuilds is the one the batches noted,
    on both stores, from values in either format."""
    raws = []
    for t, amount in (("t1", "5"), ("t2", "0.01"), ("t3", "0")):
        raws += _funded(t, "2026-11-01T00:00:00Z", amount)
    raws += [_cdr("t2", "k1", parse_time("2026-11-02T10:00:00Z"))]  # t2 below zero
    msgs = [Message("cdrs", partition_for(orjson.loads(r)["tenant_id"].encode(), PARTITIONS), i, None, r) for i, r in enumerate(raws)]
    for engine in ("python", "native"):
        w = Worker(engine, tables, cache_limit=10, account_format=account_format)
        w.batch(msgs)
        noted = _index(w)
        # t1's lot expires 12 months after it was bought; t2's is spent (a lot at 0 goes),
        # its balance below zero; t3 has no lot.
        expiry = parse_time("2027-11-01T00:00:00Z")
        assert noted == ({"t1": expiry}, {"t1": "ok", "t2": "negative", "t3": "ok"}, []), engine
        w.store.index.clear()
        assert _index(w) == ({}, {}, [])
        w.sweeper._rescan(set(range(PARTITIONS)))
        assert _index(w) == noted, engine


def _result(w, msgs, chunk: int):
    """The batch step's ``BatchResult`` over ``msgs``, fed ``chunk`` messages at a time
    (the worker feeds YIELD_EVERY at a time)."""
    p = w.processor
    result = p.begin()
    for start in range(0, len(msgs), chunk):
        p.feed(result, msgs[start : start + chunk], NOW)
    return p.end(result)


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_a_whole_fetch_fed_natively_gives_the_python_steps_result(tables, chunk):
    """``NativeBatchProcessor.feed`` in one native call per chunk (``Held.feed``) against
    the Python step, exactly: records on the wrong partition (keyed, keyless, with an
    empty key) forwarded with the same key, keyless records homed by their tenant_id (a
    value too large or not an object naming one rejected where it is), keys that are not
    UTF-8, an output over the size bound replaced by its reject; the same outputs, the
    same input object as each output's origin, the same counts in the same order."""
    home = partition_for(b"t1", PARTITIONS)
    away = (home + 1) % PARTITIONS
    at = parse_time("2026-11-10T00:00:00Z")
    big = orjson.dumps({**orjson.loads(_cdr("t1", "big", at)), "note": "z" * 3_000})
    too_large = b'{"tenant_id":"t1","pad":"' + b"x" * (512 * 1024) + b'"}'
    bad_keys = [b"t1\xff", b"\xed\xa0\x80", b"\xc3(", b"t\xe2\x82"]
    specs = [
        ("tenant-commands", home, b"t1", _SETUP[0]),
        ("tenant-commands", home, b"t1", _SETUP[1]),
        ("cdrs", home, b"t1", _cdr("t1", "c1", at)),
        ("cdrs", away, b"t1", _cdr("t1", "c2", at)),  # forwarded by its key
        ("cdrs", home, None, _cdr("t1", "c3", at)),  # homed by its tenant_id
        ("cdrs", away, None, _cdr("t1", "c4", at)),  # forwarded, keyed by its tenant_id
        ("cdrs", away, b"", _cdr("t1", "c5", at)),  # an empty key is no key
        ("cdrs", home, b"", _cdr("t1", "c6", at)),
        ("cdrs", away, None, too_large),  # never decoded: rejected where it is
        ("cdrs", away, None, b'["tenant_id", "t1"]'),
        ("cdrs", away, None, b'{"tenant_id": 7}'),
        ("cdrs", away, None, b'{"tenant_id": ""}'),
        ("cdrs", away, None, b'{"tenant_id": "t1"'),
        ("cdrs", away, None, b"not json"),
        ("cdrs", away, None, b""),
        ("cdrs", away, None, None),
        ("cdrs", home, b"t1", None),  # a tombstone
        ("cdrs", home, b"t1", big),  # its rated CDR over the bound: the reject instead
        ("cdrs", home, b"t1", _cdr("t1", "c1", at)),  # a duplicate
        ("cdrs", partition_for(b"t2", PARTITIONS), b"t2", _cdr("t1", "c7", at)),  # the key names another tenant
        ("tenant-commands", home, None, orjson.dumps({"command_id": "x", "tenant_id": "t1", "command": "nope"})),
    ]
    specs += [("cdrs", partition_for(k, PARTITIONS), k, _cdr("t1", f"u{i}", at)) for i, k in enumerate(bad_keys)]
    t1e, caf = "t1\u00e9".encode(), "caf\u00e9".encode()
    specs += [
        ("cdrs", partition_for(t1e, PARTITIONS) ^ 1, None, _cdr("t1\u00e9", "c8", at)),  # forwarded, a non-ASCII tenant
        ("cdrs", partition_for(caf, PARTITIONS), caf, _cdr("t1", "c9", at)),
    ]
    msgs = [Message(topic, p, i, key, value) for i, (topic, p, key, value) in enumerate(specs)]
    results = []
    for engine in ("python", "native"):
        w = Worker(engine, tables, cache_limit=10)
        w.processor.max_output_bytes = 2_000
        results.append(_result(w, msgs, chunk))
    py, nat = results
    assert list(nat.outputs) == py.outputs
    assert [(m.offset, p, k) for m, p, k in nat.forwards] == [(m.offset, p, k) for m, p, k in py.forwards]
    assert all(m is msgs[m.offset] for m, _p, _k in nat.forwards)
    assert [m.offset for m in nat.origins] == [m.offset for m in py.origins]
    assert all(m is msgs[m.offset] for m in nat.origins)
    assert list(nat.records.items()) == list(py.records.items())
    assert nat.skipped == py.skipped == 0
    # What the inputs were for: each case reached.
    forwarded = [(3, home, b"t1"), (5, home, b"t1"), (6, home, b"t1"), (25, partition_for(t1e, PARTITIONS), t1e)]
    assert [(m.offset, p, k) for m, p, k in py.forwards] == forwarded
    assert py.records[("cdrs", "applied")] == 3 and py.records[("cdrs", "forwarded")] == len(forwarded)
    rated = [(m.offset, k) for m, (t, k, _v) in zip(py.origins, py.outputs) if t == "rated-cdrs"]
    assert rated == [(2, b"t1"), (4, b"t1")]  # the keyless c3 keyed by its tenant
    (refused,) = [v for m, (_t, _k, v) in zip(py.origins, py.outputs) if m.offset == 17]
    assert b"output too large" in refused
    assert {k for _t, k, _v in py.outputs} >= {b"t1", None, b"", b"t2", caf, *bad_keys}


def test_keyless_values_at_the_edges_of_json_are_homed_alike(tables):
    """A record without a key is homed by its ``tenant_id`` as ``orjson.loads`` reads it:
    the native probe (native/src/feed.rs) forwards, or rates where it is, the same
    records, on every partition."""
    deep = [b'{"tenant_id":"t1","a":' + b"[" * n + b"]" * n + b"}" for n in (1023, 1024)]
    values = [
        b'{"tenant_id":"\\ud800"}',
        b'{"tenant_id":"\\ud800\\udc00"}',
        b'{"tenant_id":"\\u0074\\u0031"}',
        b'{"tenant_id":"a\\u0000"}',
        b'\xef\xbb\xbf{"tenant_id":"t1"}',
        b'{"tenant_id":"t1","n":123456789012345678901234567890}',
        b'{"tenant_id":"t1","n":NaN}',
        b'{"tenant_id":"t1",}',
        b' {"tenant_id" : "t1"}\n',
        b'{"tenant_id":"t\xff1"}',
        b'{"tenant_id":"t\xed\xa0\x801"}',
        b'{"tenant_id":"t1","tenant_id":null}',
        b'{"tenant_id":"t1","x":01}',
        b'{"tenant_id":"t1","x":"\t"}',
        b'[{"tenant_id":"t1"}]',
    ]
    msgs = []
    for v in values + deep:
        for p in range(PARTITIONS):
            msgs.append(Message("cdrs", p, len(msgs), None, v))
    py, nat = (_result(Worker(e, tables, cache_limit=10), msgs, 100) for e in ("python", "native"))
    assert list(nat.outputs) == py.outputs
    assert [(m.offset, p, k) for m, p, k in nat.forwards] == [(m.offset, p, k) for m, p, k in py.forwards]
    assert list(nat.records.items()) == list(py.records.items())
    assert py.forwards and py.records[("cdrs", "rejected")]


def test_an_error_reading_an_account_leaves_the_records_before_it_alike(tables):
    """The store's read raises at the third tenant's account: both steps raise it, with
    the records before it forwarded, rated (an output over the bound replaced) and
    counted alike."""
    at = parse_time("2026-11-10T00:00:00Z")
    big = orjson.dumps({**orjson.loads(_cdr("t1", "big", at)), "note": "z" * 3_000})
    home = partition_for(b"t1", PARTITIONS)
    msgs = [Message("cdrs", home, i, b"t1", r) for i, r in enumerate(_SETUP + [big])]
    msgs.append(Message("cdrs", (home + 1) % PARTITIONS, 3, b"t1", _cdr("t1", "c2", at)))
    msgs.append(Message("cdrs", partition_for(b"t9", PARTITIONS), 4, b"t9", _cdr("t9", "c3", at)))
    msgs.append(Message("cdrs", home, 5, b"t1", _cdr("t1", "c4", at)))
    results = []
    for engine in ("python", "native"):
        w = Worker(engine, tables, cache_limit=10)
        w.processor.max_output_bytes = 2_000
        get = w.port.table_get

        def table_get(partition, key, get=get):
            if key == b"t9":
                raise OSError("the store is gone")
            return get(partition, key)

        w.port.table_get = table_get
        result = w.processor.begin()
        with pytest.raises(OSError, match="the store is gone"):
            w.processor.feed(result, msgs, NOW)
        results.append(result)
    py, nat = results
    assert list(nat.outputs) == py.outputs and len(py.outputs) == 2  # funds_added, the reject standing for big's rated CDR
    assert b"output too large" in py.outputs[-1][2]
    assert [m.offset for m in nat.origins] == [m.offset for m in py.origins]
    assert [(m.offset, p, k) for m, p, k in nat.forwards] == [(m.offset, p, k) for m, p, k in py.forwards] == [(3, home, b"t1")]
    assert list(nat.records.items()) == list(py.records.items())


def _as_fetched(msgs: list[Message]) -> list:
    """Each message as the worker's consumer hands it: a ``rater_native.Record`` read from
    a Kafka record batch of its own (``rater_native.read_fetch``), same topic, partition,
    offset, key and value."""
    import rater_native

    out = []
    for m in msgs:
        batch = v2_batch(m.offset, [(1_700_000_000_000, m.key, m.value, [])])
        [(*_header, records)] = rater_native.read_fetch(batch, m.topic, m.partition, True)
        out += records
    return out


@DIFF
@given(stream=streams, batch=st.integers(1, 30), wrong_every=st.sampled_from([0, 7]))
def test_records_read_from_fetched_bytes_give_the_same_writes_as_messages(tables, stream, batch, wrong_every):
    """``Held.feed`` reads a native ``Record`` (its value in the fetched bytes) as it reads
    any message by attribute: the same writes, batch by batch, forwards and rejects
    included."""
    msgs = _messages(stream, wrong_every)
    fetched = _as_fetched(msgs)
    assert [(r.topic, r.partition, r.offset, r.key, r.value) for r in fetched] == [
        (m.topic, m.partition, m.offset, m.key, m.value) for m in msgs
    ]
    workers = [Worker("native", tables, 100, None) for _ in range(2)]
    for start in range(0, len(msgs), batch):
        assert _writes(workers[1].batch(fetched[start : start + batch])) == _writes(workers[0].batch(msgs[start : start + batch]))
    assert workers[1].port.table == workers[0].port.table


def _as_runs(msgs: list[Message]) -> list:
    """The messages as a fetch hands them to the worker: grouped by topic and partition (in
    the order first met), each group one Kafka record batch read by
    ``rater_native.read_fetch`` into one ``rater_native.Records``; offsets from the group's
    first message's on, one after the other."""
    import rater_native

    groups: dict[tuple[str, int], list[Message]] = {}
    for m in msgs:
        groups.setdefault((m.topic, m.partition), []).append(m)
    runs = []
    for (topic, partition), group in groups.items():
        batch = v2_batch(group[0].offset, [(1_700_000_000_000 + i, m.key, m.value, []) for i, m in enumerate(group)])
        [(*_header, records)] = rater_native.read_fetch(batch, topic, partition, True)
        runs.append(records)
    return runs


@DIFF
@given(stream=streams, batch=st.integers(1, 30), cut=st.integers(1, 7), wrong_every=st.sampled_from([0, 7]))
def test_runs_of_a_fetch_give_the_same_writes_as_their_records_one_by_one(tables, stream, batch, cut, wrong_every):
    """``Held.feed`` reads a ``rater_native.Records`` (a run of a fetch, no Python object
    per record) as it reads the same records one ``Record`` at a time: the same outputs,
    origins, forwards, counts and accounts, also fed in slices (as the pipeline feeds
    ``YIELD_EVERY`` records at a time)."""
    import rater_native

    msgs = _messages(stream, wrong_every)
    workers = [Worker("native", tables, 100, None) for _ in range(2)]
    for start in range(0, len(msgs), batch):
        runs = _as_runs(msgs[start : start + batch])
        assert all(type(run) is rater_native.Records for run in runs)
        records = [r for run in runs for r in run]
        assert [type(r).__name__ for r in records] == ["Record"] * len(records)
        by_run = workers[1].batch_runs([run[i : i + cut] for run in runs for i in range(0, len(run), cut)])
        one_by_one = workers[0].batch(records)
        assert _writes(by_run) == _writes(one_by_one)
        assert type(by_run.origins) is rater_native.Origins
    assert workers[1].port.table == workers[0].port.table
