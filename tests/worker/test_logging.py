"""The worker's logs (rater/worker/app.py): with --log-format json, one JSON object per line,
each line once."""

from collections import Counter

import orjson
import pytest

from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.kafka


def test_json_logs_are_one_json_object_per_line_and_each_line_once(kafka_broker):
    with WorkerProcess(kafka_broker.bootstrap, name="jsonlog", extra_args=["--log-format", "json"]) as w:
        assert w.stop() == 0  # started, ready, stopped: lines of faust's, aiokafka's and ours
        lines = [line for line in w.log().splitlines() if line.strip() and not line.startswith("=====")]
    assert lines
    records = [orjson.loads(line) for line in lines]  # a text line would raise here
    assert all(set(r) >= {"ts", "level", "logger", "msg"} for r in records)
    started = [r for r in records if r["msg"].startswith("worker started: ")]
    assert len(started) == 1
    # A second handler on the root logger (the bug: mode's text handler beside ours) would
    # write every line twice, ours included. Faust itself may log one message twice in the
    # same millisecond (two fetchers stopping), so the repeat check looks at our lines.
    ours = [line for line, r in zip(lines, records) if r["logger"].startswith("rater")]
    assert len(ours) >= 2
    repeated = [(line, n) for line, n in Counter(ours).items() if n > 1]
    assert repeated == []
