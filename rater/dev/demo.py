"""``python -m rater.dev.demo`` (``make demo``): a broker, a worker, traffic and a live view.

1. Starts a fresh local Kafka broker (``rater.dev.broker``, data under ``.kafka/demo``;
   the first run fetches the broker jars with Maven).
2. Starts one ``rater worker`` (4 partitions, a free web port, state in
   ``.kafka/demo/state``, log in ``.kafka/demo/worker.log``) and waits for ``/readyz``.
3. Runs ``rater simulate`` (log in ``.kafka/demo/simulate.log``) for ``--duration``
   seconds (default 60; 0 runs until Ctrl-C): 200 tenants set up, CDRs at 200/s, 1 %
   bad records, a payment service answering recharge requests.
4. Shows, once a second: CDRs/s (deltas of ``rater_records_total``), totals by outcome,
   rejects by reason, the tenants with the lowest balances (``GET /tenants/<id>``), the
   latest balance events (consumed from ``balance-events``) and URLs to try with curl.
   On a terminal it redraws one screen with ANSI escapes; otherwise (or ``--plain``)
   it prints a status line every few seconds.
5. Starts ``rater notify`` (log in ``.kafka/demo/notify.log``) with an SMTP sink in this
   process (aiosmtpd on a free loopback port) and a contacts file naming one address per
   simulated tenant (``.kafka/demo/contacts.csv``); the view shows the emails the sink
   received and their latest subjects, and the notifier's retried and dead-lettered counts.
6. At the end, or on Ctrl-C, stops the simulator, the notifier, the worker and the broker,
   and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from rater.dev import broker as devbroker
from rater.dev.brokerlib import repo_root
from rater.dev.demoview import (
    EVENTS_SHOWN,
    LOWEST,
    DemoScreen,
    MailSink,
    Snapshot,
    Style,
    _http,
    _tail,
    parse_metrics,
)
from rater.dev.procs import Child, ChildFailed, WorkerChild, free_port
from rater.worker.topics import partitions_of

PARTITIONS = 4


def _stop(child: Child, timeout: float) -> None:
    """SIGTERM, and SIGKILL after ``timeout``: the demo ends whatever a child does."""
    with contextlib.suppress(ChildFailed):
        child.stop(timeout)


class Demo(DemoScreen):
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.root = repo_root()
        self.dir = self.root / ".kafka" / "demo"
        self.broker_dir = self.dir / "broker"
        self.worker_log = self.dir / "worker.log"
        self.sim_log = self.dir / "simulate.log"
        self.notify_log = self.dir / "notify.log"
        self.notify: Child | None = None
        self.notify_base = ""
        self.sink: MailSink | None = None
        self.notify_snap: dict[str, float] = {}
        self.broker: devbroker.BrokerInfo | None = None
        self.worker: WorkerChild | None = None
        self.sim: Child | None = None
        self.port = 0
        self.base = ""
        self.stop = asyncio.Event()
        self.interrupted = False
        self.tty = sys.stdout.isatty() and not args.plain
        self.style = Style(self.tty and not os.environ.get("NO_COLOR"))
        self.balances: dict[str, tuple[float, str]] = {}  # tenant -> (balance, currency), from the topics
        self.events: collections.deque = collections.deque(maxlen=EVENTS_SHOWN)
        self.rows: list[dict[str, Any]] = []
        self.snap: Snapshot | None = None
        self.window: collections.deque = collections.deque()  # (time, cdrs total)
        self.rate = 0.0
        self.started = 0.0
        self.sim_started = 0.0
        self.sim_ended: float | None = None
        self.worker_died = False
        self.last_total = -1.0
        self.consuming = asyncio.Event()
        self.consume_task: asyncio.Task | None = None

    # --- lifecycle -------------------------------------------------------------------

    def say(self, msg: str) -> None:
        print(f"rater demo: {msg}", file=sys.stderr, flush=True)

    def start_broker(self) -> None:
        with contextlib.suppress(devbroker.DevBrokerError):
            devbroker.stop(self.broker_dir, quiet=True)  # a leftover of an interrupted demo
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        devbroker.ensure_jars(quiet=False)
        self.say("starting a local Kafka broker...")
        self.broker = devbroker.start(self.broker_dir, die_with_parent=True, quiet=True)
        self.say(f"broker at {self.broker.bootstrap} (data in {self._rel(self.broker_dir)})")

    def _rel(self, p: Path) -> str:
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return str(p)

    def start_worker(self) -> None:
        assert self.broker is not None
        self.worker = WorkerChild(
            self.broker.bootstrap,
            app_id="rater-demo",
            topics={},
            state_dir=self.dir / "state",
            log_path=self.worker_log,
            rates_dir=self.rates_dir(),
            partitions=PARTITIONS,
        )
        self.port = self.worker.web_port
        self.base = self.worker.url
        self.say(f"starting a worker (web {self.base}, log {self._rel(self.worker_log)})...")
        self.worker.start()

    def start_notifier(self) -> None:
        """An SMTP sink here, a contacts file for the simulated tenants, and `rater notify`."""
        assert self.broker is not None
        try:
            self.sink = MailSink()
        except ImportError:
            self.say("aiosmtpd is not installed (it comes with the test extra): no notifications in this demo")
            return
        from rater.sim.traffic import tenant_id_of

        contacts = self.dir / "contacts.csv"
        n = self.args.tenants
        contacts.write_text("tenant_id,email\n" + "".join(f"{tenant_id_of(i, n)},admin@{tenant_id_of(i, n)}.example\n" for i in range(n)))
        port = free_port()
        self.notify_base = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "rater",
            "notify",
            "--broker",
            self.broker.bootstrap,
            "--group-id",
            "rater-demo-notify",
            "--contacts",
            str(contacts),
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            str(self.sink.port),
            "--smtp-from",
            "rater-demo@localhost",
            "--state-dir",
            str(self.dir / "notify"),
            "--web-port",
            str(port),
        ]
        self.say(f"starting rater notify (email to an SMTP sink on 127.0.0.1:{self.sink.port}, log {self._rel(self.notify_log)})")
        self.notify = Child(cmd, self.notify_log, name="rater notify").start()

    def rates_dir(self) -> Path:
        return Path(self.args.rates).resolve() if self.args.rates else self.root / "rate_tables"

    async def wait_ready(self, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            assert self.worker is not None
            if not self.worker.alive():
                self.say(f"the worker exited ({self.worker.returncode}); the end of {self._rel(self.worker_log)}:")
                print(_tail(self.worker_log), file=sys.stderr)
                return False
            status, _body = await asyncio.to_thread(_http, self.base + "/readyz", 1.0)
            if status == 200:
                return True
            await asyncio.sleep(0.5)
        if not self.stop.is_set():
            self.say(f"the worker is not ready after {timeout:.0f}s; see {self._rel(self.worker_log)}")
        return False

    def start_simulator(self) -> None:
        assert self.broker is not None
        a = self.args
        cmd = [
            sys.executable,
            "-m",
            "rater",
            "simulate",
            "--broker",
            self.broker.bootstrap,
            "--tenants",
            str(a.tenants),
            "--rate",
            str(a.rate),
            "--duration",
            str(a.duration),
            "--bad-share",
            str(a.bad_share),
            "--seed",
            str(a.seed),
            "--rates",
            str(self.rates_dir()),
            "--funds-scale",
            str(a.funds_scale),
            "--status-interval",
            "1",
        ]
        self.say(f"starting the simulator ({a.tenants} tenants, {a.rate:g} records/s, log {self._rel(self.sim_log)})")
        self.sim = Child(cmd, self.sim_log, name="rater simulate").start()
        self.sim_started = time.monotonic()

    def shutdown(self) -> None:
        if self.sim is not None and self.sim.alive():
            self.say("stopping the simulator...")
            _stop(self.sim, 15)
        if self.notify is not None and self.notify.alive():
            self.say("stopping rater notify...")
            _stop(self.notify, 20)
        if self.sink is not None:
            self.sink.stop()
        if self.worker is not None and self.worker.alive():
            self.final_snapshot()
            self.say("stopping the worker...")
            _stop(self.worker, 30)
        if self.broker is not None:
            self.say("stopping the broker...")
            with contextlib.suppress(devbroker.DevBrokerError):
                devbroker.stop(self.broker_dir, quiet=True)

    def final_snapshot(self, timeout: float = 8.0) -> None:
        """The worker's metrics once it has rated what the simulator sent, for the summary."""
        if not self.base:
            return
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status, body = _http(self.base + "/metrics", 2.0)
            if status != 200:
                return
            snap = Snapshot(parse_metrics(body.decode("utf-8", "replace")))
            self.snap = snap
            if snap.lag == 0 and last is not None and snap.all_total() == last:
                break
            last = snap.all_total()
            time.sleep(0.5)
        for row in self.rows:
            status, body = _http(f"{self.base}/tenants/{row.get('tenant_id')}", 1.0)
            if status == 200:
                with contextlib.suppress(orjson.JSONDecodeError):
                    row.update(orjson.loads(body))
        self.rows.sort(key=lambda r: float(r.get("balance") or 0))

    # --- data ----------------------------------------------------------------------------

    async def consume(self) -> None:
        """Latest balance per tenant (rated CDRs and balance events) and the last events."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        assert self.broker is not None
        consumer = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap, enable_auto_commit=False, auto_offset_reset="latest")
        await consumer.start()
        try:
            parts = await partitions_of({"bootstrap_servers": self.broker.bootstrap}, ("rated-cdrs", "balance-events"))
            tps = [TopicPartition(topic, p) for topic, ps in parts.items() for p in ps]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:  # resolve "the end" now, before the simulator sends anything
                await consumer.position(tp)
            self.consuming.set()
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, msgs in batch.items():
                    for m in msgs:
                        try:
                            v = orjson.loads(m.value)
                        except orjson.JSONDecodeError:
                            continue
                        if tp.topic == "rated-cdrs":
                            bal = v.get("balance_after")
                        else:
                            bal = v.get("balance")
                            self.events.append(v)
                        if bal is not None:
                            with contextlib.suppress(ValueError, TypeError):
                                self.balances[v["tenant_id"]] = (float(bal), v.get("currency", ""))
        finally:
            await consumer.stop()

    async def refresh(self) -> None:
        if self.notify_base:
            status, body = await asyncio.to_thread(_http, self.notify_base + "/metrics", 1.0)
            if status == 200:
                snap: dict[str, float] = {}
                for name, samples in parse_metrics(body.decode("utf-8", "replace")).items():
                    for labels, value in samples:
                        snap[f"{name}:{labels.get('channel', '')}"] = value
                self.notify_snap = snap
        status, body = await asyncio.to_thread(_http, self.base + "/metrics", 2.0)
        if status == 200:
            self.snap = Snapshot(parse_metrics(body.decode("utf-8", "replace")))
            now = time.monotonic()
            total = self.snap.cdrs_total()
            self.window.append((now, total))
            while len(self.window) > 2 and now - self.window[0][0] > 5.0:
                self.window.popleft()
            t0, c0 = self.window[0]
            self.rate = (total - c0) / (now - t0) if now > t0 else 0.0
        lowest = sorted(self.balances.items(), key=lambda kv: kv[1][0])[:LOWEST]
        rows = []
        for tenant, (bal, cur) in lowest:
            status, body = await asyncio.to_thread(_http, f"{self.base}/tenants/{tenant}", 1.0)
            if status != 200:
                rows.append({"tenant_id": tenant, "balance": str(bal), "currency": cur, "_stale": True})
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                view = orjson.loads(body)
                rows.append(view)
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    self.balances[tenant] = (float(view["balance"]), view["currency"])
        rows.sort(key=lambda r: float(r.get("balance") or 0))
        self.rows = rows

    # --- rendering ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rater.dev.demo", description="A local broker, a rater worker, simulated traffic and a live view."
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic; 0 runs until Ctrl-C (default 60)")
    p.add_argument("--tenants", type=int, default=200, help="simulated tenants (default 200)")
    p.add_argument("--rate", type=float, default=200.0, help="records per second (default 200)")
    p.add_argument("--bad-share", type=float, default=0.01, help="share of deliberately bad records (default 0.01)")
    p.add_argument(
        "--funds-scale",
        type=float,
        default=0.25,
        help="multiply the tenants' initial funds; the default 0.25 makes balances run low within "
        "a minute, so every kind of balance event shows (default 0.25)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated tenants and traffic (default 1)")
    p.add_argument("--rates", default=None, help="rate-table directory (default: the shipped rate_tables)")
    p.add_argument("--plain", action="store_true", help="print status lines instead of redrawing the screen")
    p.add_argument("--plain-interval", type=float, default=5.0, help="seconds between plain status lines (default 5)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    demo = Demo(args)
    code = 1
    try:
        # Started from the main thread: the broker (and the children) get SIGTERM when
        # the process that forked them dies (PR_SET_PDEATHSIG follows the forking thread).
        demo.start_broker()
        code = asyncio.run(demo.main())
    except devbroker.DevBrokerError as exc:
        print(f"rater demo: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        demo.interrupted = True
        code = 130
    finally:
        try:
            demo.shutdown()
        except KeyboardInterrupt:
            pass
    if demo.snap is not None or demo.sim is not None:
        demo.summary()
    return code


if __name__ == "__main__":
    sys.exit(main())
