"""Moving remembered ids out of the account (rater/idstore.py), without Kafka."""

from rater.idstore import SEGMENT_AT, IdSegments, SeenIds, segment_key
from rater.ledger import Account
from rater.timeutil import DAY


def _account(n_ids: int, at: int = 10 * DAY) -> Account:
    a = Account("big", "p", "USD")
    a.seen_cdrs = {f"c{i}": at for i in range(n_ids)}
    a.cdr_watermark = at
    return a


def test_ids_move_to_a_segment_only_once_they_were_durable():
    store: dict[bytes, bytes] = {}
    segs = IdSegments(store.get)
    acct = _account(SEGMENT_AT)
    durable = segs.wrap(acct)  # the ids of the stored account
    acct.seen_cdrs["new"] = 10 * DAY  # applied in this batch: not durable yet
    writes = segs.plan(acct, durable, horizon=7 * DAY)
    assert [k for k, _ in writes] == [segment_key("big", 0)]
    assert sorted(writes[0][1].decode().split("\n")) == sorted(f"c{i}" for i in range(SEGMENT_AT))
    assert dict(acct.seen_cdrs) == {"new": 10 * DAY}  # the new id stays in the account
    assert acct.id_segments == [[0, 10 * DAY]] and acct.next_segment == 1


def test_fewer_durable_ids_than_a_segment_stay_in_the_account():
    segs = IdSegments({}.get)
    acct = _account(SEGMENT_AT - 1)
    durable = segs.wrap(acct)
    assert segs.plan(acct, durable, horizon=7 * DAY) == []
    assert len(acct.seen_cdrs) == SEGMENT_AT - 1


def test_an_id_in_a_segment_is_still_a_duplicate():
    store = {segment_key("big", 0): b"old-1\nold-2"}
    acct = _account(1)
    acct.id_segments = [[0, 9 * DAY]]
    IdSegments(store.get).wrap(acct)
    assert isinstance(acct.seen_cdrs, SeenIds)
    assert "old-2" in acct.seen_cdrs and "c0" in acct.seen_cdrs and "other" not in acct.seen_cdrs


def test_a_segment_older_than_the_horizon_is_deleted():
    segs = IdSegments({}.get)
    acct = _account(1, at=20 * DAY)
    acct.id_segments = [[0, 12 * DAY], [1, 13 * DAY + 1]]
    writes = segs.plan(acct, set(), horizon=7 * DAY)
    assert writes == [(segment_key("big", 0), None)]
    assert acct.id_segments == [[1, 13 * DAY + 1]]
