"""``rater simulate``: telephony traffic for a running worker, and a payment service.

What it does, in order:

1. Creates the topics it uses that do not exist yet, with ``--partitions`` as the
   worker does (``rater/worker/topics.py``); it never lets the broker auto-create an input
   topic with the broker's default partition count.
2. Publishes the setup of ``--tenants`` tenants (``rater.sim.traffic.setup_commands``) to
   ``tenant-commands`` and waits until the worker has applied them: it watches
   ``balance-events`` for the ``funds_added`` of every tenant's initial top-up (the
   rater applies the two input topics in arrival order, so CDRs sent before the setup
   is applied would be ``unknown_tenant``). ``--setup-timeout`` bounds the wait.
3. Publishes CDRs to ``cdrs`` at ``--rate`` records a second, in bursts every 20 ms,
   keyed by tenant (aiokafka's default partitioner is the Java client's murmur2, SPEC 2),
   ``started_at`` = now; occasional manual ``add_funds`` go to ``tenant-commands``, and
   ``--bad-share`` of the records are bad on purpose (``rater.sim.traffic``).
4. Meanwhile stands in for the payment service: every recharge request on
   ``recharge-requests`` gets a ``payment_result`` on ``tenant-commands`` after about
   ``--payment-delay`` seconds, ``succeeded`` or with ``--fail-share`` ``failed``
   (``card_declined`` or ``insufficient_funds``). Only requests written after the
   simulator started are answered.
5. After ``--duration`` seconds (0: until SIGINT/SIGTERM) stops the CDRs, keeps
   answering for ``--linger`` seconds (not after a signal), answers what is still
   waiting at once, flushes and exits 0.

A status line goes to stderr every ``--status-interval`` seconds, and a last one at the
end. Ids of this run carry ``--run-id`` (default: from the clock), so a second run
against the same worker is new traffic, not duplicates; the tenants themselves depend
only on ``--seed`` and ``--tenants``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import os
import random
import signal
import sys
import time
from typing import Any, Callable

import orjson

from rater.connection import add_connection_arguments, client_kwargs, kafka_errors_kept, settings_from_args
from rater.core.rates import RateTableError, load_rate_tables
from rater.sim import traffic

TICK = 0.02  # seconds between bursts


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rater.worker.config import add_topic_creation_arguments

    e = os.environ.get
    add_connection_arguments(p)  # --broker, --security-protocol, --sasl-*, --ssl-*: as the worker (rater/connection.py)
    p.add_argument("--tenants", type=int, default=200, help="number of tenants (default 200)")
    p.add_argument("--rate", type=float, default=200.0, help="records per second (default 200)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds of traffic; 0 runs until Ctrl-C / SIGTERM (default 0)")
    p.add_argument(
        "--bad-share",
        type=float,
        default=0.01,
        help="share of deliberately bad records: invalid JSON, missing field, unknown tenant, no rate (default 0.01)",
    )
    p.add_argument("--topup-share", type=float, default=0.002, help="share of manual add_funds (default 0.002)")
    p.add_argument("--seed", type=int, default=1, help="seed of the tenants and the traffic (default 1)")
    p.add_argument("--run-id", default=None, help="prefix of this run's record ids (default: from the clock)")
    p.add_argument(
        "--rates",
        dest="rates_dir",
        default=e("RATER_RATES_DIR", "rate_tables"),
        help="rate-table directory the plans come from (RATER_RATES_DIR)",
    )
    p.add_argument(
        "--funds-scale", type=float, default=1.0, help="multiply the tenants' initial funds (small values make balances run low fast)"
    )
    p.add_argument("--no-payments", action="store_true", help="do not answer recharge requests")
    p.add_argument("--fail-share", type=float, default=0.1, help="share of failed payments (default 0.1)")
    p.add_argument("--payment-delay", type=float, default=0.5, help="seconds before a payment answer (default 0.5)")
    p.add_argument("--linger", type=float, default=2.0, help="seconds to keep answering recharge requests after the last CDR (default 2)")
    p.add_argument(
        "--setup-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the topics and for the worker to apply the setup (default 60)",
    )
    p.add_argument("--status-interval", type=float, default=5.0, help="seconds between status lines (default 5)")
    add_topic_creation_arguments(p)
    p.add_argument("--cdrs-topic", default=e("RATER_TOPIC_CDRS", "cdrs"))
    p.add_argument("--commands-topic", default=e("RATER_TOPIC_COMMANDS", "tenant-commands"))
    p.add_argument("--requests-topic", default=e("RATER_TOPIC_REQUESTS", "recharge-requests"))
    p.add_argument("--events-topic", default=e("RATER_TOPIC_EVENTS", "balance-events"))


def run(args: argparse.Namespace) -> int:
    if args.rate <= 0:
        print("rater: simulate: --rate must be > 0", file=sys.stderr)
        return 2
    if args.tenants < 1:
        print("rater: simulate: --tenants must be >= 1", file=sys.stderr)
        return 2
    try:
        tables = load_rate_tables(args.rates_dir)
    except RateTableError as exc:
        for problem in exc.problems:
            print(f"rater: {problem}", file=sys.stderr)
        return 2
    sim = Simulator(args, tables)
    try:
        return asyncio.run(sim.run())
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130


class SimulatorError(RuntimeError):
    pass


async def ensure_topics(args: argparse.Namespace, log: Callable[[str], None]) -> None:
    """Create the topics the simulator uses that do not exist yet, with ``--partitions``,
    as the worker does (``rater/worker/topics.py``): never left to the broker's default count."""
    from aiokafka.errors import KafkaError

    from rater.worker.topics import create_missing

    a = args
    wanted = [a.cdrs_topic, a.commands_topic, a.events_topic]
    if not a.no_payments:
        wanted.append(a.requests_topic)
    with kafka_errors_kept() as last:  # the first connection: aiokafka logs why it failed (a refused SASL login)
        try:
            created = await asyncio.wait_for(
                create_missing(client_kwargs(settings_from_args(a)), wanted, a.partitions, a.replication, timeout=max(a.setup_timeout, 1)),
                timeout=max(a.setup_timeout, 1) + 5,
            )
        except (KafkaError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
            why = f": {last.message}" if last.message else ""
            raise SimulatorError(f"cannot reach the broker at {a.broker} or create its topics ({type(exc).__name__}){why}"[:400]) from None
    if created:
        log(f"created topics {', '.join(created)} with {a.partitions} partitions")


async def consumer_at_end(args: argparse.Namespace, producer: Any, topic: str):
    """A group-less consumer of every partition of ``topic``, positioned at its end now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(
        **client_kwargs(settings_from_args(args)),
        enable_auto_commit=False,
        auto_offset_reset="latest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        # The producer's public partitions_for waits for the topic's metadata (the
        # consumer has no public call that refreshes it).
        try:
            parts = await asyncio.wait_for(producer.partitions_for(topic), 10)
        except (KafkaError, asyncio.TimeoutError, TimeoutError):
            parts = None
        if not parts:
            raise SimulatorError(f"no partitions for topic {topic}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before anything is produced
            await consumer.position(tp)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


class Simulator:
    def __init__(self, args: argparse.Namespace, tables) -> None:
        self.args = args
        self.tables = tables
        self.run_id = args.run_id or f"sim{int(time.time()):x}"
        self.stop = asyncio.Event()
        self.signalled = False
        self.started = time.monotonic()
        self.traffic_started: float | None = None
        self.traffic_ended: float | None = None
        self.phase = "starting"
        # counters
        self.cdrs = 0
        self.commands = 0
        self.bad = 0
        self.acked = 0
        self.errors = 0
        self.last_error = ""
        self.requests = 0
        self.answered = 0
        self.succeeded = 0
        self.failed = 0
        self._answers: list[tuple[float, int, dict[str, Any]]] = []  # (due, seq, request)
        self._answer_seq = 0
        self.producer = None
        self.traffic: traffic.Traffic | None = None
        self._rng = random.Random(f"payments:{args.seed}")

    # --- helpers -------------------------------------------------------------------

    def log(self, msg: str) -> None:
        print(f"simulate: {msg}", file=sys.stderr, flush=True)

    def status(self) -> str:
        if self.traffic_started is None:
            return f"{self.phase}"
        elapsed = max((self.traffic_ended or time.monotonic()) - self.traffic_started, 1e-9)
        line = f"{elapsed:.0f}s, {self.cdrs:,} CDRs ({self.cdrs / elapsed:,.1f}/s), {self.commands:,} top-ups, {self.bad:,} bad"
        if not self.args.no_payments:
            line += (
                f" | recharge requests {self.requests:,}: {self.succeeded:,} paid, {self.failed:,} failed, "
                f"{self.requests - self.answered:,} waiting"
            )
        if self.errors:
            line += f" | {self.errors:,} send errors (last: {self.last_error})"
        return line

    def _on_stop_signal(self) -> None:
        if not self.stop.is_set():
            self.signalled = True
            self.stop.set()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, or return True early when asked to stop."""
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=max(seconds, 0))
            return True
        except asyncio.TimeoutError:
            return False

    def _sent(self, fut: asyncio.Future) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            self.acked += 1
        else:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]

    async def _send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future:
        fut = await self.producer.send(topic, value, key=key)
        fut.add_done_callback(self._sent)
        return fut

    # --- the run -----------------------------------------------------------------------

    async def run(self) -> int:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_stop_signal)
        a = self.args
        status_task = asyncio.create_task(self._status_loop())
        consumers = []
        pay_task: asyncio.Task | None = None
        try:
            self.phase = "checking the topics"
            await ensure_topics(a, self.log)
            if self.stop.is_set():
                return 0
            self.producer = AIOKafkaProducer(**client_kwargs(settings_from_args(a)), acks="all", linger_ms=5, enable_idempotence=True)
            await self.producer.start()
            events = await consumer_at_end(a, self.producer, a.events_topic)
            consumers.append(events)
            requests = None
            if not a.no_payments:
                requests = await consumer_at_end(a, self.producer, a.requests_topic)
                consumers.append(requests)
            profiles = traffic.tenants(a.tenants, a.seed, self.tables, funds_scale=a.funds_scale)
            await self._setup(profiles, events)
            consumers.remove(events)
            await events.stop()
            if self.stop.is_set():
                return 0
            pay_task = asyncio.create_task(self._payments(requests)) if requests is not None else None
            await self._pump(profiles)
            await self.producer.flush()
            if pay_task is not None:
                if not self.signalled and a.linger > 0:
                    self.phase = "lingering"
                    await self._sleep(a.linger)
                if pay_task.done():  # it failed: say why
                    pay_task.result()
                pay_task.cancel()
                try:
                    await pay_task
                except asyncio.CancelledError:
                    pass
                await self._answer_due(now=float("inf"))  # answer what is still waiting, at once
            await self.producer.flush()
            return 0
        except SimulatorError as exc:
            print(f"rater: simulate: {exc}", file=sys.stderr)
            return 1
        except KafkaError as exc:
            print(f"rater: simulate: Kafka error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            status_task.cancel()
            if pay_task is not None and not pay_task.done():
                pay_task.cancel()
                with contextlib.suppress(BaseException):
                    await pay_task
            for c in consumers:
                try:
                    await c.stop()
                except Exception:
                    pass
            if self.producer is not None:
                try:
                    await self.producer.stop()
                except Exception:
                    pass
            if self.traffic_started is not None or self.signalled:
                self.log(("stopped: " if self.signalled else "done: ") + self.status())

    async def _status_loop(self) -> None:
        interval = max(self.args.status_interval, 0.5)
        while True:
            await asyncio.sleep(interval)
            self.log(self.status())

    async def _setup(self, profiles: list[dict[str, Any]], events) -> None:
        a = self.args
        now = traffic.now_micros()
        commands = traffic.setup_commands(profiles, now, self.run_id)
        self.phase = f"setting up {len(profiles)} tenants"
        self.log(f"run {self.run_id}: {self.phase} ({len(commands)} commands to {a.commands_topic})")
        futures = [await self._send(a.commands_topic, c["tenant_id"].encode(), orjson.dumps(c)) for c in commands]
        await asyncio.gather(*futures)
        waiting = {traffic.funds_command_id(self.run_id, p["tenant_id"]) for p in profiles}
        total = len(waiting)
        deadline = time.monotonic() + a.setup_timeout
        self.phase = f"waiting for the worker to apply the setup (0/{total})"
        while waiting and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                self.log(
                    f"{len(waiting)} of {total} tenants' setup not confirmed after {a.setup_timeout:.0f}s "
                    "(is a worker running? were the ids applied before?); sending traffic anyway"
                )
                return
            batch = await events.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for msgs in batch.values():
                for m in msgs:
                    try:
                        ev = orjson.loads(m.value)
                    except orjson.JSONDecodeError:
                        continue
                    if ev.get("type") == "funds_added":
                        waiting.discard((ev.get("cause") or {}).get("id"))
            self.phase = f"waiting for the worker to apply the setup ({total - len(waiting)}/{total})"
        self.log(f"setup of {total} tenants applied by the worker")

    async def _pump(self, profiles: list[dict[str, Any]]) -> None:
        a = self.args
        self.traffic = traffic.Traffic(profiles, self.tables)
        stream = self.traffic.stream(a.seed, traffic.now_micros, run_id=self.run_id, bad_share=a.bad_share, topup_share=a.topup_share)
        cdrs_topic, commands_topic = a.cdrs_topic, a.commands_topic
        dumps = orjson.dumps
        self.phase = "sending"
        start = time.monotonic()
        self.traffic_started = start
        sent = 0
        burst_cap = max(1, int(a.rate * 0.25))  # after a stall, catch up over a few ticks
        last = None
        while not self.stop.is_set():
            elapsed = time.monotonic() - start
            if a.duration and elapsed >= a.duration:
                break
            due = min(int(a.rate * elapsed) + 1 - sent, burst_cap)
            for _ in range(due):
                rec = next(stream)
                if isinstance(rec, bytes):  # invalid JSON: no tenant to key it by
                    last = await self._send(cdrs_topic, None, rec)
                    self.cdrs += 1
                    continue
                key = rec["tenant_id"].encode()
                if "command" in rec:
                    last = await self._send(commands_topic, key, dumps(rec))
                    self.commands += 1
                else:
                    last = await self._send(cdrs_topic, key, dumps(rec))
                    self.cdrs += 1
            sent += max(due, 0)
            self.bad = sum(self.traffic.bad.values())
            # pace: sleep to the next tick
            next_tick = start + (int(elapsed / TICK) + 1) * TICK
            if a.duration:
                next_tick = min(next_tick, start + a.duration)
            if await self._sleep(next_tick - time.monotonic()):
                break
        self.traffic_ended = time.monotonic()
        if last is not None:
            try:
                await last
            except Exception:
                pass

    async def _payments(self, consumer) -> None:
        a = self.args
        rng = self._rng
        while True:
            batch = await consumer.getmany(timeout_ms=50)
            now = time.monotonic()
            for msgs in batch.values():
                for m in msgs:
                    try:
                        req = orjson.loads(m.value)
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(req, dict) or "request_id" not in req or "tenant_id" not in req:
                        continue
                    self.requests += 1
                    self._answer_seq += 1
                    delay = a.payment_delay * (0.5 + rng.random())
                    heapq.heappush(self._answers, (now + delay, self._answer_seq, req))
            await self._answer_due(now)

    async def _answer_due(self, now: float) -> None:
        futures = []
        while self._answers and self._answers[0][0] <= now:
            _due, _seq, req = heapq.heappop(self._answers)
            answer = traffic.payment_result(req, self._rng, traffic.now_micros(), fail_share=self.args.fail_share)
            futures.append(await self._send(self.args.commands_topic, req["tenant_id"].encode(), orjson.dumps(answer)))
            self.answered += 1
            if answer["status"] == "succeeded":
                self.succeeded += 1
            else:
                self.failed += 1
        if futures:
            await asyncio.gather(*futures, return_exceptions=True)
