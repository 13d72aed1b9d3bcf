"""The demo's live view (rater/dev/demo.py) from a worker's metrics: counts that add up."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from rater.dev.demoview import Snapshot, _recharge_line, parse_metrics
from rater.worker.metrics import WorkerStats

ROOT = Path(__file__).resolve().parents[2]


def _snapshot(events: list[dict]) -> Snapshot:
    registry = CollectorRegistry()
    stats = WorkerStats(registry)
    for e in events:
        stats.tally.count_event(e)
    return Snapshot(parse_metrics(generate_latest(registry).decode()))


def test_auto_recharge_counts_add_up_with_expired_cards_apart():
    # 40 requests: 35 paid, 3 declined, 1 timed out, 1 waiting; 10 refusals for an expired
    # card, which made no request. balance-events counts 14 auto_recharge_failed.
    events = (
        [{"type": "auto_recharge_requested"}] * 40
        + [{"type": "auto_recharge_succeeded"}] * 35
        + [{"type": "auto_recharge_failed", "reason": "declined"}] * 3
        + [{"type": "auto_recharge_failed", "reason": "timeout"}]
        + [{"type": "auto_recharge_failed", "reason": "card_expired"}] * 10
    )
    snap = _snapshot(events)
    assert snap.events["auto_recharge_failed"] == 14
    assert snap.recharge_failures == {"card_expired": 10, "declined": 3, "timeout": 1}
    assert _recharge_line(snap.events, snap.recharge_failures) == (
        "40 requested: 35 succeeded, 4 failed, 1 pending; 10 not requested (card expired)"
    )


def test_the_failures_metric_is_served_by_reason():
    registry = CollectorRegistry()
    stats = WorkerStats(registry)
    stats.tally.count_event({"type": "auto_recharge_failed", "reason": "card_expired"})
    text = generate_latest(registry).decode()
    assert 'rater_auto_recharge_failures_total{reason="card_expired"} 1.0' in text.splitlines()


@pytest.mark.kafka
def test_make_demo_runs_a_broker_a_worker_and_traffic_and_every_cdr_is_accounted_for():
    """``make demo`` end to end, short (``--plain --duration 8``): its own broker, a worker,
    rater notify and the simulator. Every CDR the simulator sent is applied, rejected or a
    duplicate in the worker's counts (the summary's two lines add up)."""
    proc = subprocess.run(
        [sys.executable, "-m", "rater.dev.demo", "--plain", "--duration", "8"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "rater demo: worker ready" in out
    sent = re.search(r"simulator +done: \d+s, ([\d,]+) CDRs", out)
    counted = re.search(r"\n  cdrs +([\d,]+) applied, ([\d,]+) rejected, ([\d,]+) duplicate", out)
    assert sent and counted, out[-3000:]
    n = [int(g.replace(",", "")) for g in counted.groups()]
    assert int(sent.group(1).replace(",", "")) == sum(n) > 0
    assert "Traceback" not in out
