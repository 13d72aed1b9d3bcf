"""A replay after a crash reproduces the first pass: records already judged are not judged again.

Issue 12. The worker is killed right after a batch's step 4 (its accounts durable on the
changelog and in the store) and before step 5 (its offsets committed): the failpoint
``RATER_FAILPOINT=after-step-4`` ends the process exactly there. On the restart the
input is consumed again from the old committed offset. Records whose outcome depends on
state that a *later* record of the same batch changed must keep their first outcome:

- tenant ``rp-a``: a CDR before the tenant's ``configure_account`` and ``add_funds``
  (``unknown_tenant``; judged again it would find the account and be charged 0.03);
- tenant ``rp-b``: a ``payment_result`` before the request it answers
  (``unknown_request``; judged again it would find the request pending and add 20.00);
- tenant ``rp-c``: a CDR just beyond the 24-hour future limit (``invalid_timestamp``;
  judged again a little later the clock has moved and it would be charged 0.03, or, still
  refused, carry another processing clock in its ``detail``).

Every expected value is worked out by hand from SPEC 5, 6 and 8 and ``standard-usd``
(India +91, 0.03 a minute, 60/60 increments: one 60 s call costs 0.030000).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from tests.support.chaos import wait_consumed
from tests.support.kafka import consume_all, create_topic, produce
from tests.support.worker import WorkerProcess, WorkerTopics, wait_for

pytestmark = pytest.mark.kafka

SWEEP_OFF = ["--sweep-interval", "3600"]
FAILPOINT = {"RATER_FAILPOINT": "after-step-4"}
# How far beyond the 24-hour limit rp-c's call starts, counted from when the records are
# produced: the first pass (the worker's start) must come sooner, the replay later. The
# restarted worker's processing clock runs BEYOND + 2 s ahead (``RATER_FAILPOINT=clock+N``,
# rater/worker/pipeline.py) instead of the test waiting that long.
BEYOND = 240


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stream(t0: datetime) -> list[tuple[str, dict]]:
    """One partition, one batch: every record is produced before the worker starts."""
    m20, m19, m18, m10 = (iso(t0 - timedelta(minutes=m)) for m in (20, 19, 18, 10))
    call = {"call_type": "international", "to": "+919876543210", "duration_seconds": 60}
    return [
        ("rp-a", {"cdr_id": "a-1", "tenant_id": "rp-a", "started_at": m10, **call}),
        (
            "rp-a",
            {"command_id": "a-setup", "tenant_id": "rp-a", "command": "configure_account", "occurred_at": m20, "rate_plan": "standard-usd"},
        ),
        ("rp-a", {"command_id": "a-funds", "tenant_id": "rp-a", "command": "add_funds", "occurred_at": m20, "amount": "10"}),
        (
            "rp-b",
            {"command_id": "b-setup", "tenant_id": "rp-b", "command": "configure_account", "occurred_at": m20, "rate_plan": "standard-usd"},
        ),
        (
            "rp-b",
            {
                "command_id": "b-pay",
                "tenant_id": "rp-b",
                "command": "payment_result",
                "occurred_at": m19,
                "request_id": "rp-b/recharge/1",
                "status": "succeeded",
            },
        ),
        (
            "rp-b",
            {
                "command_id": "b-auto",
                "tenant_id": "rp-b",
                "command": "configure_account",
                "occurred_at": m18,
                "auto_recharge": {
                    "enabled": True,
                    "threshold": "5",
                    "amount": "20",
                    "payment_method": {"type": "card", "expires": "2099-12"},
                },
            },
        ),
        (
            "rp-c",
            {"command_id": "c-setup", "tenant_id": "rp-c", "command": "configure_account", "occurred_at": m20, "rate_plan": "standard-usd"},
        ),
        ("rp-c", {"command_id": "c-funds", "tenant_id": "rp-c", "command": "add_funds", "occurred_at": m20, "amount": "10"}),
        ("rp-c", {"cdr_id": "c-1", "tenant_id": "rp-c", "started_at": iso(t0 + timedelta(hours=24, seconds=BEYOND)), **call}),
    ]


def by_id_checked(raws: list[bytes]) -> dict[str, list[bytes]]:
    """Output copies grouped by ``event_id``."""
    out: dict[str, list[bytes]] = {}
    for raw in raws:
        out.setdefault(orjson.loads(raw)["event_id"], []).append(raw)
    return out


@pytest.mark.parametrize("how", ["restart", "new-owner", "memory-store"])
def test_a_replay_after_a_crash_between_the_account_write_and_the_commit_judges_nothing_again(kafka_broker, tmp_path, how):
    broker = kafka_broker.bootstrap
    topics = WorkerTopics.unique("rp")
    app_id = f"{topics.cdrs}-app"
    extra = SWEEP_OFF + (["--store", "memory"] if how == "memory-store" else [])
    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    first = WorkerProcess(broker, topics=topics, app_id=app_id, partitions=1, name="rp-first", extra_args=extra, env=FAILPOINT)
    for topic in (topics.cdrs, topics.commands):
        create_topic(broker, topic, 1)
    produce(broker, topics.cdrs, stream(t0))
    second = (
        first
        if how != "new-owner"
        else WorkerProcess(broker, topics=topics, app_id=app_id, partitions=1, name="rp-second", extra_args=extra)
    )
    try:
        # The first pass: one batch, then the failpoint ends the process after its step 4.
        first.start(wait=False)
        assert first.popen is not None
        code = first.popen.wait(120)
        assert code == 75, f"the failpoint did not end the worker (status {code})\n{first.tail()}"
        assert "failpoint after-step-4: exiting before the offsets of 9 record(s)" in first.log(), first.tail()
        rejects_first = consume_all(broker, topics.rejects, 30)
        reasons_first = sorted(r.value["reason"] for r in rejects_first)
        assert reasons_first == ["invalid_timestamp", "unknown_request", "unknown_tenant"], (
            f"the first pass did not judge as the scenario needs (a slow start?): {reasons_first}"
        )
        # The replay: the same worker on its state dir, or a new owner that has only the
        # changelog. The restarted one judges by a clock at which rp-c's call is within 24
        # hours: judged again, it would be charged.
        second.env = {"RATER_FAILPOINT": f"clock+{BEYOND + 2}"} if how == "restart" else {}
        second.start()
        assert wait_consumed(broker, app_id, [topics.cdrs], timeout=120), second.tail()
        wait_for(lambda: second.get("/tenants/rp-c").status == 200, 30, what="the views", workers=(second,))

        # Balances of the crash-free run: A 10 (call refused), B 0 (answer refused, request
        # pending), C 10 (call refused).
        views = {t: second.get(f"/tenants/{t}").json() for t in ("rp-a", "rp-b", "rp-c")}
        assert {t: v["balance"] for t, v in views.items()} == {"rp-a": "10.000000", "rp-b": "0.000000", "rp-c": "10.000000"}
        assert views["rp-b"]["auto_recharge"]["pending_request_id"] == "rp-b/recharge/1"
        # No call was rated, on either pass.
        assert consume_all(broker, topics.rated, 10) == []
        # Each reject once, with the content of the first pass.
        rejects = by_id_checked([r.raw_value for r in consume_all(broker, topics.rejects, 30)])
        assert all(len(copies) == 1 for copies in rejects.values()), {k: len(v) for k, v in rejects.items()}
        got = {(r["tenant_id"], r["reason"]): r["detail"] for r in (orjson.loads(c[0]) for c in rejects.values())}
        beyond = iso(t0 + timedelta(hours=24, seconds=BEYOND))
        assert got.keys() == {("rp-a", "unknown_tenant"), ("rp-b", "unknown_request"), ("rp-c", "invalid_timestamp")}
        assert got[("rp-a", "unknown_tenant")] == "tenant_id: no account for 'rp-a'"
        assert (
            got[("rp-b", "unknown_request")]
            == "request_id: 'rp-b/recharge/1' is neither the pending recharge request nor one that timed out"
        )  # noqa: E501
        assert got[("rp-c", "invalid_timestamp")].startswith(f"started_at: {beyond} is more than 24 hours after the processing clock ")
        assert sorted(r.raw_value for r in rejects_first) == sorted(c[0] for c in rejects.values())
        # One recharge request (B's, 20.00), and the balance events of the first pass only.
        requests = [r.value for r in consume_all(broker, topics.requests, 10)]
        assert [(r["request_id"], r["amount"]) for r in requests] == [("rp-b/recharge/1", "20.000000")]
        events = by_id_checked([r.raw_value for r in consume_all(broker, topics.events, 10)])
        assert all(len(set(copies)) == 1 for copies in events.values())
        kinds = sorted((e["tenant_id"], e["type"], e.get("amount")) for e in (orjson.loads(c[0]) for c in events.values()))
        assert kinds == [
            ("rp-a", "funds_added", "10.000000"),
            ("rp-b", "auto_recharge_requested", "20.000000"),
            ("rp-c", "funds_added", "10.000000"),
        ]
        assert second.errors() == []
    finally:
        failed = sys.exc_info()
        for w in {id(first): first, id(second): second}.values():
            w.__exit__(*failed)


@pytest.mark.parametrize("how", ["restart", "memory-store"])
def test_a_replay_after_a_crash_inside_the_account_write_skips_the_records_of_accounts_that_were_written(kafka_broker, how):
    """Step 4 may reach the changelog in more than one producer batch per partition (past
    1 MB of accounts): a crash between them leaves some accounts of the batch written and
    no applied mark. ``RATER_FAILPOINT=inside-step-4`` writes the first account only (rp-a's;
    the batch's accounts are in the order the batch first changed them) and exits. rp-a's
    records are then judged before (its account says so) and skipped; rp-d's account was
    not written, so its records are applied again from the old state, with the same outputs."""
    broker = kafka_broker.bootstrap
    topics = WorkerTopics.unique("rq")
    app_id = f"{topics.cdrs}-app"
    extra = SWEEP_OFF + (["--store", "memory"] if how == "memory-store" else [])
    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    m20, m10 = iso(t0 - timedelta(minutes=20)), iso(t0 - timedelta(minutes=10))
    call = {"call_type": "international", "to": "+919876543210", "duration_seconds": 60}
    records = []
    for t in ("rp-a", "rp-d"):
        records += [
            (t, {"cdr_id": f"{t}-1", "tenant_id": t, "started_at": m10, **call}),
            (
                t,
                {
                    "command_id": f"{t}-setup",
                    "tenant_id": t,
                    "command": "configure_account",
                    "occurred_at": m20,
                    "rate_plan": "standard-usd",
                },
            ),
            (t, {"command_id": f"{t}-funds", "tenant_id": t, "command": "add_funds", "occurred_at": m20, "amount": "10"}),
        ]
    for topic in (topics.cdrs, topics.commands):
        create_topic(broker, topic, 1)
    produce(broker, topics.cdrs, records)
    w = WorkerProcess(
        broker, topics=topics, app_id=app_id, partitions=1, name="rq", extra_args=extra, env={"RATER_FAILPOINT": "inside-step-4"}
    )
    try:
        w.start(wait=False)
        assert w.popen is not None
        code = w.popen.wait(120)
        assert code == 75, f"the failpoint did not end the worker (status {code})\n{w.tail()}"
        # rp-a's account, then rp-d's, then the applied mark: 3 changelog records, 1 written.
        assert "failpoint inside-step-4: exiting after 1 of 3 changelog record(s)" in w.log(), w.tail()
        first_rejects = sorted(r.raw_value for r in consume_all(broker, topics.rejects, 30))
        assert [orjson.loads(r)["tenant_id"] for r in first_rejects] and len(first_rejects) == 2
        w.env = {}
        w.start()
        assert wait_consumed(broker, app_id, [topics.cdrs], timeout=120), w.tail()
        wait_for(lambda: w.get("/tenants/rp-d").status == 200, 30, what="the views", workers=(w,))
        assert {t: w.get(f"/tenants/{t}").json()["balance"] for t in ("rp-a", "rp-d")} == {"rp-a": "10.000000", "rp-d": "10.000000"}
        assert consume_all(broker, topics.rated, 10) == []
        # rp-a's reject once; rp-d's once or twice (its batch was replayed), byte for byte the same.
        rejects = by_id_checked([r.raw_value for r in consume_all(broker, topics.rejects, 30)])
        assert sorted(c[0] for c in rejects.values()) == first_rejects
        assert all(len(set(copies)) == 1 for copies in rejects.values())
        copies = {orjson.loads(c[0])["tenant_id"]: len(c) for c in rejects.values()}
        assert copies["rp-a"] == 1, copies
        got = {orjson.loads(c[0])["tenant_id"]: orjson.loads(c[0])["detail"] for c in rejects.values()}
        assert got == {"rp-a": "tenant_id: no account for 'rp-a'", "rp-d": "tenant_id: no account for 'rp-d'"}
        events = by_id_checked([r.raw_value for r in consume_all(broker, topics.events, 10)])
        assert all(len(set(c)) == 1 for c in events.values())
        kinds = sorted((e["tenant_id"], e["type"], e["amount"]) for e in (orjson.loads(c[0]) for c in events.values()))
        assert kinds == [("rp-a", "funds_added", "10.000000"), ("rp-d", "funds_added", "10.000000")]
        assert "skipped 3 record(s) judged before a crash" in w.log(), w.tail()
        assert w.errors() == []
    finally:
        w.__exit__(*sys.exc_info())
