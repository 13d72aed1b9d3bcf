"""``rater worker``: the core driven by Kafka, in a faust-streaming app.

Faust runs the group membership, the co-partitioned assignment of both input topics
(``cdrs`` and ``tenant-commands``) with the ``accounts`` table, table recovery, standbys
and the web views. The input records themselves come to the commit pipeline in bulk,
straight from faust's aiokafka consumer (``rater/worker/adapter.py``).

``RaterWorker`` only wires the parts together, each in its own module:

- ``pipeline.CommitPipeline``: the commit protocol (steps 1-5, the replay marks, the
  batch lock, positions, the hand-over), with its theory of operation;
- ``plan.plan_writes``: every write of a batch, pure;
- ``store.AccountStore``: the account cache, the in-flight overlay, the id segments
  (``store.NativeAccountStore`` for the native engine: the accounts held natively);
- ``sweeper.Sweeper``: the wall-clock sweep; ``ratewatch.RateTableWatcher``: reloads;
  ``watchdog.StallWatch``: a rebalance or recovery that stopped moving ends the process;
  ``catchup.CatchUp``: changelog partitions far behind read into the store in bulk;
  ``heaptrim.HeapTrim``: when work pauses, the store's write buffers flushed and the
  freed heap given back;
- ``web``: the HTTP views; ``adapter``: every private faust/aiokafka touch;
- ``connection``: the Kafka connection settings; ``config``, ``metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import faust
from prometheus_client.registry import CollectorRegistry

from rater.connection import broker_credentials, client_kwargs
from rater.core.batch import BatchProcessor
from rater.core.native_engine import EngineUnavailable, NativeBatchProcessor
from rater.core.native_engine import choose as choose_engine
from rater.core.rates import RateTables, check_rate_tables
from rater.jsonlog import JsonFormatter
from rater.worker import adapter, gctune, heaptrim, watchdog, web
from rater.worker.catchup import CatchUp
from rater.worker.config import WorkerConfig
from rater.worker.metrics import WorkerStats
from rater.worker.pipeline import COMMIT_EVERY, CommitPipeline, die
from rater.worker.ratewatch import RateTableWatcher
from rater.worker.store import AccountStore, NativeAccountStore
from rater.worker.sweeper import Sweeper

log = logging.getLogger("rater")


def rocksdb_options(cfg: WorkerConfig) -> dict:
    """Per partition database. faust's defaults are 3 write buffers of 64 MiB and a 2 GiB
    block cache for *each* partition, so RSS grows with write volume up to gigabytes; these
    bound the worker's RocksDB memory to partitions x (2 x write buffer + block cache), by
    default 8 x (2 x 8 + 16) MiB. Accounts are read from the worker's own cache first, so
    the block cache only serves cache misses."""
    return {
        "write_buffer_size": cfg.rocksdb_write_buffer_mib << 20,
        "max_write_buffer_number": 2,
        "block_cache_size": cfg.rocksdb_block_cache_mib << 20,
    }


class RaterWorker:
    """The parts of ``rater worker``, wired to one faust app."""

    def __init__(self, cfg: WorkerConfig, tables: RateTables):
        self.cfg = cfg
        self.registry = CollectorRegistry(auto_describe=True)
        self.stats = WorkerStats(self.registry)
        self.stats.rate_tables_version = tables.version
        self.stats.rate_tables_loaded_at = time.time()
        self.heap = heaptrim.HeapTrim(heaptrim.libc_trim(), rest=self._rest)
        self.app = self._build_app()
        inputs = frozenset((cfg.topics.cdrs, cfg.topics.commands))
        self.catchup = CatchUp(cfg, least=cfg.bulk_recovery_least)  # rater/worker/catchup.py
        if cfg.store == "rocksdb":
            adapter.keep_rocksdb_options(self.accounts)
            adapter.recover_in_bulk(self.app, self.accounts, self.catchup)
        self.port = adapter.FaustPort(self.app, self.accounts, inputs, cfg)
        # The rating core, both behind BatchProcessor's interface: the native one when it
        # is built (its accounts held natively by its store), else the Python one.
        self.engine_name = choose_engine(cfg.engine)
        if self.engine_name == "native":
            adapter.fetch_natively(inputs)  # input records as rater_native.Records
            self.store = NativeAccountStore(self.port, cfg.partitions, cfg.account_cache, account_format=cfg.account_format)
            self.processor = NativeBatchProcessor(tables, cfg.partitions, cfg.topics, self.store, max_record_bytes=cfg.max_record_bytes)
        else:
            self.store = AccountStore(self.port, cfg.partitions, cfg.account_cache, account_format=cfg.account_format)
            self.processor = BatchProcessor(tables, cfg.partitions, cfg.topics, self.store.load, max_record_bytes=cfg.max_record_bytes)
        self.processor.engine.tally = self.stats.tally
        self.pipeline = CommitPipeline(self.port, self.store, self.processor, self._on_batch)
        self.sweeper = Sweeper(self.pipeline, self.port, cfg.topics, cfg.partitions, self.stats, self._lag)
        self.rates = RateTableWatcher(cfg.rates_dir, self.processor, self.stats)
        self.stall = watchdog.StallWatch(cfg.recovery_stall_timeout)
        self._stall_task: asyncio.Future | None = None
        standbys = adapter.standbys_in_bulk(self.app, self.accounts) if cfg.store == "rocksdb" else None
        adapter.install(self.app, inputs, self.pipeline.take, self._watch_stalls, self.pipeline.on_stop, standbys)
        self.stats.changelog_bulk = lambda: {"recovery": self.catchup.read, "standby": standbys.applied if standbys else 0}
        self._register()

    # --- the app ---------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        cfg = self.cfg
        host = cfg.advertised_host or cfg.web_host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        app = faust.App(
            cfg.app_id,
            broker=[f"kafka://{b.strip()}" for b in cfg.broker.split(",")],
            broker_credentials=broker_credentials(cfg),
            store="rocksdb://" if cfg.store == "rocksdb" else "memory://",
            datadir=cfg.state_dir,
            topic_partitions=cfg.partitions,
            topic_replication_factor=cfg.replication,
            topic_allow_declare=True,
            table_standby_replicas=cfg.standby_replicas,
            producer_acks=-1,
            consumer_auto_offset_reset="earliest",
            web_enabled=True,
            # Faust's own views (/router, /table/<name>/<key>/, /graph, /stats) would show
            # raw table data and internals to anyone who reaches the port: only ours are served.
            web_router_enabled=False,
            web_tables_enabled=False,
            web_graph_enabled=False,
            web_stats_enabled=False,
            web_bind=cfg.web_host,
            web_port=cfg.web_port,
            web_host=host,
            canonical_url=f"http://{host}:{cfg.web_port}",
            broker_commit_interval=1.0,
            # One fetch is one batch of the commit protocol (``take``): up to batch_size records.
            broker_max_poll_records=max(cfg.batch_size, 1),
            consumer_max_fetch_size=8 * 1024 * 1024,
            # A worker that died is noticed in 10 s, not faust's default 60 s, so its
            # partitions move to the restarted or surviving worker quickly.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=2.0,
            stream_wait_empty=True,
            autodiscover=False,
            loghandlers=[_json_handler()] if cfg.log_format == "json" else [],
            # JSON: ours is the only handler (mode's own text handler would log every line twice).
            logging_config=_only_added_handlers(cfg.log_level) if cfg.log_format == "json" else None,
        )
        t = cfg.topics
        self.inputs = app.topic(t.cdrs, t.commands, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.accounts = app.Table(
            "accounts",
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=cfg.partitions,
            use_partitioner=True,
            **({"options": rocksdb_options(cfg)} if cfg.store == "rocksdb" else {}),
        )
        return app

    def _register(self) -> None:
        app = self.app

        @app.agent(self.inputs, name="rate")
        async def rate(stream):
            # Subscribes faust to the inputs and co-partitions them with the table; the
            # records themselves reach the pipeline in bulk (``rater/worker/adapter.py``), so
            # an event here is a record that bypassed the commit protocol: stop, and replay it.
            async for event in stream.events():
                die(
                    70,
                    "input record %s/%d@%d reached faust's stream; stopping so it is replayed",
                    event.message.topic,
                    event.message.partition,
                    event.message.offset,
                )

        @app.on_partitions_revoked.connect
        async def on_partitions_revoked(sender, revoked, **kwargs):
            await self.pipeline.on_revoked(revoked)

        @app.timer(interval=self.cfg.sweep_interval)
        async def sweep_timer():
            try:
                await self.sweeper.sweep()
            except asyncio.CancelledError:
                self.store.clear_cache()
                raise
            except Exception:
                # Its accounts may be changed in memory and not written: forget them, so
                # the next batch or sweep starts from the store (the sweep runs again).
                self.store.clear_cache()
                log.exception("wall-clock sweep failed; it runs again in %.0f s", self.cfg.sweep_interval)

        @app.timer(interval=COMMIT_EVERY)
        async def commit_timer():
            await self.pipeline.commit_timer()

        @app.timer(interval=heaptrim.IDLE)
        async def heap_timer():
            await self.heap.tick()

        @app.timer(interval=self.cfg.reload_interval)
        async def reload_timer():
            self.rates.maybe_reload()

        @app.task
        async def on_start():
            gctune.freeze_startup()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.rates.request_reload)
            log.info(
                "worker started: broker %s, %d partitions, rate tables %s, %s engine, web http://%s:%d",
                self.cfg.broker,
                self.cfg.partitions,
                self.stats.rate_tables_version,
                self.engine_name,
                self.cfg.web_host,
                self.cfg.web_port,
            )

        @app.on_rebalance_complete.connect
        async def on_rebalance_complete(sender, **kwargs):
            self.sweeper.rescan = True
            self.store.forget()
            log.info("partitions assigned: %s", sorted({tp.partition for tp in self.port.active()}))
            asyncio.ensure_future(self.sweeper.index())

        self.stats.lag = self._lag
        self.stats.tenant_states = self.store.index.state_counts
        web.register(self)  # the views: rater/worker/web.py

    def _watch_stalls(self) -> None:
        """From the consumer's start (faust's timers start only after the first recovery):
        end the process when a rebalance or the table's recovery has stopped moving
        (``rater/worker/watchdog.py``)."""

        every = watchdog.check_every(self.cfg.recovery_stall_timeout)

        async def watch() -> None:
            while True:
                await asyncio.sleep(every)
                try:
                    _ok, reason = self.ready()
                    progress = (self.port.recovery_progress(), self.catchup.read)
                except Exception:  # faust's state between two steps of a rebalance: look again
                    log.debug("stall watch: no reading this time", exc_info=True)
                    continue
                stalled = self.stall.observe(time.monotonic(), reason, progress)
                if stalled is not None:
                    die(
                        watchdog.EXIT_CODE,
                        "not ready (%s) and no progress for %.0f s; changelog partitions still to read: %s; "
                        "exiting so that a restart recovers",
                        reason,
                        stalled,
                        watchdog.behind_text(self.port.recovery_behind),
                    )

        if self.cfg.recovery_stall_timeout > 0:
            self._stall_task = asyncio.ensure_future(watch())

    # --- what the parts report ----------------------------------------------------------------

    def _on_batch(self, writes: Any, seconds: float) -> None:
        self.heap.worked()
        self.stats.processing.observe_many(seconds, writes.messages)
        self.stats.records.update(writes.records)

    async def _rest(self) -> None:
        """The work paused: the store's write buffers flushed (``heaptrim``), on a thread,
        so the HTTP views and the next batch do not wait for the files."""
        flushed = await asyncio.to_thread(self.port.flush_store, heaptrim.REST_FLUSH_BYTES)
        if flushed:
            log.debug("work paused: flushed the write buffers of %d partition(s)", flushed)

    def _read(self, tenant: str):
        """An account to show (``GET /tenants/<id>``): as stored."""
        return self.store.read(tenant)

    def _lag(self):
        port = self.port
        out = []
        for tp in sorted(port.active()):
            high = port.highwater(tp)
            if high is None:
                continue
            pos = self.pipeline.positions.get((tp.topic, tp.partition))
            if pos is not None:
                done = pos + 1
            else:  # nothing processed since the start: count from the committed offset
                done = port.committed().get(tp) or 0
            out.append((tp.topic, tp.partition, max(high - done, 0)))
        return out

    def ready(self) -> tuple[bool, str]:
        app = self.app
        if app.rebalancing:
            return False, watchdog.REBALANCING
        recovery = app.tables.recovery
        if not recovery.completed.is_set():
            return False, watchdog.RECOVERING
        if not self.port.active() and not app.assignor.assigned_standbys():
            return False, "no partitions assigned"
        return True, "ready"


async def ensure_topics(cfg: WorkerConfig) -> None:
    """Create the input and output topics that do not exist, with the configured partitions."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**client_kwargs(cfg))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        t = cfg.topics
        wanted = [t.cdrs, t.commands, t.rated, t.events, t.requests, t.rejects]
        missing = [n for n in wanted if n not in existing]
        if missing:
            await admin.create_topics([NewTopic(n, cfg.partitions, cfg.replication) for n in missing])
            log.info("created topics %s with %d partitions", ", ".join(missing), cfg.partitions)
        # A topic just created may not be known to the broker's metadata yet: wait for
        # every partition to have a leader.
        deadline = time.monotonic() + 30
        while True:
            meta = await admin.describe_topics([t.cdrs, t.commands])
            counts = {m["topic"]: len(m["partitions"]) for m in meta}
            settled = all(
                m.get("error_code", 0) == 0 and m["partitions"] and all(p.get("leader", -1) >= 0 for p in m["partitions"]) for m in meta
            )
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        for name, n in counts.items():
            if n != cfg.partitions:
                raise SystemExit(
                    f"rater: topic {name} has {n} partitions, --partitions says {cfg.partitions}; "
                    "the input topics and the worker must agree"
                )
    finally:
        await admin.close()


def run(cfg: WorkerConfig) -> int:
    tables, problems = check_rate_tables(cfg.rates_dir)
    if tables is None:
        for p in problems:
            print(f"rater: {p}")
        print(f"rater: {cfg.rates_dir}: the rate tables do not load; not starting")
        return 2
    try:
        choose_engine(cfg.engine)
    except EngineUnavailable as exc:
        print(f"rater: {exc}")
        return 2
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its connection errors come back as the exception below
    try:
        asyncio.run(ensure_topics(cfg))
    except SystemExit:
        raise
    except Exception as exc:  # unreachable broker, refused credentials: one line, no traceback
        how = cfg.security_protocol
        if how.startswith("SASL"):
            how += f" {cfg.sasl_mechanism} as {cfg.sasl_username!r} (check the SASL username and password)"
        why = " ".join(str(exc).split())
        print(f"rater: cannot use Kafka at {cfg.broker} over {how}: {type(exc).__name__}: {why}"[:600])
        return 2
    finally:
        quiet.setLevel(level)
    gctune.tune()
    worker = RaterWorker(cfg, tables)
    fw = faust.Worker(worker.app, loglevel=cfg.log_level.upper(), quiet=True)
    fw.execute_from_commandline()
    return 0


def _only_added_handlers(level: str) -> dict:
    return {"version": 1, "disable_existing_loggers": False, "root": {"level": level.upper(), "handlers": []}}


def _json_handler() -> logging.Handler:
    handler = logging.StreamHandler()
    formatter = JsonFormatter()
    formatter.converter = time.gmtime  # type: ignore[assignment]
    handler.setFormatter(formatter)
    return handler
