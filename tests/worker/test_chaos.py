"""The kill loop at a small size (the full size is `make chaos`): see tests/support/chaos.py."""

import pytest

from tests.support.chaos import run_kill_loop


@pytest.mark.kafka
def test_a_worker_killed_and_restarted_charges_every_call_exactly_once(kafka_broker, tmp_path):
    report = run_kill_loop(kafka_broker.bootstrap, records=6000, tenants=120, kills=3, seed=11, workdir=str(tmp_path / "chaos"))
    assert report.kills == 3
    assert report.mismatches == []
