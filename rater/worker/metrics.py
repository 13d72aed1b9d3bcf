"""Prometheus metrics of SPEC 10, exported from the worker's own integer counters.

The hot path only bumps ``collections.Counter`` entries (no locks, no floats); this
collector turns them into metric families when ``/metrics`` is scraped. Money is summed
in integer micro-units and divided once, at export: a Prometheus sample is a float by
definition, so ``rater_charged_total`` is for dashboards, never for accounting.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from rater.core.engine import Tally
from rater.core.money import MICRO
from rater.worker.tenants import STATES


class WorkerStats:
    def __init__(self, registry: CollectorRegistry):
        self.tally = Tally()
        self.records: Counter = Counter()  # (topic, outcome) -> n
        # tenants of the owned partitions by balance state (the store's tenant index)
        self.tenant_states: Callable[[], dict[str, int]] = lambda: dict.fromkeys(STATES, 0)
        self.lag: Callable[[], Iterable[tuple[str, int, int]]] = lambda: ()
        # changelog records written to the store in bulk, by path: "recovery" (read before
        # faust's recovery, rater/worker/catchup.py) and "standby" (adapter.StandbysInBulk)
        self.changelog_bulk: Callable[[], dict[str, int]] = lambda: {}
        self.rate_tables_version = ""
        self.rate_tables_loaded_at = 0.0
        self.processing = BatchHistogram(PROCESSING_BUCKETS)
        registry.register(_Collector(self))
        # The standard process_* (CPU, memory, open files, start time) and python_*
        # (version, garbage collections) families, as the default registry has them.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The body and content type for a scrape, negotiated from its Accept header as
    prometheus-client does: OpenMetrics for a scraper that asks for it, else the
    Prometheus text format 0.0.4."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


PROCESSING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BatchHistogram:
    """A histogram that observes a whole batch at once: the records of one fetch arrive
    together and are finished together, so they share one latency. prometheus-client's
    ``Histogram.observe`` takes a lock per call; at 30,000 records a second that was a
    measurable share of the worker's time for the same n observations."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe_many(self, seconds: float, n: int) -> None:
        if n <= 0:
            return
        i = bisect_left(self.buckets, seconds)
        self.counts[i] += n
        self.sum += seconds * n
        self.count += n

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        acc = 0
        buckets = []
        for bound, c in zip(self.buckets, self.counts):
            acc += c
            buckets.append((repr(float(bound)), acc))
        buckets.append(("+Inf", self.count))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.sum)


class _Collector:
    def __init__(self, stats: WorkerStats):
        self.stats = stats

    def describe(self):
        return []

    def collect(self):
        s = self.stats
        t = s.tally
        m = CounterMetricFamily("rater_records", "Input records by topic and outcome", labels=["topic", "outcome"])
        for (topic, outcome), n in sorted(s.records.items()):
            m.add_metric([topic, outcome], n)
        yield m
        m = CounterMetricFamily("rater_rejects", "Rejected records by reason", labels=["reason"])
        for reason, n in sorted(t.reasons.items()):
            m.add_metric([reason], n)
        yield m
        m = CounterMetricFamily("rater_charged", "Amount charged, in currency units", labels=["currency", "call_type"])
        for (currency, call_type), micro in sorted(t.charged.items()):
            m.add_metric([currency, call_type], micro / MICRO)
        yield m
        m = CounterMetricFamily("rater_billable_seconds", "Billable seconds of rated calls", labels=["call_type"])
        for call_type, n in sorted(t.billable.items()):
            m.add_metric([call_type], n)
        yield m
        m = CounterMetricFamily("rater_balance_events", "Balance events emitted by type", labels=["type"])
        for type_, n in sorted(t.events.items()):
            m.add_metric([type_], n)
        yield m
        m = CounterMetricFamily(
            "rater_auto_recharge_failures", "auto_recharge_failed events by reason (card_expired: no request was made)", labels=["reason"]
        )
        for reason, n in sorted(t.recharge_failures.items()):
            m.add_metric([reason], n)
        yield m
        g = GaugeMetricFamily("rater_tenants", "Tenants of this worker's partitions by balance state", labels=["state"])
        counts = s.tenant_states()
        for state in STATES:
            g.add_metric([state], counts.get(state, 0))
        yield g
        g = GaugeMetricFamily("rater_consumer_lag", "Records behind the end of each input partition", labels=["topic", "partition"])
        for topic, partition, lag in s.lag():
            g.add_metric([topic, str(partition)], lag)
        yield g
        m = CounterMetricFamily(
            "rater_changelog_bulk_records",
            "Changelog records written to the local store in bulk: read before table recovery, or for a standby partition",
            labels=["path"],
        )
        for path, n in sorted(s.changelog_bulk().items()):
            m.add_metric([path], n)
        yield m
        g = GaugeMetricFamily("rater_rate_tables_info", "The loaded rate tables (content hash)", labels=["version"])
        if s.rate_tables_version:
            g.add_metric([s.rate_tables_version], 1)
        yield g
        g = GaugeMetricFamily("rater_rate_tables_loaded_timestamp_seconds", "When the rate tables were loaded")
        g.add_metric([], s.rate_tables_loaded_at)
        yield g
        yield s.processing.family(
            "rater_processing_seconds", "Time from a record's arrival at the worker to its outputs acknowledged by Kafka"
        )
