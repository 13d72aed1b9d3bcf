"""The demo's live view (rater/demo.py) from a worker's metrics: counts that add up."""

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from rater.demo import Snapshot, _recharge_line, parse_metrics
from rater.metrics import WorkerStats


def _snapshot(events: list[dict]) -> Snapshot:
    registry = CollectorRegistry()
    stats = WorkerStats(registry)
    for e in events:
        stats.tally.count_event(e)
    return Snapshot(parse_metrics(generate_latest(registry).decode()))


def test_auto_recharge_counts_add_up_with_expired_cards_apart():
    # 40 requests: 35 paid, 3 declined, 1 timed out, 1 waiting; 10 refusals for an expired
    # card, which made no request. balance-events counts 14 auto_recharge_failed.
    events = ([{"type": "auto_recharge_requested"}] * 40 + [{"type": "auto_recharge_succeeded"}] * 35
              + [{"type": "auto_recharge_failed", "reason": "declined"}] * 3
              + [{"type": "auto_recharge_failed", "reason": "timeout"}]
              + [{"type": "auto_recharge_failed", "reason": "card_expired"}] * 10)  # fmt: skip
    snap = _snapshot(events)
    assert snap.events["auto_recharge_failed"] == 14
    assert snap.recharge_failures == {"card_expired": 10, "declined": 3, "timeout": 1}
    assert _recharge_line(snap.events, snap.recharge_failures) == (
        "40 requested: 35 succeeded, 4 failed, 1 pending; 10 not requested (card expired)")


def test_the_failures_metric_is_served_by_reason():
    registry = CollectorRegistry()
    stats = WorkerStats(registry)
    stats.tally.count_event({"type": "auto_recharge_failed", "reason": "card_expired"})
    text = generate_latest(registry).decode()
    assert 'rater_auto_recharge_failures_total{reason="card_expired"} 1.0' in text.splitlines()
