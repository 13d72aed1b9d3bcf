"""The worker's batch step without Kafka (rater/core/batch.py): routing and what a batch writes."""

import orjson
from aiokafka.partitioner import murmur2

from rater.core.batch import BatchProcessor, Message, Topics
from tests.support.ledger import NOW, cdr, configure, funds, write_tables


def _java_partition(key: bytes, n: int) -> int:
    # org.apache.kafka.clients.producer.internals.BuiltInPartitioner: toPositive(murmur2) % n
    return (murmur2(key) & 0x7FFFFFFF) % n


def _processor(tmp_path, partitions=4):
    store = {}
    return BatchProcessor(write_tables(str(tmp_path)), partitions, Topics(), store.get), store


def _msg(rec, partition, offset, key=...):
    k = rec["tenant_id"].encode() if key is ... else key
    return Message("cdrs", partition, offset, k, orjson.dumps(rec))


def test_a_record_on_its_tenants_partition_is_applied_and_its_account_written_once(tmp_path):
    proc, _ = _processor(tmp_path)
    p = _java_partition(b"acme", 4)
    msgs = [
        _msg(configure(), p, 0),
        _msg(funds("5", "f1"), p, 1),
        _msg(cdr("c1", "+442071234567", 60), p, 2),
        _msg(cdr("c2", "+442071234567", 60), p, 3),
    ]
    result = proc.process(msgs, NOW)
    assert result.forwards == []
    assert [t for t, _k, _v in result.outputs] == ["balance-events", "rated-cdrs", "rated-cdrs"]
    assert list(result.accounts) == ["acme"] and result.accounts["acme"][0] == p
    assert result.accounts["acme"][1].balance == 5_000_000 - 120_000  # two minutes at 0.06
    assert result.records == {("cdrs", "applied"): 4}


def test_a_record_on_the_wrong_partition_is_forwarded_untouched(tmp_path):
    proc, _ = _processor(tmp_path)
    right = _java_partition(b"acme", 4)
    wrong = (right + 1) % 4
    msg = _msg(configure(), wrong, 7)
    result = proc.process([msg], NOW)
    assert result.forwards == [(msg, right, b"acme")]
    assert result.outputs == [] and result.accounts == {}


def test_a_null_key_is_routed_by_the_values_tenant(tmp_path):
    proc, _ = _processor(tmp_path)
    right = _java_partition(b"acme", 4)
    on_right = proc.process([_msg(configure(), right, 0, key=None)], NOW)
    assert on_right.forwards == [] and list(on_right.accounts) == ["acme"]
    wrong = (right + 2) % 4
    on_wrong = proc.process([_msg(configure(cid="cfg-2"), wrong, 1, key=None)], NOW)
    assert [(p, k) for _m, p, k in on_wrong.forwards] == [(right, b"acme")]


def test_undecodable_values_are_rejected_where_they_are_with_their_source(tmp_path):
    proc, _ = _processor(tmp_path)
    result = proc.process([Message("cdrs", 3, 41, None, b"\xff\xfe")], NOW)
    [(topic, key, value)] = result.outputs
    reject = orjson.loads(value)
    assert (topic, key, reject["reason"], reject["source"], reject["raw"], reject["raw_encoding"]) == (
        "rater-rejects",
        None,
        "invalid_json",
        {"topic": "cdrs", "partition": 3, "offset": 41},
        "//4=",
        "base64",
    )


def test_a_batch_fed_in_parts_gives_what_one_process_gives(tmp_path):
    # The worker feeds a batch a hundred records at a time (rater/worker/pipeline.py, YIELD_EVERY):
    # an account created in one part and debited in the next is the same account, written once.
    p = _java_partition(b"acme", 4)
    msgs = [
        _msg(configure(), p, 0),
        _msg(funds("5", "f1"), p, 1),
        _msg(cdr("c1", "+442071234567", 60), p, 2),
        _msg(cdr("c2", "+442071234567", 60), p, 3),
    ]
    whole = _processor(tmp_path / "a")[0].process(msgs, NOW)
    proc, _ = _processor(tmp_path / "b")
    parts = proc.begin()
    for chunk in (msgs[0:1], msgs[1:3], msgs[3:4]):
        proc.feed(parts, chunk, NOW)
    proc.end(parts)
    assert parts.outputs == whole.outputs and len(parts.outputs) == 3
    assert list(parts.accounts) == ["acme"]
    assert parts.accounts["acme"][1].balance == 5_000_000 - 120_000  # two minutes at 0.06
    assert parts.records == {("cdrs", "applied"): 4}


def test_a_record_the_worker_says_was_judged_before_is_skipped_and_writes_nothing(tmp_path):
    # The worker's step 1c (rater/worker/replay.py): after a crash inside step 4, records whose
    # account was written are not judged again. Here offsets up to 1 count as judged.
    proc, _ = _processor(tmp_path)
    p = _java_partition(b"acme", 4)
    asked = []

    def judged(msg, key):
        asked.append((msg.offset, key))
        return msg.offset <= 1

    proc.judged = judged
    msgs = [
        _msg(cdr("c0", "+442071234567", 60), p, 0),
        _msg(configure(), p, 1),
        _msg(funds("5", "f1"), p, 2),
        _msg(cdr("c1", "+442071234567", 60), p, 3),
    ]
    result = proc.process(msgs, NOW)
    assert asked == [(0, b"acme"), (1, b"acme"), (2, b"acme"), (3, b"acme")]
    assert result.skipped == 2
    # Offset 1 (the account's creation) skipped: the funds and the call find no account.
    assert [orjson.loads(v)["reason"] for t, _k, v in result.outputs] == ["unknown_tenant", "unknown_tenant"]
    assert result.accounts == {}
    assert result.records == {("cdrs", "rejected"): 2}
