"""The worker's HTTP server as an operator exposes it (rater/worker/app.py, rater/worker/web.py,
rater/worker/weblog.py, rater/worker/metrics.py): only rater's own routes answer, a malformed request
is one log line, and the metrics carry the standard collectors in the negotiated format.
One worker serves every check of this file."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.kafka import produce
from tests.support.worker import WorkerProcess, wait_for
from tests.worker.test_worker import funded_account, home, now_utc

pytestmark = pytest.mark.kafka

P = 4
TENANT = "webby"


@pytest.fixture(scope="module")
def worker(kafka_broker):
    now = now_utc()
    with WorkerProcess(kafka_broker.bootstrap, partitions=P, name="web") as w:
        setup = funded_account(TENANT, "web", now - timedelta(days=1), now - timedelta(hours=1), "10")
        produce(kafka_broker.bootstrap, w.topics.commands, [(TENANT, r, home(TENANT, P)) for r in setup])
        wait_for(lambda: w.records_done() == 2, 60, what="the setup applied", workers=(w,))
        yield w


@pytest.mark.parametrize(
    "path", ["/router", "/router/", "/table/accounts/", f"/table/accounts/{TENANT}/", "/graph/", "/stats/", "/performance/"]
)
def test_faust_s_own_views_are_not_served(worker, path):
    r = worker.get(path)
    assert r.status == 404, (path, r.status, r.body[:200])
    assert b"10.000000" not in r.body and b"lots" not in r.body


def test_the_tenant_view_still_answers(worker):
    assert worker.get(f"/tenants/{TENANT}").json()["balance"] == "10.000000"


def _raw_request(worker, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", worker.web_port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_a_malformed_http_request_is_answered_400_and_logged_in_one_line(worker):
    before = worker.log().count("bad HTTP request from")
    bad = [b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"]
    for data in bad:
        assert _raw_request(worker, data).split(b"\r\n")[0] in (b"HTTP/1.0 400 Bad Request", b"HTTP/1.1 400 Bad Request")
    wait_for(
        lambda: worker.log().count("bad HTTP request from") == before + len(bad), 10, what="one line per bad request", workers=(worker,)
    )
    lines = worker.log().splitlines()
    assert not any(line.startswith("Traceback") for line in lines)
    assert not any("Error handling request" in line for line in lines)
    logged = [line for line in lines if "bad HTTP request from 127.0.0.1: " in line]
    assert len(logged) == before + 2 and all("[WARNING]" in line for line in logged), logged


def test_metrics_carry_the_process_and_python_collectors(worker):
    names = {name for name, _labels in worker.metrics()}
    assert {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections_total",
    } <= names


def test_metrics_content_type_is_negotiated(worker):
    import urllib.request

    plain = worker.get("/metrics")
    assert plain.status == 200
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    req = urllib.request.Request(
        worker.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert body.endswith("# EOF\n")
    assert "# TYPE rater_records counter" in body
