"""The kill loop (issue: crash safety): a stream rated by a worker that is SIGKILLed and
restarted at random moments, compared with ``rater rate`` on the same input.

    python -m tests.support.chaos --records 200000 --tenants 1000 --kills 10      # make chaos
    (tests/worker/test_chaos.py runs a small size of it in CI)

With ``--new-disk P``, each restart after a kill is, with chance P, on an empty state dir
(a worker moved to a new disk): the accounts come back from the changelog, read in bulk
(``rater/worker/catchup.py``), and a kill during that start leaves a store read only
part of the way, which the next start (on it, or on another empty one) goes on from.

The stream (``generate``) holds, besides CDRs, commands, auto-recharge answers, platform
retries and bad records, records whose outcome depends on state that later records change
(issue 12, with ``depends=True``, as the kill loop runs it): tenants whose account is
created mid-stream, after calls of theirs (``unknown_tenant``); tenants whose rate plan
changes back and forth mid-stream between ``standard-usd`` and a narrow plan without
India and Germany (``no_rate``, ``chaos-narrow-usd``, written into the work dir's rate
tables); and payment answers that may come before their request (``unknown_request``).
A replay that judged any of them again against the newer state would differ.

What it checks, after the stream is fully consumed:
- every tenant's account (``GET /tenants/<id>``) equals ``balances.json`` of the offline
  run, to the micro-unit;
- every rated CDR, balance event and recharge request of the offline run was written at
  least once; nothing else was written; rejects match on reason, detail and raw bytes;
- every ``event_id`` written more than once (rated CDRs, balance events, recharge
  requests and rejects alike) carries byte-identical content each time.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from tests.support.worker import WorkerProcess, WorkerTopics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RATER = [sys.executable, "-m", "rater"]
OUTPUTS = {"rated": "rated-cdrs.jsonl", "events": "balance-events.jsonl", "requests": "recharge-requests.jsonl"}


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


NARROW_PLAN = "chaos-narrow-usd"
# A USD plan without India (+91) and Germany (+49): the calls of ``generate``'s numbers
# there are ``no_rate`` while a tenant is on it.
NARROW_CSV = """call_type,prefix,destination,currency,rate_per_minute,connection_fee,first_increment,next_increment
international,44,United Kingdom,USD,0.0500,0,60,60
conference_dialout,1,United States / Canada,USD,0.0150,0,60,60
toll_free,1800,United States toll free,USD,0.0200,0,60,60
domestic,1,United States,USD,0.0100,0,60,60
"""


def rate_tables(work: str) -> str:
    """The project's rate tables and the narrow plan, in ``work``/rates."""
    out = os.path.join(work, "rates")
    os.makedirs(out, exist_ok=True)
    for path in glob.glob(os.path.join(ROOT, "rate_tables", "*.csv")):
        shutil.copy(path, out)
    with open(os.path.join(out, f"{NARROW_PLAN}.csv"), "w") as f:
        f.write(NARROW_CSV)
    return out


def generate(path: str, records: int, tenants: int, seed: int, depends: bool = False) -> None:
    """Setup commands, then CDRs with auto-recharge answers and a few bad records, with
    event times in the last day (so nothing is too far ahead of any processing clock).

    ``depends``: also records whose outcome depends on later records (see the module
    docstring); the rate tables must then include ``NARROW_PLAN`` (``rate_tables``).
    One tenant in ten (index 1 mod 10) is created mid-stream; one in ten (3 mod 10)
    switches plans."""
    rng = random.Random(seed)
    base = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=26)
    numbers = [
        ("international", "+442071234567"),
        ("international", "+4915112345678"),
        ("conference_dialout", "+12125550100"),
        ("toll_free", "+18005550100"),
        ("domestic", "+14155550123"),
        ("international", "+919876543210"),
    ]
    names = [f"c{i:05d}" for i in range(tenants)]
    requests = Counter()
    late = {t: rng.randrange(0, max(records // 2, 1)) for i, t in enumerate(names) if depends and i % 10 == 1}
    on_narrow: dict[str, bool] = {}
    n = 0
    with open(path, "wb") as f:

        def put(rec) -> None:
            nonlocal n
            f.write((rec if isinstance(rec, bytes) else orjson.dumps(rec)) + b"\n")
            n += 1

        def setup(i: int, t: str, at: datetime) -> None:
            cfg = {
                "command_id": f"{t}-setup",
                "tenant_id": t,
                "command": "configure_account",
                "occurred_at": _iso(at),
                "rate_plan": "standard-usd",
                "low_balance_threshold": "10",
                "included_domestic_minutes": 30,
            }
            if i % 2 == 0:
                cfg["auto_recharge"] = {
                    "enabled": True,
                    "threshold": "5",
                    "amount": "20",
                    "payment_method": {"type": "card", "expires": "2030-12"},
                }
            put(cfg)
            put(
                {
                    "command_id": f"{t}-funds",
                    "tenant_id": t,
                    "command": "add_funds",
                    "occurred_at": _iso(at),
                    "amount": str(rng.choice([5, 15, 30])),
                }
            )

        for i, t in enumerate(names):
            if t not in late:
                setup(i, t, base)
        step = timedelta(hours=24) / max(records, 1)
        i = 0
        while n < records:
            at = base + timedelta(minutes=1) + step * i
            for t in [t for t, when in late.items() if when <= i]:  # accounts created mid-stream
                del late[t]
                setup(int(t[1:]), t, at)
            i += 1
            t = rng.choice(names)
            roll = rng.random()
            if depends and roll < 0.1 and int(t[1:]) % 10 == 3:  # a plan change mid-stream
                on_narrow[t] = not on_narrow.get(t, False)
                put(
                    {
                        "command_id": f"{t}-plan-{i}",
                        "tenant_id": t,
                        "command": "configure_account",
                        "occurred_at": _iso(at),
                        "rate_plan": NARROW_PLAN if on_narrow[t] else "standard-usd",
                    }
                )
            elif roll < 0.002:
                put(b'{"cdr_id": "broken", ')
            elif roll < 0.004:
                put(
                    {
                        "cdr_id": f"x{i}",
                        "tenant_id": "nobody",
                        "call_type": "international",
                        "to": "+442071234567",
                        "started_at": _iso(at),
                        "duration_seconds": 60,
                    }
                )
            elif roll < 0.03 and int(t[1:]) % 2 == 0:
                requests[t] += 1
                put(
                    {
                        "command_id": f"{t}-pay-{requests[t]}",
                        "tenant_id": t,
                        "command": "payment_result",
                        "occurred_at": _iso(at),
                        "request_id": f"{t}/recharge/{requests[t]}",
                        "status": "succeeded" if rng.random() < 0.85 else "failed",
                        "reason": "card_declined",
                    }
                )
            elif roll < 0.035:
                put({"command_id": f"{t}-top-{i}", "tenant_id": t, "command": "add_funds", "occurred_at": _iso(at), "amount": "10"})
            else:
                call_type, to = rng.choice(numbers)
                rec = {
                    "cdr_id": f"{t}-{i}",
                    "tenant_id": t,
                    "call_type": call_type,
                    "to": to,
                    "started_at": _iso(at),
                    "duration_seconds": int(rng.lognormvariate(5, 1)) % 7200,
                }
                put(rec)
                if rng.random() < 0.01:  # a platform retry: the same CDR again
                    put(rec)


@dataclass
class Report:
    records: int = 0
    kills: int = 0
    restarts: int = 0
    seconds: float = 0.0
    repeats: dict = field(default_factory=dict)  # output kind -> records written more than once
    segments: int = 0  # id segments cut (rater/core/idsegments.py): tenants with >= 2,000 ids did
    rejects: Counter = field(default_factory=Counter)  # reason -> rejects of the offline run
    mismatches: list = field(default_factory=list)
    new_disks: int = 0  # restarts on an empty state dir
    bulk_reads: int = 0  # the worker's bulk reads of the changelog (its log's lines)

    def ok(self) -> bool:
        return not self.mismatches


async def _partitions(consumer, topic: str) -> list:
    from aiokafka import TopicPartition

    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        await consumer._client.force_metadata_update()  # no public way to wait for one topic
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions")


async def _committed_all(bootstrap: str, group: str, topics: list[str]) -> bool:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        tps = [tp for t in topics for tp in await _partitions(consumer, t)]
        ends = await consumer.end_offsets(tps)
        for tp, end in ends.items():
            meta = committed.get(tp)
            if end > 0 and (meta is None or meta.offset < end):
                return False
        return True
    finally:
        await consumer.stop()
        await admin.close()


async def _read_topic(bootstrap: str, topic: str, keys: bool = False) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out: list[bytes] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for tp, msgs in batches.items():
                out.extend((m.key if keys else m.value) for m in msgs)
                if msgs and msgs[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


def _produce(bootstrap: str, path: str, topic: str) -> subprocess.Popen:
    return subprocess.Popen(RATER + ["produce", "--broker", bootstrap, "--topic", topic, path], cwd=ROOT, stderr=subprocess.DEVNULL)


def wait_consumed(bootstrap: str, group: str, topics: list[str], timeout: float = 600) -> bool:
    """Wait until ``group`` has committed the end offset of every partition of ``topics``."""
    deadline = time.monotonic() + timeout
    while not asyncio.run(_committed_all(bootstrap, group, topics)):
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def _topic(topics, kind: str) -> str:
    """A topic name from the kill loop's dict or from tests.support.worker.WorkerTopics."""
    return topics[kind] if isinstance(topics, dict) else getattr(topics, kind)


def _account(worker, tenant: str):
    """``GET /tenants/<id>`` as JSON from a tests.support.worker.WorkerProcess (a Response)."""
    # 503 while a rebalance settles (a killed member's session expiring): ask again.
    deadline = time.monotonic() + 60
    while True:
        try:
            got = worker.get(f"/tenants/{tenant}")
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                # A missing account (404) is a mismatch to report, not a reason to stop.
                return {"status": exc.code, "body": exc.read()[:200].decode(errors="replace")}
            time.sleep(0.5)
            continue
        if getattr(got, "status", 200) == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
            continue
        break
    if hasattr(got, "status") and hasattr(got, "body"):
        return got.json() if got.status == 200 else {"status": got.status, "body": got.body[:200].decode(errors="replace")}
    return got


def compare(bootstrap: str, topics, offline_dir: str, worker, stop=None) -> tuple[list[str], dict]:
    """Compare what the worker did with ``rater rate``'s output in ``offline_dir``.

    ``topics``: the worker's topic names (a dict with keys cdrs, commands, rated, events,
    requests, rejects, or a WorkerTopics). ``worker``: anything with ``get(path)`` that
    answers ``/tenants/<id>`` (any worker of the group: queries are routed to the owner).
    Call it once the input is consumed (``wait_consumed``). ``stop``, if given, is
    called between the accounts and the outputs (the kill loop stops its worker there).

    Returns (mismatches, repeats): a list of differences, empty when the run matches, and
    per output kind how many records were written more than once (same id, and the same
    bytes: a repeat with other bytes is a mismatch, for rejects too).
    """
    mismatches: list[str] = []
    repeats: dict[str, int] = {}
    # Accounts.
    with open(os.path.join(offline_dir, "balances.json"), "rb") as f:
        expected_accounts = orjson.loads(f.read())
    for tenant, expected in expected_accounts.items():
        got = _account(worker, tenant)
        if got != expected:
            mismatches.append(f"account {tenant}: worker {got.get('balance', got.get('status'))} != offline {expected['balance']}")
    if stop is not None:
        stop()
    # Outputs.
    for kind, name in OUTPUTS.items():
        raw = asyncio.run(_read_topic(bootstrap, _topic(topics, kind)))
        seen: dict[str, bytes] = {}
        n_repeats = 0
        for value in raw:
            rec = orjson.loads(value)
            first = seen.setdefault(rec["event_id"], value)
            if first is not value:
                n_repeats += 1
                if first != value:
                    mismatches.append(f"{kind}: event {rec['event_id']} repeated with other content: {first[:300]!r} then {value[:300]!r}")
        repeats[kind] = n_repeats
        expected = {}
        with open(os.path.join(offline_dir, name), "rb") as f:
            for line in f:
                rec = orjson.loads(line)
                expected[rec["event_id"]] = rec
        got = {k: orjson.loads(v) for k, v in seen.items()}
        missing = expected.keys() - got.keys()
        extra = got.keys() - expected.keys()
        if missing:
            mismatches.append(f"{kind}: {len(missing)} of the offline run's records never written")
        if extra:
            mismatches.append(f"{kind}: {len(extra)} records written that the offline run did not write")
        differ = [k for k in expected.keys() & got.keys() if expected[k] != got[k]]
        if differ:
            mismatches.append(f"{kind}: {len(differ)} records differ from the offline run")
    raw = asyncio.run(_read_topic(bootstrap, _topic(topics, "rejects")))
    first_bytes: dict[str, bytes] = {}
    for value in raw:
        event_id = orjson.loads(value)["event_id"]
        first = first_bytes.setdefault(event_id, value)
        if first is not value and first != value:
            mismatches.append(f"rejects: {event_id} repeated with other content: {first[:300]!r} then {value[:300]!r}")
    by_id = {k: orjson.loads(v) for k, v in first_bytes.items()}
    repeats["rejects"] = len(raw) - len(by_id)
    got_rejects = Counter((r["reason"], r["detail"], r["raw"]) for r in by_id.values())
    with open(os.path.join(offline_dir, "rejects.jsonl"), "rb") as f:
        want_rejects = Counter((r["reason"], r["detail"], r["raw"]) for r in map(orjson.loads, f))
    if got_rejects != want_rejects:
        mismatches.append(
            f"rejects differ: {sum((got_rejects - want_rejects).values())} extra, {sum((want_rejects - got_rejects).values())} missing"
        )
    return mismatches, repeats


def run_kill_loop(
    bootstrap: str,
    records: int,
    tenants: int,
    kills: int,
    seed: int = 1,
    workdir: str | None = None,
    partitions: int = 4,
    log=print,
    new_disk: float = 0.0,
    worker_args: tuple[str, ...] = (),
) -> Report:
    started = time.monotonic()
    rng = random.Random(seed)
    work = workdir or tempfile.mkdtemp(prefix="rater-chaos-")
    os.makedirs(work, exist_ok=True)
    app_id = f"chaos-{seed}-{int(time.time())}"
    topics = {
        k: f"{app_id}-{v}"
        for k, v in (
            ("cdrs", "cdrs"),
            ("commands", "cmds"),
            ("rated", "rated"),
            ("events", "events"),
            ("requests", "requests"),
            ("rejects", "rejects"),
        )
    }
    inp = os.path.join(work, "input.jsonl")
    rates = rate_tables(work)
    generate(inp, records, tenants, seed, depends=True)
    report = Report(records=sum(1 for _ in open(inp, "rb")))
    offline_out = os.path.join(work, "offline")
    subprocess.run(RATER + ["rate", "--rates", rates, "--out", offline_out, inp], check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
    with open(os.path.join(offline_out, "rejects.jsonl"), "rb") as f:
        report.rejects = Counter(orjson.loads(line)["reason"] for line in f)
    worker = WorkerProcess(
        bootstrap,
        topics=WorkerTopics(**topics),
        app_id=app_id,
        partitions=partitions,
        state_dir=os.path.join(work, "state"),
        rates_dir=rates,
        name="chaos",
        ready_timeout=90,
        extra_args=["--standby-replicas", "0", "--sweep-interval", "3600", *worker_args],
    )
    worker.log_path = Path(work) / "worker.log"
    worker.start()
    producer = _produce(bootstrap, inp, topics["cdrs"])
    for k in range(kills):
        time.sleep(rng.uniform(0.5, 6.0))
        worker.kill()
        report.kills += 1
        log(f"kill {k + 1}/{kills}")
        if rng.random() < new_disk:
            shutil.rmtree(worker.state_dir, ignore_errors=True)
            report.new_disks += 1
            log("the next start on an empty state dir")
        worker.start(wait=False)
        report.restarts += 1
        if rng.random() < 0.5:  # sometimes kill again during start-up and recovery
            continue
        worker.wait_ready()
    producer.wait()
    worker.wait_ready()
    if not wait_consumed(bootstrap, app_id, [topics["cdrs"]], timeout=600):
        report.mismatches.append("the worker did not consume the whole input in 10 minutes")
        worker.stop()
        return report
    mismatches, repeats = compare(bootstrap, topics, offline_out, worker, stop=worker.stop)
    report.mismatches += mismatches
    report.repeats.update(repeats)
    report.bulk_reads = worker.log().count("changelog read in bulk: ")
    changelog = asyncio.run(_read_topic(bootstrap, f"{app_id}-accounts-changelog", keys=True))
    report.segments = len({k for k in changelog if k and b"\x00ids\x00" in k})
    report.seconds = time.monotonic() - started
    if workdir is None and report.ok():
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"work dir kept: {work}")
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", help="bootstrap of a running broker (default: start a dev broker)")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--new-disk", type=float, default=0.0, help="chance that a restart is on an empty state dir")
    args = p.parse_args()
    from rater.dev import broker as devbroker

    info = None
    bootstrap = args.broker
    if not bootstrap:
        info = devbroker.start(tempfile.mkdtemp(prefix="rater-chaos-broker-"), quiet=True)
        bootstrap = info.bootstrap
    failures = 0
    try:
        for run in range(args.runs):
            r = run_kill_loop(bootstrap, args.records, args.tenants, args.kills, seed=args.seed + run, new_disk=args.new_disk)
            print(
                f"run {run + 1}: {r.records:,} records, {r.kills} kills ({r.new_disks} to a new disk, "
                f"{r.bulk_reads} bulk reads), {r.seconds:.0f} s, "
                f"repeats {r.repeats}, {r.segments} id segments, offline rejects {dict(r.rejects)}, {'OK' if r.ok() else 'FAILED: ' + '; '.join(r.mismatches)}"  # noqa: E501
            )
            failures += not r.ok()
    finally:
        if info is not None:
            devbroker.stop(info.data_dir)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
