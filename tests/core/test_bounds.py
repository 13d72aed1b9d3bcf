"""Size bounds (rater/core/bounds.py): one record can never make an output Kafka refuses.

Expected values are worked out independently here: sizes by arithmetic, hashes with
hashlib on the input, base64 with the standard library.
"""

import base64
import hashlib

import orjson
import pytest

from rater.core.batch import BatchProcessor, Message, Topics
from rater.core.bounds import RAW_LIMIT, raw_fields
from rater.core.engine import Engine, reject_record
from tests.support.ledger import NOW, cdr, configure, funds, write_tables

jsonschema = pytest.importorskip("jsonschema")
from rater.dev.schemas import validator  # noqa: E402

SOURCE = {"topic": "cdrs", "partition": 0, "offset": 5}


def test_a_short_raw_is_kept_whole_with_no_truncation_fields():
    assert raw_fields(b'{"a":1}') == {"raw": '{"a":1}', "raw_encoding": "utf-8"}
    assert raw_fields(b"\xff\x01") == {"raw": "/wE=", "raw_encoding": "base64"}


def test_a_mebibyte_of_control_bytes_is_cut_to_16_kib_with_its_size_and_hash():
    raw = b"\x01" * (1 << 20)
    f = raw_fields(raw)
    assert f["raw"] == "\x01" * 16384 and f["raw_encoding"] == "utf-8"
    assert (f["raw_truncated"], f["raw_size"]) == (True, 1_048_576)
    assert f["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    # As JSON each \x01 is the six characters \u0001: 98,304 bytes of raw, far under 1 MiB.
    assert len(orjson.dumps(f["raw"])) == 6 * 16384 + 2


def test_a_mebibyte_of_0xff_is_cut_and_base64_encoded():
    raw = b"\xff" * (1 << 20)
    f = raw_fields(raw)
    assert f["raw_encoding"] == "base64"
    assert f["raw"] == base64.b64encode(b"\xff" * 16384).decode()
    assert len(f["raw"]) == 4 * 16386 // 3  # 16384 bytes -> 5462 groups of 4 (the last padded): 21,848
    assert (f["raw_size"], f["raw_sha256"]) == (1_048_576, hashlib.sha256(raw).hexdigest())


def test_a_cut_inside_a_utf8_character_drops_the_partial_character_and_stays_text():
    raw = b"a" * (RAW_LIMIT - 1) + "é".encode() + b"tail"  # é is 2 bytes: the cut falls between them
    f = raw_fields(raw)
    assert f["raw_encoding"] == "utf-8" and f["raw"] == "a" * (RAW_LIMIT - 1)
    assert f["raw_size"] == RAW_LIMIT - 1 + 2 + 4


def test_invalid_utf8_after_the_cut_still_makes_the_whole_raw_base64():
    raw = b"a" * RAW_LIMIT + b"\xff"
    f = raw_fields(raw)
    assert f["raw_encoding"] == "base64" and base64.b64decode(f["raw"]) == b"a" * RAW_LIMIT


def test_a_truncated_reject_validates_against_its_schema():
    rej = reject_record("invalid_json", "not valid JSON", b"\xff" * 40000, SOURCE, None)
    assert list(validator("reject").iter_errors(rej)) == []
    bad = dict(rej)
    del bad["raw_sha256"]
    assert list(validator("reject").iter_errors(bad)) != []


def test_a_record_over_the_limit_is_rejected_as_too_large_before_it_is_decoded(tmp_path):
    engine = Engine(write_tables(str(tmp_path)), max_record_bytes=1000)
    # 1001 bytes of valid JSON: it would decode, but it is refused for its size.
    body = orjson.dumps({**cdr("c1", "+442071234567", 60), "pad": ""})
    raw = body[:-2] + b"x" * (1001 - len(body)) + b'"}'
    assert len(raw) == 1001
    p = engine.process(raw, "acme", SOURCE, NOW)
    assert (p.outcome.status, p.outcome.reason) == ("rejected", "invalid_record")
    assert p.reject["detail"] == "record too large: 1001 bytes, the limit is 1000 (--max-record-bytes)"
    assert p.reject["raw"] == raw.decode() and "raw_truncated" not in p.reject
    ok = engine.process(orjson.dumps(configure()), "acme", SOURCE, NOW)  # the next record goes on
    assert ok.outcome.status == "applied"


def test_a_cdr_with_1_5_mb_of_attributes_is_rejected_with_a_bounded_reject(tmp_path):
    proc = BatchProcessor(write_tables(str(tmp_path)), 1, Topics(), {}.get)
    big = orjson.dumps({**cdr("c1", "+442071234567", 60), "blob": "x" * 1_500_000})
    msgs = [
        Message("cdrs", 0, 0, b"acme", orjson.dumps(configure())),
        Message("cdrs", 0, 1, b"acme", orjson.dumps(funds("5", "f1"))),
        Message("cdrs", 0, 2, b"acme", big),
        Message("cdrs", 0, 3, b"acme", orjson.dumps(cdr("c2", "+442071234567", 60))),
    ]
    result = proc.process(msgs, NOW)
    topics = [t for t, _k, _v in result.outputs]
    assert topics == ["balance-events", "rater-rejects", "rated-cdrs"]
    reject = orjson.loads(result.outputs[1][2])
    assert reject["detail"] == f"record too large: {len(big)} bytes, the limit is 524288 (--max-record-bytes)"
    assert (reject["raw_size"], len(reject["raw"])) == (len(big), 16384)
    assert max(len(v) for _t, _k, v in result.outputs) < 20_000
    assert orjson.loads(result.outputs[2][2])["charge"] == "0.060000"  # one minute at 0.06
    assert [m.offset for m in result.origins] == [1, 2, 3]


def test_an_output_over_the_output_limit_is_replaced_by_the_reject_of_its_input(tmp_path):
    proc = BatchProcessor(write_tables(str(tmp_path)), 1, Topics(), {}.get, max_output_bytes=3000)
    wide = orjson.dumps({**cdr("c1", "+442071234567", 60), "note": "n" * 3000})
    msgs = [
        Message("cdrs", 0, 0, b"acme", orjson.dumps(configure())),
        Message("cdrs", 0, 1, b"acme", orjson.dumps(funds("5", "f1"))),
        Message("cdrs", 0, 2, b"acme", wide),
    ]
    result = proc.process(msgs, NOW)
    assert [t for t, _k, _v in result.outputs] == ["balance-events", "rater-rejects"]
    topic, key, value = result.outputs[1]
    reject = orjson.loads(value)
    rated_size = len(orjson.dumps(orjson.loads(wide)))  # at least the input's size
    assert key == b"acme" and reject["reason"] == "invalid_record" and reject["tenant_id"] == "acme"
    assert reject["detail"].startswith("output too large: its rated-cdrs record is ")
    assert int(reject["detail"].split(" record is ")[1].split(" ")[0]) > rated_size
    assert reject["source"] == {"topic": "cdrs", "partition": 0, "offset": 2}
    # The call happened: it is charged (5 - 0.06), only its rated CDR is not written.
    assert result.accounts["acme"][1].balance == 4_940_000
