"""Offsets to commit (rater/notify/progress.py), the store of handled ids
(rater/notify/dedup.py) and the backoff of retries."""

from __future__ import annotations

from rater.notify.dedup import DEAD_LETTERED, SENT, DedupStore
from rater.notify.progress import PartitionProgress
from rater.notify.service import backoff_delay


def test_the_commit_point_is_the_lowest_offset_still_in_flight():
    p = PartitionProgress()
    for off in (10, 11, 12, 13):
        p.taken(0, off)
    p.taken(1, 5)
    assert p.committable() == {0: 10, 1: 5}
    p.committed({0: 10, 1: 5})
    assert p.committable() == {}
    p.done(0, 11)
    p.done(0, 13)  # later records of other tenants done first: nothing moves
    assert p.committable() == {}
    p.done(0, 10)
    assert p.committable() == {0: 12}
    p.done(0, 12)
    p.done(1, 5)
    assert p.committable() == {0: 14, 1: 6}
    p.committed({0: 14, 1: 6})
    assert p.in_flight() == 0
    assert p.committable() == {}


def test_revoked_partitions_are_forgotten():
    p = PartitionProgress()
    p.taken(0, 1)
    p.taken(2, 7)
    p.forget({2})
    assert p.committable() == {0: 1}
    assert p.in_flight() == 1


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_delay(n, 1.0, 10.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert backoff_delay(1, 0.25, 60) == 0.25


def test_handled_ids_survive_reopening_and_are_pruned_after_the_horizon(tmp_path):
    path = str(tmp_path / "state" / "handled.sqlite")
    store = DedupStore(path, horizon_seconds=7 * 86400)
    store.record("e1", "email", SENT, at=1_000_000.0)
    store.record("e1", "webhook", DEAD_LETTERED, at=1_000_000.0)
    store.record("e2", "email", SENT, at=1_000_000.0 + 86400)
    store.close()

    store = DedupStore(path, horizon_seconds=7 * 86400)
    assert store.outcome("e1", "email") == SENT
    assert store.outcome("e1", "webhook") == DEAD_LETTERED
    assert store.outcome("e2", "webhook") is None
    # 7 days and 1 s after e1: e1's rows go, e2 (a day younger) stays.
    assert store.prune(now=1_000_000.0 + 7 * 86400 + 1) == 2
    assert store.outcome("e1", "email") is None
    assert store.outcome("e2", "email") == SENT
    store.close()
