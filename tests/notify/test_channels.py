"""The channels against real servers (rater/notify/channels.py): which failures are worth
another try. An SMTP server in the test process (aiosmtpd) and an HTTP server on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from rater.notify.channels import DeliveryError, EmailChannel, SmtpSettings, WebhookChannel
from rater.notify.messages import parse_event
from tests.support.notify import event, free_port

EVENT = parse_event(event("e-77", "below_zero", "acme", balance="-0.092000", currency="EUR"))


class Sink:
    def __init__(self, rcpt_reply: str | None = None, data_reply: str = "250 OK"):
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.data_reply.startswith("250"):
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return self.data_reply


def send_email(sink: Sink) -> None:
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        channel = EmailChannel(SmtpSettings(host="127.0.0.1", port=port, sender="rater@billing.example"))
        asyncio.run(channel.send(EVENT, ("ops@acme.example", "cfo@acme.example")))
    finally:
        controller.stop()


def test_email_goes_to_every_recipient_with_the_rendered_text():
    sink = Sink()
    send_email(sink)
    [(sender, rcpts, content)] = sink.messages
    assert sender == "rater@billing.example"
    assert rcpts == ["ops@acme.example", "cfo@acme.example"]
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert msg["Subject"] == "[rater] acme: balance below zero (-0.092 EUR), international and toll-free calls blocked"
    assert msg["To"] == "ops@acme.example, cfo@acme.example"
    assert msg["Message-ID"] == "<e-77.acme@rater.notify>"
    assert msg.get_content().replace("\r\n", "\n").startswith("The prepaid credit of acme is below zero: -0.092 EUR.\n")


@pytest.mark.parametrize(
    "sink, message, permanent",
    [
        (Sink(rcpt_reply="550 no such user"), "SMTP refused every recipient: ops@acme.example (550), cfo@acme.example (550)", True),
        (Sink(rcpt_reply="451 try later"), "SMTP refused every recipient: ops@acme.example (451), cfo@acme.example (451)", False),
        (Sink(data_reply="554 rejected as spam"), "SMTP 554 rejected as spam", True),
        (Sink(data_reply="452 mailbox full"), "SMTP 452 mailbox full", False),
    ],
)
def test_smtp_5xx_is_permanent_and_4xx_is_tried_again(sink, message, permanent):
    with pytest.raises(DeliveryError) as exc:
        send_email(sink)
    assert str(exc.value) == message
    assert exc.value.permanent is permanent


def test_an_unreachable_smtp_server_is_tried_again():
    channel = EmailChannel(SmtpSettings(host="127.0.0.1", port=free_port(), timeout=2))
    with pytest.raises(DeliveryError) as exc:
        asyncio.run(channel.send(EVENT, ("ops@acme.example",)))
    assert exc.value.permanent is False
    assert "ConnectionRefusedError" in str(exc.value)


def post_with_status(status: int) -> tuple[list[tuple[str, bytes]], DeliveryError | None]:
    seen: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen.append((self.headers["Idempotency-Key"], self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(status)
            body = b"" if status == 204 else b"no"
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    channel = WebhookChannel(f"http://127.0.0.1:{server.server_address[1]}/h")

    async def go():
        try:
            await channel.send(EVENT, b'{"event_id":"e-77"}')
        finally:
            await channel.close()

    try:
        asyncio.run(go())
        return seen, None
    except DeliveryError as exc:
        return seen, exc
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_posts_the_event_bytes_with_the_idempotency_key():
    seen, error = post_with_status(204)
    assert error is None
    assert seen == [("e-77", b'{"event_id":"e-77"}')]


@pytest.mark.parametrize(
    "status, permanent", [(500, False), (503, False), (429, False), (408, False), (400, True), (404, True), (410, True)]
)
def test_webhook_4xx_is_permanent_except_408_and_429(status, permanent):
    _seen, error = post_with_status(status)
    assert error is not None and error.permanent is permanent
    assert str(error) == f"webhook HTTP {status} no"
