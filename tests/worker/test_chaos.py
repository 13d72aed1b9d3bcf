"""The kill loop at a small size (the full size is `make chaos`): see tests/support/chaos.py."""

import pytest

from tests.support.chaos import run_kill_loop


@pytest.mark.kafka
def test_a_worker_killed_and_restarted_charges_every_call_exactly_once(kafka_broker, tmp_path):
    report = run_kill_loop(kafka_broker.bootstrap, records=6000, tenants=120, kills=3, seed=11, workdir=str(tmp_path / "chaos"))
    assert report.kills == 3
    assert report.mismatches == []


@pytest.mark.kafka
def test_a_worker_killed_and_restarted_on_new_disks_charges_every_call_exactly_once(kafka_broker, tmp_path):
    """Every restart on an empty state dir: the accounts come back from the changelog, read
    in bulk (rater/worker/catchup.py; from 100 records behind, as this small stream's
    changelog holds fewer than the default 1,000), and a kill during a start leaves a
    store read part of the way."""
    report = run_kill_loop(
        kafka_broker.bootstrap,
        records=6000,
        tenants=120,
        kills=3,
        seed=12,
        workdir=str(tmp_path / "chaos"),
        new_disk=1.0,
        worker_args=("--bulk-recovery-least", "100"),
    )
    assert (report.kills, report.new_disks) == (3, 3)
    assert report.bulk_reads >= 1
    assert report.mismatches == []
