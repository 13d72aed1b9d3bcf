"""`rater notify`: balance events in, email and webhook notifications out (SPEC 11).

The composition root: a Kafka consumer of ``balance-events`` in its own group, one queue
per tenant, the channels, the store of handled ids, the dead-letter producer, the offset
bookkeeping and the HTTP server for ``/healthz`` and ``/metrics``.

Delivery protocol (the step numbers are repeated in the code):

1. Read a batch of records. Each record's offset is *taken* (in flight) in
   :class:`PartitionProgress` before anything else happens to it.
2. Decode the event. An invalid one goes to the dead-letter topic (step 5) and is done; a
   type that is not configured is done at once; a selected one joins its tenant's queue.
   A tenant's events are on one partition, so its queue holds them in event order.
3. The tenant's queue handles one event at a time, each channel in turn (email, then the
   webhook). Before a send, the store of handled ids is asked: a (event_id, channel) that
   is there was sent or dead-lettered before (a replay after a crash or a repeated event)
   and is skipped.
4. Send. As soon as the server accepts (SMTP's reply to DATA, in the sending thread; an
   HTTP 2xx status), write (event_id, channel, sent) to the store; SQLite has committed
   it when the send returns. A failure that another try can fix is tried again after
   ``backoff * 2^(n-1)`` seconds (at most ``backoff_max``), up to ``attempts`` tries; only
   this tenant's queue waits, other tenants go on.
5. After the last try (or a permanent failure: SMTP 5xx, HTTP 4xx other than 408/429),
   produce the event with the error to ``notify-dead-letter`` and wait for the broker's
   acknowledgement (acks=all), then write (event_id, channel, dead_lettered) to the store.
6. When every channel of the event is through step 4 or 5, the event is *done*.
7. Every ``commit_interval`` (and when partitions are revoked or the process stops),
   commit for each partition the lowest offset still in flight, or one past the last
   offset taken: every record below the committed offset is done.

Crash between steps (SIGKILL at any point): offsets are committed only at step 7 and only
below done records, so every event not done is read again after a restart (at least once).
A crash after a server accepted a message (step 4) and before the store's commit sends that
one message again after the restart: at most one per tenant and channel, since a tenant
has one send under way at a time. The window is the server's reply on the wire and one
SQLite commit; the webhook's ``Idempotency-Key`` and the email's ``Message-ID`` (both from
the event id) let the receiver drop the repeat. Any other replayed delivery is found in the store at step 3.
A crash between the dead letter's acknowledgement and the store write (step 5) can write a
second dead letter with the same event id.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rater.core.timeutil import format_time
from rater.jsonlog import JsonFormatter

from .channels import DeliveryError, EmailChannel, WebhookChannel
from .config import NotifyConfig
from .contacts import ContactsError, ContactsFile
from .dedup import DEAD_LETTERED, SENT, DedupStore
from .messages import Event, EventError, parse_event, selected
from .metrics import NotifyMetrics
from .progress import PartitionProgress

log = logging.getLogger("rater.notify")


@dataclass
class Item:
    """One record on its way: where it came from, its event and its bytes."""

    partition: int
    offset: int
    key: bytes | None
    raw: bytes
    event: Event | None


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``attempt``-th failed try: base, 2 base, 4 base ... at most cap."""
    return min(cap, base * (2 ** (attempt - 1)))


class Notifier:
    def __init__(self, cfg: NotifyConfig, store: DedupStore, contacts: ContactsFile | None, metrics: NotifyMetrics | None = None):
        self.cfg = cfg
        self.store = store
        self.contacts = contacts
        self.metrics = metrics or NotifyMetrics()
        self.email = EmailChannel(cfg.smtp) if cfg.smtp else None
        self.webhook = WebhookChannel(cfg.webhook_url, cfg.webhook_timeout) if cfg.webhook_url else None
        self.progress = PartitionProgress()
        self._queues: dict[str, collections.deque[Item]] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._side_tasks: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self.consumer: Any = None
        self.producer: Any = None
        self.started = False
        self.failed: str | None = None

    # ------------------------------------------------------------------ the consumer loop

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.abc import ConsumerRebalanceListener

        notifier = self

        class Rebalance(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                await notifier._commit()  # step 7 for what is done
                notifier.progress.forget({tp.partition for tp in revoked})

            async def on_partitions_assigned(self, assigned):
                log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)) or "nothing")

        cfg = self.cfg
        await ensure_dead_letter_topic(cfg)
        self.producer = AIOKafkaProducer(bootstrap_servers=cfg.broker, acks="all", enable_idempotence=True, **cfg.kafka)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.broker,
            group_id=cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **cfg.kafka,
        )
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([cfg.topic_events], listener=Rebalance())
        self.started = True
        last_commit = time.monotonic()
        last_prune = time.monotonic()
        paused = False
        try:
            while not self._stopping.is_set():
                # Back-pressure: stop reading while too many events wait.
                busy = self.progress.in_flight() >= cfg.max_in_flight
                if busy != paused:
                    parts = self.consumer.assignment()
                    (self.consumer.pause if busy else self.consumer.resume)(*parts)
                    paused = busy
                batch = await self.consumer.getmany(timeout_ms=200, max_records=1000)
                for tp, records in batch.items():
                    for rec in records:
                        self._take(tp.partition, rec)
                now = time.monotonic()
                if now - last_commit >= cfg.commit_interval:
                    await self._commit()
                    last_commit = now
                if now - last_prune >= 3600:
                    await asyncio.to_thread(self.store.prune)
                    last_prune = now
                self._gauges()
        finally:
            await self._shutdown()

    def _take(self, partition: int, rec: Any) -> None:
        self.progress.taken(partition, rec.offset)  # step 1
        raw = rec.value or b""
        try:  # step 2
            event = parse_event(orjson.loads(raw))
        except (orjson.JSONDecodeError, EventError) as exc:
            self.metrics.events.labels("invalid").inc()
            error = f"invalid_event: {exc}" if isinstance(exc, EventError) else f"invalid_json: {exc}"
            item = Item(partition, rec.offset, rec.key, raw, None)
            self._spawn(self._dead_letter_invalid(item, error))
            return
        if not selected(event, self.cfg.types):
            self.metrics.events.labels("ignored").inc()
            self.progress.done(partition, rec.offset)
            return
        self.metrics.events.labels("selected").inc()
        item = Item(partition, rec.offset, rec.key, raw, event)
        queue = self._queues.get(event.tenant_id)
        if queue is None:
            queue = self._queues[event.tenant_id] = collections.deque()
            self._tasks[event.tenant_id] = asyncio.create_task(self._drain(event.tenant_id, queue))
        queue.append(item)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _commit(self) -> None:
        """Step 7: commit, per partition, the offset below which every record is done."""
        from aiokafka import TopicPartition
        from aiokafka.errors import KafkaError

        points = self.progress.committable()
        if not points or self.consumer is None:
            return
        assigned = {tp.partition for tp in self.consumer.assignment()}
        points = {p: o for p, o in points.items() if p in assigned}
        if not points:
            return
        try:
            await self.consumer.commit({TopicPartition(self.cfg.topic_events, p): o for p, o in points.items()})
        except KafkaError as exc:  # a rebalance under way: the next commit carries it
            log.warning("commit of %s not done: %s", points, exc)
            return
        self.progress.committed(points)

    def _gauges(self) -> None:
        self.metrics.in_flight.set(self.progress.in_flight())
        self.metrics.tenant_queues.set(len(self._queues))
        if self.contacts is not None:
            self.metrics.contacts_problems.set(len(self.contacts.loaded_problems))

    # ------------------------------------------------------------------ one tenant's queue

    async def _drain(self, tenant: str, queue: collections.deque[Item]) -> None:
        """Step 3: this tenant's events, one at a time, in the order they were read."""
        try:
            while queue and not self._stopping.is_set():
                item = queue[0]
                if not await self._handle(item):
                    return  # stopping: the event stays undone and is read again after a restart
                queue.popleft()
                self.progress.done(item.partition, item.offset)  # step 6
        except Exception as exc:  # the store failed (disk full?): stop rather than hold offsets forever
            log.exception("notifications of %s stopped: %s; rater notify stops", tenant, exc)
            self.failed = f"{type(exc).__name__}: {exc}"
            self._stopping.set()
        finally:
            if self._queues.get(tenant) is queue:
                del self._queues[tenant]
                del self._tasks[tenant]

    async def _handle(self, item: Item) -> bool:
        event = item.event
        assert event is not None
        if self.email is not None and self.contacts is not None:
            recipients = self.contacts.current().for_tenant(event.tenant_id)
            if recipients:
                if not await self._deliver(item, "email", lambda done: self.email.send(event, recipients, done)):
                    return False
            else:
                self.metrics.no_recipients.inc()
        if self.webhook is not None:
            if not await self._deliver(item, "webhook", lambda done: self.webhook.send(event, item.raw, done)):
                return False
        return True

    async def _deliver(self, item: Item, channel: str, send: Any) -> bool:
        """Steps 3 to 5 for one channel. False only when the process is stopping."""
        event = item.event
        assert event is not None
        if self.store.outcome(event.event_id, channel) is not None:  # step 3
            self.metrics.duplicates.labels(channel).inc()
            return True
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()

            def accepted() -> None:  # step 4, run by the channel as soon as the server said yes
                self.store.record(event.event_id, channel, SENT)

            try:
                await send(accepted)  # step 4
            except DeliveryError as exc:
                if exc.permanent or attempt >= self.cfg.attempts:  # step 5
                    log.warning(
                        "%s %s of %s: %s after %d tr%s; to %s",
                        channel,
                        event.event_id,
                        event.tenant_id,
                        exc,
                        attempt,
                        "y" if attempt == 1 else "ies",
                        self.cfg.topic_dead_letter,
                    )
                    if not await self._dead_letter_until_written(item, channel, str(exc), attempt):
                        return False
                    self.store.record(event.event_id, channel, DEAD_LETTERED)
                    self.metrics.dead_lettered.labels(channel).inc()
                    return True
                self.metrics.retried.labels(channel).inc()
                delay = backoff_delay(attempt, self.cfg.backoff, self.cfg.backoff_max)
                log.info("%s %s of %s: %s; try %d in %.1f s", channel, event.event_id, event.tenant_id, exc, attempt + 1, delay)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                    return False
                except asyncio.TimeoutError:
                    continue
            self.metrics.delivery_seconds.labels(channel).observe(time.monotonic() - started)
            self.metrics.sent.labels(channel).inc()
            return True

    # ------------------------------------------------------------------ the dead letter

    async def _dead_letter(self, item: Item, channel: str | None, error: str, attempts: int) -> None:
        ev = item.event
        value: dict[str, Any] = {
            "event_id": ev.event_id if ev else None,
            "tenant_id": ev.tenant_id if ev else None,
            "type": ev.type if ev else None,
            "channel": channel,
            "error": error,
            "attempts": attempts,
            "failed_at": format_time(time.time_ns() // 1000),
            "source": {"topic": self.cfg.topic_events, "partition": item.partition, "offset": item.offset},
        }
        if ev is not None:
            value["event"] = ev.raw
        else:
            value["raw"] = item.raw.decode("utf-8", errors="replace")
        key = ev.tenant_id.encode() if ev else item.key
        fut = await self.producer.send(self.cfg.topic_dead_letter, key=key, value=orjson.dumps(value))
        await fut  # step 5: acknowledged by the broker

    async def _dead_letter_until_written(self, item: Item, channel: str | None, error: str, attempts: int) -> bool:
        """Step 5, tried again every second while the broker does not take it; False if stopping."""
        from aiokafka.errors import KafkaError

        while True:
            try:
                await self._dead_letter(item, channel, error, attempts)
                return True
            except KafkaError as exc:
                log.warning(
                    "dead letter of %s not written (%s); trying again", item.event.event_id if item.event else f"offset {item.offset}", exc
                )
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=1.0)
                return False
            except asyncio.TimeoutError:
                continue

    async def _dead_letter_invalid(self, item: Item, error: str) -> None:
        log.warning("invalid event at %s[%d]@%d: %s", self.cfg.topic_events, item.partition, item.offset, error)
        if not await self._dead_letter_until_written(item, None, error, 0):
            return
        self.metrics.dead_lettered.labels("none").inc()
        self.progress.done(item.partition, item.offset)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        self._stopping.set()

    async def _shutdown(self, grace: float = 15.0) -> None:
        """Let the sends under way finish (their tenants take no next event), commit, close."""
        self._stopping.set()
        pending = list(self._tasks.values()) + list(self._side_tasks)
        if pending:
            done, not_done = await asyncio.wait(pending, timeout=grace)
            for t in not_done:
                t.cancel()
        try:
            await self._commit()
        finally:
            await self.consumer.stop()
            await self.producer.stop()
            if self.webhook is not None:
                await self.webhook.close()


async def ensure_dead_letter_topic(cfg: NotifyConfig) -> None:
    """Create the dead-letter topic when missing, with the events topic's partition count
    (a broker may refuse to create topics on first use)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.broker, **cfg.kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if cfg.topic_dead_letter in existing:
            return
        partitions = 1
        if cfg.topic_events in existing:
            meta = await admin.describe_topics([cfg.topic_events])
            partitions = max(1, len(meta[0].get("partitions", []))) if meta else 1
        try:
            await admin.create_topics([NewTopic(cfg.topic_dead_letter, partitions, cfg.replication)])
            log.info("created topic %s with %d partition(s)", cfg.topic_dead_letter, partitions)
        except TopicAlreadyExistsError:
            pass
    finally:
        await admin.close()


# ---------------------------------------------------------------------- HTTP and main


async def start_web(notifier: Notifier, host: str, port: int) -> web.AppRunner:
    async def healthz(_request: web.Request) -> web.Response:
        body = {
            "status": "ok",
            "consuming": notifier.started,
            "in_flight": notifier.progress.in_flight(),
            "tenant_queues": len(notifier._queues),
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def metrics(_request: web.Request) -> web.Response:
        notifier._gauges()
        return web.Response(body=generate_latest(notifier.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def main_async(cfg: NotifyConfig, contacts: ContactsFile | None) -> int:
    import os

    store = DedupStore(os.path.join(cfg.state_dir, "handled.sqlite"), cfg.horizon_days * 86400)
    pruned = store.prune()
    notifier = Notifier(cfg, store, contacts)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, notifier.stop)
    runner = await start_web(notifier, cfg.web_host, cfg.web_port)
    channels = [c for c, on in (("email", notifier.email), ("webhook", notifier.webhook)) if on]
    log.info(
        "rater notify: %s from %s (group %s), types %s, channels %s, %d handled id(s) kept (%d pruned), http://%s:%d/healthz",
        cfg.topic_events,
        cfg.broker,
        cfg.group_id,
        ",".join(sorted(cfg.types)),
        ",".join(channels),
        store.count(),
        pruned,
        cfg.web_host,
        cfg.web_port,
    )
    try:
        await notifier.run()
    finally:
        await runner.cleanup()
        store.close()
    if notifier.failed:
        print(f"rater: notify: {notifier.failed}", file=sys.stderr)
        return 1
    return 0


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def run(cfg: NotifyConfig) -> int:
    setup_logging(cfg.log_format, cfg.log_level)
    contacts = None
    if cfg.contacts:
        try:
            contacts = ContactsFile(cfg.contacts)
        except ContactsError as exc:
            for p in exc.problems:
                print(f"rater: {p}", file=sys.stderr)
            return 2
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(main_async(cfg, contacts))
    except KafkaError as exc:  # unreachable broker, refused credentials: one line, no traceback
        why = " ".join(str(exc).split())
        print(f"rater: notify: cannot use Kafka at {cfg.broker}: {type(exc).__name__}: {why}"[:600], file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:  # the HTTP port taken, the state dir not writable
        print(f"rater: notify: {exc}", file=sys.stderr)
        return 2
