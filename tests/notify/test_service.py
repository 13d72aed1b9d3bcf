"""`rater notify` end to end (SPEC 11): a real broker, a real SMTP server (aiosmtpd) in the
test process, a real HTTP webhook receiver that fails the first tries, and `rater notify`
as a real process. The expected mails, posts, dead letters and metrics are listed by hand
from the events each test publishes."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
import uuid

import pytest

from rater.dev.schemas import validator
from tests.support.kafka import consume_all, create_topic, produce
from tests.support.notify import (
    ROOT,
    SmtpSink,
    WebhookReceiver,
    event,
    free_port,
    http_get,
    metric,
    start_notify,
    stop,
    wait_for,
)

pytestmark = pytest.mark.kafka

ACME = ("ops@acme.example", "cfo@acme.example")


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    async def go():
        from aiokafka import AIOKafkaConsumer, TopicPartition

        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await c.start()
        try:
            return {p: await c.committed(TopicPartition(topic, p)) for p in range(partitions)}
        finally:
            await c.stop()

    return asyncio.run(go())


def test_notifications_are_sent_retried_dead_lettered_deduplicated_and_survive_a_restart(kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap
    run = uuid.uuid4().hex[:8]
    topic, dead, group = f"be-{run}", f"dl-{run}", f"notify-{run}"
    create_topic(bootstrap, topic, 1)  # one partition: every tenant shares it, so head-of-line blocking would show
    # the dead-letter topic is created by rater notify (with the events topic's partition count)
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        "tenant_id,email\nacme,ops@acme.example\nacme,cfo@acme.example\nglobex,it@globex.example\ninitech,it@initech.example\n"
    )
    i1 = event("i1", "below_zero", "initech")
    a1 = event("a1", "low_balance", "acme", balance="4.500000")
    a2 = event("a2", "below_zero", "acme", balance="-0.250000")
    g1 = event("g1", "auto_recharge_failed", "globex", currency="EUR")
    a3 = event("a3", "funds_added", "acme", lot_id="acme-topup", expires_at="2027-11-24T10:00:00Z")
    h1 = event("h1", "below_zero", "hooli")
    a4 = event(
        "a4",
        "auto_recharge_succeeded",
        "acme",
        balance="24.750000",
        request_id="acme/recharge/1",
        lot_id="acme/recharge/1",
        expires_at="2027-11-24T10:00:00Z",
    )
    g2 = event("g2", "low_balance", "globex", balance="3.000000", currency="EUR")
    records = [
        ("initech", i1),
        ("acme", a1),
        ("acme", a2),
        ("globex", g1),
        ("acme", a3),
        ("hooli", h1),
        (None, b"{not json"),
        ("acme", a4),
        ("acme", a2),
        ("globex", g2),
    ]
    produce(bootstrap, topic, records)

    port = free_port()
    log = tmp_path / "notify.log"
    # initech's webhook fails every time; globex's the first two times.
    with SmtpSink() as smtp, WebhookReceiver(fail_first={"initech": -1, "globex": 2}) as hook:
        proc = start_notify(
            bootstrap,
            topic=topic,
            dead_letter=dead,
            group=group,
            state_dir=tmp_path / "state",
            web_port=port,
            contacts=contacts,
            smtp_port=smtp.port,
            webhook_url=hook.url,
            log=log,
            extra=["--attempts", "4", "--backoff", "1", "--backoff-max", "30"],
        )
        try:
            wait_for(lambda: len(hook.all_posts()) >= 4 + 3 + 5, 60, "every webhook try", proc, log)
            wait_for(lambda: len(smtp.snapshot()) >= 6, 30, "six emails", proc, log)
            dead_letters = consume_all(bootstrap, dead, 30, expect=2)
            wait_for(lambda: committed_offsets(bootstrap, group, topic, 1)[0] == 10, 30, "offset 10 committed", proc, log)

            # Emails: one per selected event of a tenant with contacts, in event order; a2 once.
            mails = smtp.snapshot()
            assert [(m.event_id, m.to) for m in mails if m.tenant == "acme"] == [("a1", ACME), ("a2", ACME), ("a4", ACME)]
            assert sorted((m.event_id, m.to) for m in mails if m.tenant != "acme") == [
                ("g1", ("it@globex.example",)),
                ("g2", ("it@globex.example",)),
                ("i1", ("it@initech.example",)),
            ]
            by_id = {m.event_id: m for m in mails}
            assert by_id["a2"].subject == ("[rater] acme: balance below zero (-0.25 USD), international and toll-free calls blocked")
            assert by_id["g1"].subject == "[rater] globex: auto-recharge failed (the card on file has expired)"
            assert by_id["a4"].subject == "[rater] acme: auto-recharge added 25.00 USD"
            assert by_id["a1"].subject == "[rater] acme: balance low (4.50 USD, threshold 5.00 USD)"
            assert by_id["a2"].message_id == "<a2.acme@rater.notify>"
            assert "Blocked call types: international and toll-free calls" in by_id["a2"].text

            # Webhook: every selected event delivered once (hooli has no email contact, but a webhook).
            delivered = hook.delivered()
            assert sorted(p.key for p in delivered) == ["a1", "a2", "a4", "g1", "g2", "h1"]
            assert [p.key for p in delivered if p.body["tenant_id"] == "acme"] == ["a1", "a2", "a4"]
            assert {p.key: p.body for p in delivered}["a2"] == a2  # the event's JSON as published
            posts = hook.all_posts()
            assert [p.status for p in posts if p.key == "g1"] == [503, 503, 200]
            initech = [p for p in posts if p.key == "i1"]
            assert [p.status for p in initech] == [500, 500, 500, 500]
            # No head-of-line blocking: everything published after initech's event was delivered
            # before initech's last try (1 + 2 + 4 = 7 s of backoff after its first).
            assert max(p.at for p in delivered) < initech[-1].at
            assert initech[-1].at - initech[0].at >= 7.0

            # Dead letters: initech's webhook after 4 tries, and the record that is not JSON.
            dl = sorted((r.value for r in dead_letters), key=lambda v: v["source"]["offset"])
            assert [list(validator("notify-dead-letter").iter_errors(v)) for v in dl] == [[], []]
            assert dl[0]["event_id"] == "i1" and dl[0]["channel"] == "webhook" and dl[0]["attempts"] == 4
            assert dl[0]["error"] == "webhook HTTP 500"
            assert dl[0]["event"] == i1 and dl[0]["source"] == {"topic": topic, "partition": 0, "offset": 0}
            assert dl[1]["channel"] is None and dl[1]["event_id"] is None and dl[1]["raw"] == "{not json"
            assert dl[1]["error"].startswith("invalid_json: ") and dl[1]["source"]["offset"] == 6
            assert [r.key for r in sorted(dead_letters, key=lambda r: r.value["source"]["offset"])] == ["initech", None]

            status, body = http_get(f"http://127.0.0.1:{port}/healthz")
            assert status == 200 and '"status":"ok"' in body
            _, text = http_get(f"http://127.0.0.1:{port}/metrics")
            assert metric(text, "rater_notify_sent_total", channel="email") == 6
            assert metric(text, "rater_notify_sent_total", channel="webhook") == 6
            assert metric(text, "rater_notify_retried_total", channel="webhook") == 2 + 3
            assert metric(text, "rater_notify_retried_total", channel="email") == 0
            assert metric(text, "rater_notify_dead_lettered_total", channel="webhook") == 1
            assert metric(text, "rater_notify_dead_lettered_total", channel="none") == 1
            assert metric(text, "rater_notify_duplicates_total", channel="email") == 1  # the repeated a2
            assert metric(text, "rater_notify_duplicates_total", channel="webhook") == 1
            assert metric(text, "rater_notify_events_total", outcome="selected") == 8
            assert metric(text, "rater_notify_events_total", outcome="ignored") == 1
            assert metric(text, "rater_notify_events_total", outcome="invalid") == 1
            assert metric(text, "rater_notify_no_recipients_total") == 1  # hooli
            # The alert rules name only notifier metrics that it exports.
            rules = (ROOT / "deploy" / "prometheus" / "rules" / "rater.rules.yml").read_text()
            named = set(re.findall(r"\b(rater_notify_[a-z_]+)", rules))
            exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
            assert named and named <= exported, named - exported

            # The contacts file is read again when it changes: hooli gets an address.
            contacts.write_text(contacts.read_text() + "hooli,noc@hooli.example\n")
            st = contacts.stat()
            os.utime(contacts, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            h2 = event("h2", "low_balance", "hooli", balance="2.000000")
            produce(bootstrap, topic, [("hooli", h2)])
            wait_for(lambda: any(m.event_id == "h2" for m in smtp.snapshot()), 30, "hooli's email", proc, log)
            assert [m.to for m in smtp.snapshot() if m.event_id == "h2"] == [("noc@hooli.example",)]
        finally:
            stop(proc)
        assert proc.returncode == 0, log.read_text()[-2000:]

        # A restart in a new consumer group reads every event again: nothing is sent or
        # dead-lettered twice, because the handled ids are on disk.
        sent_mails, sent_posts = len(smtp.snapshot()), len(hook.all_posts())
        port2 = free_port()
        proc = start_notify(
            bootstrap,
            topic=topic,
            dead_letter=dead,
            group=group + "-replay",
            state_dir=tmp_path / "state",
            web_port=port2,
            contacts=contacts,
            smtp_port=smtp.port,
            webhook_url=hook.url,
            log=log,
            extra=["--attempts", "4", "--backoff", "1"],
        )
        try:
            wait_for(lambda: committed_offsets(bootstrap, group + "-replay", topic, 1)[0] == 11, 60, "the replay committed", proc, log)
            _, text = http_get(f"http://127.0.0.1:{port2}/metrics")
            assert metric(text, "rater_notify_duplicates_total", channel="email") == 8  # 6 + h2 + the repeated a2
            assert metric(text, "rater_notify_duplicates_total", channel="webhook") == 9  # 7 + h2 + the repeated a2
            # h1 is the one email sent: hooli had no address when h1 was first read.
            assert metric(text, "rater_notify_sent_total", channel="email") == 1
            assert metric(text, "rater_notify_sent_total", channel="webhook") == 0
            assert metric(text, "rater_notify_dead_lettered_total", channel="webhook") == 0
        finally:
            stop(proc)
        assert [m.event_id for m in smtp.snapshot()[sent_mails:]] == ["h1"]
        assert len(hook.all_posts()) == sent_posts


def test_sigkill_mid_stream_then_restart_delivers_every_event_in_tenant_order(kafka_broker, tmp_path):
    """SIGKILL `rater notify` while it sends, start it again: every event reaches both
    channels, each tenant's in event order. A send the server had accepted when the process
    died, but that was not yet written to the store, is sent once more (at least once); it
    carries the same Message-ID / Idempotency-Key, so the receiver sees each event once."""
    bootstrap = kafka_broker.bootstrap
    run = uuid.uuid4().hex[:8]
    topic, dead, group = f"be-kill-{run}", f"dl-kill-{run}", f"notify-kill-{run}"
    create_topic(bootstrap, topic, 4)
    create_topic(bootstrap, dead, 1)
    tenants = [f"t{n:02d}" for n in range(20)]
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("".join(f"{t},admin@{t}.example\n" for t in tenants))
    types = ["low_balance", "below_zero", "auto_recharge_failed", "auto_recharge_succeeded"]
    order = {t: [f"{t}-{i:02d}" for i in range(20)] for t in tenants}
    produce(bootstrap, topic, [(t, event(f"{t}-{i:02d}", types[i % 4], t)) for i in range(20) for t in tenants])
    total = len(tenants) * 20

    log = tmp_path / "notify.log"
    with SmtpSink(delay=0.03) as smtp, WebhookReceiver() as hook:

        def start():
            return start_notify(
                bootstrap,
                topic=topic,
                dead_letter=dead,
                group=group,
                state_dir=tmp_path / "state",
                web_port=free_port(),
                contacts=contacts,
                smtp_port=smtp.port,
                webhook_url=hook.url,
                log=log,
            )

        proc = start()
        try:
            wait_for(lambda: len(smtp.snapshot()) >= total // 4, 60, "a quarter of the emails", proc, log)
            # Not right after a mail arrived (the poll would tie the kill to the sink's own timing).
            time.sleep(random.uniform(0.0, 0.2))
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            proc.wait()
            at_kill = len({m.event_id for m in smtp.snapshot()})
            assert at_kill < total, "the stream was over before the kill"
            time.sleep(0.5)  # sends of the dead process's threads are over
            proc = start()
            wait_for(
                lambda: (
                    {m.event_id for m in smtp.snapshot()} >= {e for ids in order.values() for e in ids}
                    and {p.key for p in hook.delivered()} >= {e for ids in order.values() for e in ids}
                ),
                120,
                "every event on both channels after the restart",
                proc,
                log,
            )
            wait_for(
                lambda: sum(v or 0 for v in committed_offsets(bootstrap, group, topic, 4).values()) == total,
                30,
                "every offset committed",
                proc,
                log,
            )
        finally:
            stop(proc)

        mails, posts = smtp.snapshot(), hook.delivered()
        for t in tenants:
            first_mail = list(dict.fromkeys(m.event_id for m in mails if m.tenant == t))
            first_post = list(dict.fromkeys(p.key for p in posts if p.body["tenant_id"] == t))
            assert first_mail == order[t], t
            assert first_post == order[t], t
        # Repeats: only a send under way at the kill, so at most one per tenant and channel,
        # each with the first one's keys.
        mail_repeats = len(mails) - total
        post_repeats = len(posts) - total
        for t in tenants:
            assert len([m for m in mails if m.tenant == t]) - 20 in (0, 1), t
            assert len([p for p in posts if p.body["tenant_id"] == t]) - 20 in (0, 1), t
        assert len({m.message_id for m in mails}) == total
        assert all(m.message_id == f"<{m.event_id}.{m.tenant}@rater.notify>" for m in mails)
        assert len({p.key for p in posts}) == total
        assert consume_all(bootstrap, dead, 3) == []
        seen: dict[str, float] = {}
        for m in mails:
            if m.event_id in seen:
                print(f"repeat {m.event_id}: first copy {1000 * (seen[m.event_id] - killed_at):+.0f} ms after the kill")
            else:
                seen[m.event_id] = m.at
        print(f"kill after {at_kill} of {total} emails; repeated sends: email {mail_repeats}, webhook {post_repeats}")
