"""Poison records through the real broker: a record whose outputs could be larger than
Kafka accepts is rejected with a bounded reject, and the records after it are rated
(SPEC 8: a bad record never stops the stream; rater/core/bounds.py, rater/worker/sending.py)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import orjson
import pytest

from tests.support.kafka import consume_all, create_topic, produce
from tests.support.worker import WorkerProcess, WorkerTopics, wait_for
from tests.worker.test_worker import funded_account, home, iso, now_utc, values

pytestmark = pytest.mark.kafka


def test_poison_records_are_rejected_bounded_and_the_next_cdr_is_rated(kafka_broker):
    broker = kafka_broker.bootstrap
    P = 4
    tenant = "poison"
    hp = home(tenant, P)
    topics = WorkerTopics.unique("poison")
    # The inputs accept records of up to 4 MiB (a producer may be configured so); the rated
    # CDRs' topic only 3,000 bytes, so that the broker itself refuses one output.
    for name in (topics.cdrs, topics.commands):
        create_topic(broker, name, P, config={"max.message.bytes": str(4 << 20)})
    create_topic(broker, topics.rated, P, config={"max.message.bytes": "3000"})
    now = now_utc()

    def cdr(cdr_id: str, minutes_ago: int, **extra) -> bytes:
        return orjson.dumps(
            {
                "cdr_id": cdr_id,
                "tenant_id": tenant,
                "call_type": "international",
                "to": "+919876543210",
                "started_at": iso(now - timedelta(minutes=minutes_ago)),
                "duration_seconds": 60,
                **extra,
            }
        )

    ones, ffs = b"\x01" * (1 << 20), b"\xff" * (1 << 20)
    small_ones = b"\x01" * 200_000  # under the limit: decoded, refused as JSON, its raw cut
    attrs = cdr("p-attrs", 50, blob="a" * 1_500_000)
    wide = cdr("p-wide", 45, note="w" * 5000)  # under 512 KiB, but its rated CDR is over 3,000 bytes
    poison = [ones, ffs, attrs, wide, small_ones]
    with WorkerProcess(broker, topics=topics, partitions=P, name="poison") as w:
        setup = funded_account(tenant, "p", now - timedelta(days=1), now - timedelta(hours=2), "10")
        produce(broker, topics.commands, [(tenant, r, hp) for r in setup])
        wait_for(lambda: w.records_done() == 2, 60, what="the setup applied", workers=(w,))
        records = []
        for i, bad in enumerate(poison):
            records += [(tenant, bad, hp), (tenant, cdr(f"p-good-{i}", 40 - i), hp)]
        sent = produce(broker, topics.cdrs, records, max_request_size=8 << 20)
        wait_for(lambda: w.records_done() == 2 + len(records), 120, what="every record done", workers=(w,))

        rated = values(broker, topics.rated)
        assert [r["cdr_id"] for r in rated] == [f"p-good-{i}" for i in range(5)]
        rejects = {r.value["source"]["offset"]: r for r in consume_all(broker, topics.rejects)}
        offsets = [offset for (_p, offset), rec in zip(sent, records) if rec[1] in poison]
        assert sorted(rejects) == offsets
        by_raw = dict(zip(offsets, poison))
        for offset, r in rejects.items():
            v, raw = r.value, by_raw[offset]
            assert r.key == tenant
            assert v["reason"] == ("invalid_json" if raw is small_ones else "invalid_record")
            assert len(r.raw_value) < 120_000  # 16 KiB of raw, escaped at most six times
            if raw is wide:  # kept whole: only its output was too large
                assert v["detail"].startswith("output too large: its %s record is " % topics.rated)
                assert v["detail"].endswith(
                    "refused by the broker for its size; the record was applied, that output is replaced by this reject"
                )
                assert v["raw"] == raw.decode() and "raw_truncated" not in v
                continue
            assert (v["raw_truncated"], v["raw_size"]) == (True, len(raw))
            assert v["raw_sha256"] == hashlib.sha256(raw).hexdigest()
        for i in (0, 1, 2):
            assert rejects[offsets[i]].value["detail"] == (
                f"record too large: {len(poison[i])} bytes, the limit is 524288 (--max-record-bytes)"
            )
        assert rejects[offsets[0]].value["raw"] == "\x01" * 16384
        assert rejects[offsets[4]].value["raw"] == "\x01" * 16384
        assert rejects[offsets[4]].value["detail"].startswith("not valid JSON")
        assert rejects[offsets[1]].value["raw_encoding"] == "base64"
        assert w.running()
        # 10 - 6 calls of 60 s to India at 0.03/min: the five good ones and p-wide, whose
        # charge stands (only its rated CDR could not be written).
        assert w.get(f"/tenants/{tenant}").json()["balance"] == "9.820000"
