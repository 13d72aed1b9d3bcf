"""Prometheus metrics of `rater notify`, in a registry of their own (served on its port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NotifyMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter(
            "rater_notify_events_total",
            "Balance events read, by what became of them (selected, ignored: type not configured, invalid)",
            ["outcome"],
            registry=r,
        )
        self.sent = Counter("rater_notify_sent_total", "Notifications delivered", ["channel"], registry=r)
        self.retried = Counter("rater_notify_retried_total", "Failed tries that were tried again", ["channel"], registry=r)
        self.dead_lettered = Counter(
            "rater_notify_dead_lettered_total",
            "Events written to the dead-letter topic (channel none: invalid event)",
            ["channel"],
            registry=r,
        )
        self.duplicates = Counter(
            "rater_notify_duplicates_total", "Deliveries skipped because the event id was already handled", ["channel"], registry=r
        )
        self.no_recipients = Counter("rater_notify_no_recipients_total", "Selected events of a tenant without an email contact", registry=r)
        self.delivery_seconds = Histogram(
            "rater_notify_delivery_seconds",
            "Time of one successful delivery try",
            ["channel"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge("rater_notify_in_flight", "Events read and not yet handled", registry=r)
        self.tenant_queues = Gauge("rater_notify_tenant_queues", "Tenants with notifications waiting or being sent", registry=r)
        self.contacts_problems = Gauge(
            "rater_notify_contacts_problems",
            "Problems of the contacts file's last edit (0: the file in use is the file on disk)",
            registry=r,
        )
        for ch in ("email", "webhook"):
            for c in (self.sent, self.retried, self.dead_lettered, self.duplicates):
                c.labels(ch)
        self.dead_lettered.labels("none")
        for o in ("selected", "ignored", "invalid"):
            self.events.labels(o)
