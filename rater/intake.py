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
(``RaterWorker.take``), which queues them and returns: aiokafka asks the broker for a
partition's next records only once its buffered ones are taken, so taking them at once
keeps a fetch in flight while the worker rates. Faust handles the rest of the fetch (changelog records while
recovering, standby updates) as before. Its agent on the input topics stays, so faust
still subscribes to them and assigns them with the table; it never gets an event.

The worker checks every run of records for continuity (``rater/offsets.py``) and
commits offsets itself, after its commit protocol; faust, which never sees these
records, acks and commits nothing for them.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Optional

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer

# (records per partition, consumer generation, the fetch's seek stamp: see _Thread)
BulkHandler = Callable[[Mapping[Any, list], int, int], Awaitable[None]]
StopHandler = Callable[[], Awaitable[None]]

# How long the broker may hold a fetch, and how much data answers it at once. faust sets
# 1,500 ms and 1 byte. A fetch names every assigned partition without buffered records
# (the changelog's too, which have nothing new); with 1,500 ms the worker stalled for the
# wait whenever its buffer ran dry, about 1.5 s for every ~6,000 records of a backlog
# (measured). Since the worker takes every fetch at once (``RaterWorker.take``), the next
# fetch is always at the broker: with 1 byte each fetch would come back with the one or
# two records that arrived meanwhile, thousands of tiny fetches a second under load. So a
# fetch waits for 16 KiB (about 50 CDRs) or 20 ms, whichever comes first: at most 20 ms
# added to a record's latency, and an idle worker makes about 50 empty fetches a second.
FETCH_MAX_WAIT_MS = 20
FETCH_MIN_BYTES = 16 * 1024


class _Thread(AIOKafkaConsumerThread):
    """Faust's consumer thread, which also stamps seeks and fetches.

    The worker takes records out of faust's fetch loop and queues them, so a seek can
    happen while records taken before it still wait in the queue. Both seeks and the
    taking of records out of aiokafka's buffer run on this thread's loop; each seek
    counts one up (``seeks``) and notes the count per partition (``sought``), and each
    take notes the count it saw (``stamp``). Records of a partition with a stamp below
    its ``sought`` were taken before that seek (the worker drops them: the seek fetches
    again from where it asked); records with a stamp at or above it, after the seek.
    """

    seeks = 0
    stamp = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sought: dict[Any, int] = {}

    async def _seek_wait(self, consumer, partitions):  # type: ignore[override]
        self.seeks += 1  # in the same step of this loop as the seeks themselves
        for tp in partitions:
            self.sought[tp] = self.seeks
        await super()._seek_wait(consumer, partitions)

    async def _fetch_records(self, consumer, active_partitions, timeout=None, max_records=None):  # type: ignore[override]
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout, max_records=max_records)
        self.stamp = self.seeks  # in the same step as aiokafka handed the records over
        return records

    def _create_consumer(self, loop):  # type: ignore[override]
        consumer = super()._create_consumer(loop)
        # Both read by start(), which builds the fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
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

    @property
    def sought(self) -> Mapping[Any, int]:
        """Per partition, the stamp of its last seek (see ``_Thread``)."""
        return self._thread.sought  # type: ignore[attr-defined]

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
                await handler(bulk, generation, self._thread.stamp)  # faust fetches one at a time
        return records, active


def install(app: Any, topics: frozenset[str], handler: BulkHandler, on_stop: StopHandler) -> None:
    """Make ``app`` build its consumer as a ``BulkConsumer`` feeding ``handler``, and
    calling ``on_stop`` when it stops. Must run before the app creates its consumer
    (that is, before it starts)."""
    cls = type("RaterBulkConsumer", (BulkConsumer,), {
        "bulk_topics": topics, "bulk_handler": staticmethod(handler), "stop_handler": staticmethod(on_stop)})  # fmt: skip
    app.transport.Consumer = cls
