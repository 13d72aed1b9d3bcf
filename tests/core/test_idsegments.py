"""Moving remembered ids out of the account (rater/core/idsegments.py), without Kafka."""

import gc
from pathlib import Path

import orjson

from rater.core import idsegments, ledger
from rater.core.codec import decode_account, encode_account
from rater.core.idsegments import SEGMENT_AT, IdSegments, segment_key
from rater.core.ledger import Account
from rater.core.rates import load_rate_tables
from rater.core.records import decode
from rater.core.timeutil import DAY


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
    segs = IdSegments(store.get)
    segs.wrap(acct)
    assert segs.seen_before(acct, "old-2") and not segs.seen_before(acct, "other")
    assert "c0" in acct.seen_cdrs and "old-2" not in acct.seen_cdrs  # the recent ids stay the account's own


def _cdr(cdr_id: str, started_at: str) -> ledger.Cdr:
    raw = {
        "cdr_id": cdr_id,
        "tenant_id": "big",
        "call_type": "domestic",
        "to": "+14155550100",
        "started_at": started_at,
        "duration_seconds": 60,
    }
    return decode(orjson.dumps(raw), "big")


def test_the_ledger_asks_the_segments_about_an_id_it_does_not_hold():
    rate_tables = load_rate_tables(str(Path(__file__).parents[2] / "rate_tables"))
    # A CDR whose id was moved into segment 0 is a duplicate: no charge, no state change.
    store = {segment_key("big", 0): b"moved-1\nmoved-2"}
    acct = Account("big", "standard-usd", "USD", lots=[ledger.Lot("l1", 10_000_000, 0, 400 * DAY, "manual")])
    acct.id_segments = [[0, 9 * DAY]]
    acct.cdr_watermark = 9 * DAY
    IdSegments(store.get).wrap(acct)
    moved = ledger.apply(acct, _cdr("moved-2", "1970-01-10T00:00:00Z"), rate_tables, now=10 * DAY)
    assert moved.status == "duplicate" and acct.lots[0].remaining == 10_000_000
    fresh = ledger.apply(acct, _cdr("fresh-1", "1970-01-10T00:00:00Z"), rate_tables, now=10 * DAY)
    assert fresh.status == "applied" and "fresh-1" in acct.seen_cdrs


def test_the_ids_an_account_holds_are_not_scanned_by_the_cycle_collector():
    # CPython never tracks a plain dict of str -> int; a dict subclass or a set it always
    # tracks, and then every full collection visits every id (rater/core/idsegments.py).
    segs = IdSegments({}.get)
    acct = decode_account(encode_account(_account(SEGMENT_AT)))
    durable = segs.wrap(acct)
    assert not gc.is_tracked(acct.seen_cdrs) and not gc.is_tracked(acct.seen_commands)
    assert len(durable) == SEGMENT_AT and not gc.is_tracked(durable)
    acct.seen_cdrs["new"] = 10 * DAY
    segs.plan(acct, durable, horizon=7 * DAY)
    assert not gc.is_tracked(segs.wrap(acct)) and not gc.is_tracked(acct.seen_cdrs)


def test_a_segment_older_than_the_horizon_is_deleted():
    segs = IdSegments({}.get)
    acct = _account(1, at=20 * DAY)
    acct.id_segments = [[0, 12 * DAY], [1, 13 * DAY + 1]]
    writes = segs.plan(acct, {}, horizon=7 * DAY)
    assert writes == [(segment_key("big", 0), None)]
    assert acct.id_segments == [[1, 13 * DAY + 1]]


def test_an_account_listing_more_segments_than_the_least_moves_as_many_ids_as_it_lists(monkeypatch):
    # A segment holds at least SEGMENT_AT ids, and at least as many as the account lists
    # segments (rater/core/idsegments.py): here the least is 3 and 5 are listed.
    monkeypatch.setattr(idsegments, "SEGMENT_AT", 3)
    segs = IdSegments({}.get)
    acct = Account("t1", "p", "USD")
    acct.id_segments = [[n, 50 + n] for n in range(5)]
    acct.next_segment = 5
    acct.cdr_watermark = 1_000
    acct.seen_cdrs = {f"c{i}": 100 + i for i in range(4)}
    assert segs.wrap(acct) == {}  # 4 ids: fewer than the 5 listed
    assert segs.plan(acct, dict(acct.seen_cdrs), horizon=1_000_000) == []
    assert len(acct.seen_cdrs) == 4
    acct.seen_cdrs["c4"] = 104
    durable = segs.wrap(acct)
    assert len(durable) == 5
    assert segs.plan(acct, durable, horizon=1_000_000) == [(segment_key("t1", 5), b"c0\nc1\nc2\nc3\nc4")]
    assert acct.id_segments[-1] == [5, 104] and len(acct.id_segments) == 6
    # Segments 0 and 1 are past the horizon (cutoff 1,052 - 1,000 = 52) and deleted first;
    # the 4 segments left make the threshold: 4 durable ids move.
    acct.seen_cdrs = {f"c{i}": 200 + i for i in range(10, 14)}
    acct.cdr_watermark = 1_052
    writes = segs.plan(acct, dict(acct.seen_cdrs), horizon=1_000)
    assert [k for k, _ in writes] == [segment_key("t1", 0), segment_key("t1", 1), segment_key("t1", 6)]
    assert [n for n, _ in acct.id_segments] == [2, 3, 4, 5, 6] and acct.seen_cdrs == {}
