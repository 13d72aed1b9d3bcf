#!/usr/bin/env python3
"""Smoke check: faust-streaming + the pinned aiokafka against the real Kafka 4.x dev broker.

Not a test (it takes a minute and spawns workers); run it after changing the faust or
aiokafka pin, and see docs/faust-notes.md for what it showed.

    .venv/bin/python scripts/faust_smoke.py                # own broker in a temp dir
    .venv/bin/python scripts/faust_smoke.py --bootstrap 127.0.0.1:9092
    .venv/bin/python scripts/faust_smoke.py --guarantee exactly_once --crash
    .venv/bin/python scripts/faust_smoke.py --crash --static-id w1 --session-timeout 10

What it checks (each step prints PASS/FAIL):
  1. a worker (agent on a 4-partition topic, RocksDB-backed Table, sink topic, @app.page)
     processes N records: table totals over HTTP and the sink topic match;
  2. worker stopped (SIGTERM) and restarted on the same datadir: more input is added to
     the totals kept in RocksDB (local state reused);
  3. a worker on an empty datadir recovers the table from its changelog topic;
  4. (--crash) a worker SIGKILLed mid-stream and restarted: counts how far the totals
     and the sink drift from the truth (at-least-once replays).
The worker is this same file run as ``faust_smoke.py worker ...``.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from rater.dev.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

N_KEYS = 16


# ---------------------------------------------------------------------------- worker side


def build_app(ns: argparse.Namespace):
    import faust

    app = faust.App(
        ns.app_id,
        broker=f"kafka://{ns.bootstrap}",
        store="rocksdb://",
        datadir=ns.datadir,
        topic_partitions=4,
        topic_replication_factor=1,
        processing_guarantee=ns.guarantee,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=ns.web_port,
        table_standby_replicas=0,
        broker_session_timeout=ns.session_timeout,
        consumer_group_instance_id=ns.static_id,
    )
    source = app.topic(ns.topic_in, key_type=str, value_serializer="json", partitions=4)
    sink = app.topic(ns.topic_out, key_type=str, value_serializer="json", partitions=4)
    totals = app.Table("totals", key_type=str, value_type=int, default=int, partitions=4)

    @app.agent(source, sink=[sink])
    async def rate(stream):
        async for key, value in stream.items():
            totals[key] += int(value["units"])
            yield {"key": key, "seq": value["seq"], "total": totals[key]}

    @app.page("/totals/")
    async def get_totals(web, request):
        return web.json({k: v for k, v in totals.items()})

    @app.page("/info/")
    async def get_info(web, request):
        import aiokafka

        store = totals.data
        return web.json(
            {
                "faust": faust.__version__,
                "aiokafka": aiokafka.__version__,
                "store": f"{type(store).__module__}.{type(store).__qualname__}",
                "use_rocksdict": getattr(store, "use_rocksdict", None),
                "db_class": [f"{type(db).__module__}.{type(db).__qualname__}" for db in store._dbs.values()][:1],
                "persisted_offsets": {str(p): store.persisted_offset(type("TP", (), {"partition": p})()) for p in store._dbs},
            }
        )

    return app


def run_worker(ns: argparse.Namespace) -> None:
    app = build_app(ns)
    from faust.worker import Worker

    Worker(app, loglevel=ns.loglevel, logfile=ns.logfile, quiet=True).execute_from_commandline()


# ---------------------------------------------------------------------------- driver side


def diff(got, want) -> str:
    got = got or {}
    d = {k: got.get(k, 0) - v for k, v in want.items() if got.get(k, 0) != v}
    return f" diff(got-want)={d}" if d else ""


class Check:
    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, ok: bool, what: str) -> bool:
        print(f"{'PASS' if ok else 'FAIL'}: {what}", flush=True)
        self.failed += 0 if ok else 1
        return ok


def http_json(port: int, path: str, timeout: float = 2.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.loads(r.read())


class Worker:
    def __init__(self, ns: argparse.Namespace, datadir: Path, tag: str) -> None:
        # One web port for all workers of a run: faust puts the worker URL (canonical_url,
        # from web_host/web_port) into the group assignment and asserts it on
        # static-membership rejoin (faust/assignor/partition_assignor.py on_assignment).
        self.port = ns.web_port
        self.logfile = Path(ns.workdir) / f"worker-{tag}.log"
        args = [
            sys.executable,
            __file__,
            "worker",
            "--bootstrap",
            ns.bootstrap,
            "--datadir",
            str(datadir),
            "--web-port",
            str(self.port),
            "--app-id",
            ns.app_id,
            "--topic-in",
            ns.topic_in,
            "--topic-out",
            ns.topic_out,
            "--guarantee",
            ns.guarantee,
            "--logfile",
            str(self.logfile),
            "--session-timeout",
            str(ns.session_timeout),
            "--loglevel",
            ns.loglevel,
        ] + (["--static-id", ns.static_id] if ns.static_id else [])
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(Path(ns.workdir) / f"worker-{tag}.err", "wb")
        )

    def wait_totals(self, want: dict[str, int], timeout: float) -> dict[str, int] | None:
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                print(f"  worker exited early with {self.proc.returncode}; see {self.logfile}")
                return got
            try:
                got = http_json(self.port, "/totals/")
                if got == want:
                    return got
            except OSError:
                pass
            time.sleep(0.5)
        return got

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def produce_batch(ns, start: int, n: int, truth: collections.Counter) -> None:
    from tests.support.kafka import produce

    recs = []
    for i in range(start, start + n):
        key = f"acct-{i % N_KEYS}"
        units = 1 + (i % 7)
        truth[key] += units
        recs.append((key, {"seq": i, "units": units}))
    produce(ns.bootstrap, ns.topic_in, recs)


def drive(ns: argparse.Namespace) -> int:
    from tests.support.kafka import consume_all, create_topic

    check = Check()
    truth: collections.Counter = collections.Counter()
    work = Path(ns.workdir)
    d1, d2, d3 = work / "w1", work / "w2", work / "w3"
    create_topic(ns.bootstrap, ns.topic_in, 4)
    # faust does not declare a topic that is only a sink: the broker would auto-create it
    # with num.partitions=1, breaking co-partitioning (and exactly_once's per-partition
    # transactional ids). Create it like the source.
    if not ns.no_create_sink:
        create_topic(ns.bootstrap, ns.topic_out, 4)
    seq = 0

    # 1. fresh worker
    produce_batch(ns, seq, ns.n, truth)
    seq += ns.n
    t0 = time.monotonic()
    w = Worker(ns, d1, "1")
    got = w.wait_totals(dict(truth), 120)
    check(got == dict(truth), f"worker 1 totals over HTTP match ({time.monotonic() - t0:.1f}s incl. startup){diff(got, truth)}")
    try:
        print("  info:", json.dumps(http_json(w.port, "/info/")))
    except OSError as exc:
        print("  info: unavailable", exc)
    out = consume_all(ns.bootstrap, ns.topic_out, 30, expect=seq)
    check(len(out) == seq, f"sink topic has {len(out)} records (want {seq})")
    rc = w.stop()
    check(rc == 0, f"worker 1 stopped cleanly on SIGTERM (rc={rc})")
    dbs = sorted(p.name for p in d1.rglob("*") if p.is_dir() and p.name.endswith(".db"))
    check(bool(dbs), f"RocksDB dirs in datadir: {dbs[:4]}")

    # 2. restart on the same datadir, with more input
    produce_batch(ns, seq, ns.n // 2, truth)
    seq += ns.n // 2
    t0 = time.monotonic()
    w = Worker(ns, d1, "2")
    got = w.wait_totals(dict(truth), 120)
    check(got == dict(truth), f"worker 2 (same datadir) totals match ({time.monotonic() - t0:.1f}s){diff(got, truth)}")
    print("  info:", json.dumps(http_json(w.port, "/info/")))
    rc = w.stop()
    check(rc == 0, f"worker 2 stopped cleanly (rc={rc})")

    # 3. empty datadir: full recovery from the changelog
    t0 = time.monotonic()
    w = Worker(ns, d2, "3")
    got = w.wait_totals(dict(truth), 120)
    check(got == dict(truth), f"worker 3 (empty datadir) recovered totals from changelog ({time.monotonic() - t0:.1f}s){diff(got, truth)}")
    produce_batch(ns, seq, 20, truth)
    seq += 20
    got = w.wait_totals(dict(truth), 60)
    check(got == dict(truth), f"worker 3 keeps counting after recovery{diff(got, truth)}")
    rc = w.stop()
    check(rc == 0, f"worker 3 stopped cleanly (rc={rc})")
    out = consume_all(ns.bootstrap, ns.topic_out, 30, expect=seq)
    check(len(out) == seq, f"sink topic has {len(out)} records (want {seq})")

    # 4. crash mid-stream
    if ns.crash:
        big = ns.crash_n
        produce_batch(ns, seq, big, truth)
        seq += big
        w = Worker(ns, d3 if ns.crash_fresh else d1, "4")
        # wait until it is part-way through, then kill -9
        deadline = time.monotonic() + 120
        progressed = 0
        while time.monotonic() < deadline:
            try:
                cur = http_json(w.port, "/totals/")
                progressed = sum(cur.values()) - (sum(truth.values()) - sum(1 + (i % 7) for i in range(seq - big, seq)))
                if progressed > 0:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        time.sleep(ns.crash_after)
        w.stop(signal.SIGKILL)
        print(f"  killed worker 4 with SIGKILL after it had applied >= {progressed} units of the last batch")
        t0 = time.monotonic()
        w = Worker(ns, d3 if ns.crash_fresh else d1, "5")
        want_sum = sum(truth.values())
        first = base = None
        deadline = time.monotonic() + ns.crash_wait
        while time.monotonic() < deadline:
            try:
                cur = http_json(w.port, "/totals/")
            except OSError:
                cur = None
            if cur is not None and base is None:
                base = sum(cur.values())
            if cur is not None and first is None and sum(cur.values()) > base:
                first = time.monotonic() - t0
            if cur is not None and sum(cur.values()) >= want_sum:
                break
            time.sleep(0.5)
        first_s = f"{first:.1f}s" if first is not None else "never"
        print(f"  restarted worker 5: first new progress after {first_s}, all input applied after {time.monotonic() - t0:.1f}s")
        time.sleep(3)  # let it finish whatever it replays
        got = http_json(w.port, "/totals/")
        over = {k: got.get(k, 0) - v for k, v in truth.items() if got.get(k, 0) != v}
        print(f"  after crash+restart: totals differ from truth for {len(over)} keys: {over}")
        out = consume_all(ns.bootstrap, ns.topic_out, 30)
        seqs = collections.Counter(r.value["seq"] for r in out)
        dups = sum(c - 1 for c in seqs.values() if c > 1)
        missing = seq - len(seqs)
        print(f"  sink: {len(out)} records, {dups} duplicates, {missing} seqs missing")
        check(missing == 0, "no input record lost after crash (at-least-once)")
        if ns.guarantee == "exactly_once":
            check(not over and dups == 0, "exactly_once: totals exact and no duplicate in sink (read_committed)")
        else:
            print(f"  at_least_once after crash: totals exact? {not over}; duplicates in sink: {dups}")
        w.stop()

    print(f"{'OK' if not check.failed else 'FAILED'}: {check.failed} failed checks")
    return 1 if check.failed else 0


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd")
    wk = sub.add_parser("worker")
    for sp in (p, wk):
        sp.add_argument("--bootstrap", default=None)
        sp.add_argument("--guarantee", default="at_least_once", choices=["at_least_once", "exactly_once"])
        sp.add_argument("--app-id", default=None)
        sp.add_argument("--topic-in", default=None)
        sp.add_argument("--topic-out", default=None)
        sp.add_argument("--loglevel", default="WARNING", help="worker log level")
        sp.add_argument("--session-timeout", type=float, default=60.0, help="faust broker_session_timeout (s)")
        sp.add_argument("--static-id", default=None, help="faust consumer_group_instance_id (static membership)")
    wk.add_argument("--datadir", required=True)
    wk.add_argument("--web-port", type=int, required=True)
    wk.add_argument("--logfile", default=None)
    p.add_argument("-n", type=int, default=400, help="records in the first batch")
    p.add_argument("--crash", action="store_true", help="also SIGKILL a worker mid-stream")
    p.add_argument("--crash-n", type=int, default=20000)
    p.add_argument("--crash-after", type=float, default=1.0)
    p.add_argument("--crash-wait", type=float, default=240.0)
    p.add_argument("--crash-fresh", action="store_true", help="crash run on a fresh datadir")
    p.add_argument("--workdir", default=None)
    p.add_argument("--no-create-sink", action="store_true", help="leave the sink topic to broker auto-creation (1 partition)")
    ns = p.parse_args()
    if ns.cmd == "worker":
        run_worker(ns)
        return 0

    tag = uuid.uuid4().hex[:6]
    ns.app_id = ns.app_id or f"smoke-{tag}"
    ns.topic_in = ns.topic_in or f"smoke-in-{tag}"
    ns.topic_out = ns.topic_out or f"smoke-out-{tag}"
    ns.workdir = ns.workdir or tempfile.mkdtemp(prefix="faust-smoke-")
    ns.web_port = free_port()
    print(f"workdir {ns.workdir}, app {ns.app_id}, guarantee {ns.guarantee}")
    if ns.bootstrap:
        return drive(ns)
    from rater.dev import broker as devbroker

    d = Path(ns.workdir) / "broker"
    info = devbroker.start(d, die_with_parent=True)
    ns.bootstrap = info.bootstrap
    try:
        return drive(ns)
    finally:
        devbroker.stop(d)


if __name__ == "__main__":
    sys.exit(main())
