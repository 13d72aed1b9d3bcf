"""Input records in bulk, straight from faust's aiokafka consumer.

Faust keeps what it is good at: group membership, the co-partitioned assignment of the
input topics and the ``accounts`` table, table recovery from the changelog, standbys and
the web server. What it does not do any more is deliver the input records one event at
a time: faust turns each record into a message, an event and a trip through a channel
and a stream, which caps an agent that does nothing at 3,000-5,000 events a second on
this machine (``scripts/faust_ceiling.py``), and its drain loop drops records whose
offset is below its read offset, which lost whole runs of records after a changelog
replay (``docs/fault-tests.md``).

``BulkConsumer`` is faust's own aiokafka consumer with one change: the records that
aiokafka fetched for the input topics are taken out of each fetch before faust sees
them and handed, as aiokafka returned them (a list per partition), to the worker
(``RaterWorker.take``). Faust handles the rest of the fetch (changelog records while
recovering, standby updates) as before. Its agent on the input topics stays, so faust
still subscribes to them and assigns them with the table; it never gets an event.

The worker checks every run of records for continuity (``rater/core/continuity.py``) and
commits offsets itself, after its commit protocol; faust, which never sees these
records, acks and commits nothing for them.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Optional

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer

BulkHandler = Callable[[Mapping[Any, list], int], Awaitable[None]]
StopHandler = Callable[[], Awaitable[None]]

# How long the broker may hold a fetch that finds no new data. faust sets 1,500 ms. A fetch
# names every assigned partition without buffered records (the changelog's too, which
# have nothing new), so while the worker works through one fetch the next one sits at the
# broker for the whole wait, and the worker stalls for it when the buffer runs dry: about
# 1.5 s for every ~6,000 records in a backlog (measured). 50 ms keeps the stall short and
# costs an idle worker about 20 empty fetches a second.
FETCH_MAX_WAIT_MS = 50


class _Thread(AIOKafkaConsumerThread):
    def _create_consumer(self, loop):  # type: ignore[override]
        consumer = super()._create_consumer(loop)
        # Both read by start(), which builds the fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        # A platform that publishes CDRs in Kafka transactions expects an aborted one not
        # to be charged; faust reads committed records only in its exactly-once mode.
        consumer._isolation_level = "read_committed"
        return consumer


class BulkConsumer(Consumer):
    bulk_topics: frozenset[str] = frozenset()
    bulk_handler: Optional[BulkHandler] = None
    stop_handler: Optional[StopHandler] = None

    async def on_stop(self) -> None:
        # Before faust's own stop, while the group membership and the consumer thread
        # still stand: the worker commits what its finished batches reached.
        if self.stop_handler is not None:
            await self.stop_handler()
        await super().on_stop()

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _Thread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float):  # type: ignore[override]
        generation = self.app.consumer_generation_id
        records, active = await super()._wait_next_records(timeout)
        handler = self.bulk_handler
        if records and handler is not None:
            topics = self.bulk_topics
            bulk = {tp: recs for tp, recs in records.items() if tp.topic in topics and recs}
            if bulk:
                records = {tp: recs for tp, recs in records.items() if tp.topic not in topics}
                await handler(bulk, generation)
        return records, active


def install(app: Any, topics: frozenset[str], handler: BulkHandler, on_stop: StopHandler) -> None:
    """Make ``app`` build its consumer as a ``BulkConsumer`` feeding ``handler``, and
    calling ``on_stop`` when it stops. Must run before the app creates its consumer
    (that is, before it starts)."""
    cls = type("RaterBulkConsumer", (BulkConsumer,), {
        "bulk_topics": topics, "bulk_handler": staticmethod(handler), "stop_handler": staticmethod(on_stop)})  # fmt: skip
    app.transport.Consumer = cls
