"""The wall-clock sweep: lots that expire and recharge requests that time out while no
record of their tenant arrives.

It follows steps 2 to 4 of the commit protocol (``rater/worker/pipeline.py``) for the
accounts due, under the pipeline's lock and after the batch in flight, so it never
interleaves with a batch. Only on partitions with no backlog: a record still waiting in
Kafka may have happened before the expiry, and must be charged against the lot first (as
event time would have it). After a rebalance it rebuilds the account store's tenant
index (``rater/worker/tenants.py``) from the table.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import orjson

from rater.core import applied, ledger
from rater.core.batch import BatchResult, Topics
from rater.core.idsegments import is_segment_key
from rater.core.partitioning import partition_for
from rater.core.routing import outputs_of
from rater.worker.metrics import WorkerStats
from rater.worker.pipeline import CommitPipeline

log = logging.getLogger("rater")


class Sweeper:
    def __init__(self, pipeline: CommitPipeline, port: Any, topics: Topics, partitions: int, stats: WorkerStats, lag: Callable[[], list]):
        self.pipeline = pipeline
        self.store = pipeline.store
        self.port = port  # active(), table_items(owned)
        self.topics = topics
        self.partitions = partitions
        self.stats = stats
        self.lag = lag
        self.rescan = True

    async def index(self) -> None:
        async with self.pipeline.lock:
            await self.pipeline.drain()  # the rescan reads the store
            if self.rescan:
                self._rescan({tp.partition for tp in self.port.active()})

    async def sweep(self) -> None:
        """Expire and time out on the wall clock, only on partitions with no backlog."""
        pipeline, store = self.pipeline, self.store
        async with pipeline.lock:
            await pipeline.drain()  # the sweep's own writes follow the batch's; the rescan reads the store
            owned = {tp.partition for tp in self.port.active()}
            if self.rescan:
                self._rescan(owned)
            behind = {partition for _topic, partition, lag in self.lag() if lag > 0}
            owned -= behind
            now = time.time_ns() // 1000
            due = store.index.due_by(now)
            if not due:
                return
            result = BatchResult()
            t = self.topics
            for tenant in due:
                partition = partition_for(tenant.encode(), self.partitions)
                if partition in behind:
                    continue  # due, but its partition has a backlog: next sweep
                if partition not in owned:
                    store.index.forget_due(tenant)
                    continue
                acct = store.load(tenant)
                if acct is None:
                    store.index.forget_due(tenant)
                    continue
                out = ledger.sweep(acct, now)
                if out is None:
                    store.note(tenant, acct)
                    continue
                key = tenant.encode()
                for kind, body in outputs_of(out):  # rater/core/routing.py
                    result.outputs.append((getattr(t, kind), key, orjson.dumps(body)))
                for e in out.events:
                    self.stats.tally.count_event(e)
                result.accounts[tenant] = (partition, acct)
            writes = pipeline.plan(result)
            pipeline.hand_over(writes, result.accounts)
            await pipeline.drain()
            if result.accounts:
                log.info("sweep settled %d account(s)", len(result.accounts))

    def _rescan(self, owned: set[int]) -> None:
        """After a rebalance: rebuild the tenant index of owned partitions."""
        self.rescan = False
        store = self.store
        store.index.clear()
        n = 0
        for key, value in self.port.table_items(owned):
            if value is None or key.startswith(b"__faust") or is_segment_key(key) or applied.is_mark_key(key):
                continue  # faust keeps its offsets here too; id segments and applied marks are not accounts
            tenant = key.decode()
            if partition_for(key, self.partitions) not in owned:
                continue
            store.note_stored(tenant, value)
            n += 1
        log.info("indexed %d account(s) of partitions %s", n, sorted(owned))
