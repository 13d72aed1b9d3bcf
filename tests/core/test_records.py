"""Decoding input records (rater/core/records.py): what two readers could read differently is
refused, and a missing record is told apart from an empty one."""

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rater.core.batch import BatchProcessor, Message, Topics
from rater.core.records import Invalid, _repeated_key, decode
from tests.support.ledger import NOW, write_tables

CDR = {
    "cdr_id": "c1",
    "tenant_id": "acme",
    "call_type": "domestic",
    "to": "+14155550123",
    "started_at": "2026-11-24T09:00:00Z",
    "duration_seconds": 60,
}
BODY = orjson.dumps(CDR)[1:-1]  # the fields, without the braces


def _refused(raw) -> Invalid:
    with pytest.raises(Invalid) as exc:
        decode(raw)
    return exc.value


@pytest.mark.parametrize(
    "raw, key",
    [
        (b'{"tenant_id":"a","tenant_id":"b",' + BODY[BODY.index(b'"cdr_id"') :] + b"}", "tenant_id"),
        (b"{" + BODY + b',"cdr_id":"c2"}', "cdr_id"),
        (b"{" + BODY + b',"duration_seconds" :600}', "duration_seconds"),  # a space before the colon
        (b"{" + BODY + b',"duration\\u005fseconds":600}', "duration_seconds"),  # spelled with an escape
        (b"{" + BODY + b',"meeting":{"id":1,"id":2}}', "id"),  # inside attributes
        (b"{" + BODY + b',"legs":[{"n":1},{"n":2,"n":3}]}', "n"),  # in an array
    ],
)
def test_a_key_repeated_in_one_object_is_refused(raw, key):
    exc = _refused(raw)
    assert exc.reason == "invalid_record"
    assert exc.detail == f"{key}: the key appears more than once in an object (readers may take either value)"


def test_the_same_key_in_different_objects_or_as_a_value_is_fine():
    raw = b"{" + BODY + b',"a":{"n":1},"b":{"n":2},"note":"cdr_id","q":"say \\"x\\":"}'
    assert decode(raw).attributes == {"a": {"n": 1}, "b": {"n": 2}, "note": "cdr_id", "q": 'say "x":'}


_keys = st.sampled_from(["a", "b", "cdr_id", 'q"', "é", "\\", "x:"])
_json_values = st.recursive(
    st.integers(0, 9) | st.text('ab":\\', max_size=4),
    lambda inner: st.lists(st.tuples(_keys, inner), max_size=4).map(lambda p: ("obj", p)) | st.lists(inner, max_size=3),
    max_leaves=12,
)


def _render(v, space: bool) -> str:
    if isinstance(v, tuple) and v and v[0] == "obj":
        sep = " :" if space else ":"
        return "{" + ",".join(json.dumps(k) + sep + _render(x, space) for k, x in v[1]) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_render(x, space) for x in v) + "]"
    return json.dumps(v)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_keys, _json_values), max_size=6), st.booleans())
def test_repeated_key_detection_agrees_with_a_pair_by_pair_parse(pairs, space):
    text = _render(("obj", pairs), space).encode()
    repeated: list[str] = []

    def hook(items):
        ks = [k for k, _ in items]
        if len(set(ks)) != len(ks):
            repeated.append("x")
        return dict(items)

    json.loads(text, object_pairs_hook=hook)
    assert (_repeated_key(text, orjson.loads(text)) is not None) == bool(repeated)


@pytest.mark.parametrize("field, value", [("cdr_id", "a\x00b"), ("cdr_id", "tab\there"), ("cdr_id", "c\x85")])
def test_an_id_with_a_control_character_is_refused(field, value):
    exc = _refused(orjson.dumps({**CDR, field: value}))
    assert (exc.reason, exc.detail) == (
        "invalid_record",
        f"{field}: must not contain control characters (U+0000 to U+001F, U+007F to U+009F)",
    )


def test_a_command_id_with_a_nul_is_refused():
    raw = orjson.dumps(
        {"command_id": "x\x00", "tenant_id": "acme", "command": "add_funds", "occurred_at": "2026-11-24T09:00:00Z", "amount": "1"}
    )
    assert _refused(raw).detail.startswith("command_id: must not contain control characters")


def test_a_tombstone_and_an_empty_value_get_different_details(tmp_path):
    proc = BatchProcessor(write_tables(str(tmp_path)), 1, Topics(), {}.get)
    result = proc.process([Message("cdrs", 0, 7, b"acme", None), Message("cdrs", 0, 8, b"acme", b"")], NOW)
    details = [(orjson.loads(v)["reason"], orjson.loads(v)["detail"], orjson.loads(v)["raw"]) for _t, _k, v in result.outputs]
    assert details == [
        ("invalid_json", "null value (a Kafka tombstone): there is no record", ""),
        ("invalid_json", "empty value: there is no record", ""),
    ]
