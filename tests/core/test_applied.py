"""The applied mark of an input partition (rater/core/applied.py): where a partition resumes."""

import orjson

from rater.core.applied import decode_mark, encode_mark, is_mark_key, mark_key, resume_offset
from rater.core.idsegments import is_segment_key, segment_key


def test_a_partition_resumes_at_its_committed_offset_when_the_mark_is_behind_it():
    # Offsets 0..41 applied and committed (42); the mark says 41 was the last applied.
    assert resume_offset(42, 41) == 42
    assert resume_offset(42, 7) == 42


def test_a_partition_resumes_after_the_mark_when_the_commit_did_not_follow_the_account_write():
    # Committed 42, but a batch ending at offset 57 wrote its accounts: 43..57 are not judged again.
    assert resume_offset(42, 57) == 58
    # The batch was the single record at the committed offset.
    assert resume_offset(42, 42) == 43


def test_a_partition_without_a_mark_resumes_at_its_committed_offset():
    assert resume_offset(0, None) == 0
    assert resume_offset(42, decode_mark(None)) == 42


def test_marks_round_trip_and_an_unreadable_one_counts_as_none():
    assert decode_mark(encode_mark(1234567)) == 1234567
    assert encode_mark(0) == b"0"
    assert decode_mark(b"") is None
    assert decode_mark(b"12x") is None


def test_mark_keys_name_topic_and_partition_and_are_neither_tenants_nor_segments():
    assert mark_key("cdrs", 3) == b"\x00applied\x00cdrs\x003"
    assert mark_key("cdrs", 3) != mark_key("cdrs", 1) != mark_key("tenant-commands", 1)
    assert is_mark_key(mark_key("tenant-commands", 0))
    assert not is_mark_key(b"acme") and not is_mark_key(segment_key("acme", 0))
    assert not is_segment_key(mark_key("cdrs", 0))


def test_an_account_value_carries_how_far_its_batch_judged_and_decodes_to_the_same_account():
    from rater.core.codec import decode_account, decode_judged, encode_account, judged_of
    from rater.core.ledger import Account

    acct = Account(tenant_id="acme", rate_plan="standard-usd", currency="USD", debt=1_500_000)
    judged = {"cdrs": 57, "tenant-commands": 12}
    # Format 1: an "in" object. Format 2: the first field after the version, a count and
    # each topic with its offset (zigzag: 57 is 114, 12 is 24), where a value without has
    # a count of 0; ``judged_of`` reads them alone.
    value1 = encode_account(acct, judged, format=1)
    assert orjson.loads(value1)["in"] == judged
    value2 = encode_account(acct, judged)
    plain2 = encode_account(acct)
    assert plain2[:2] == b"\x02\x00"
    assert value2 == b"\x02\x02\x04cdrs\x72\x0ftenant-commands\x18" + plain2[2:]
    assert judged_of(value2) == judged_of(value1) == judged
    assert judged_of(value2[:25]) == judged  # the account after them is not read
    for value in (value1, value2):
        assert decode_account(value) == acct
        assert decode_judged(value) == (acct, judged)
    # A value written before the judged offsets existed, or by the sweep: none.
    assert decode_judged(encode_account(acct, format=1)) == (acct, {})
    assert decode_judged(plain2) == (acct, {})
