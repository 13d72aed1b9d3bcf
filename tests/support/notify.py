"""Real parts for the `rater notify` tests: an SMTP server in the test process (aiosmtpd),
an HTTP webhook receiver that fails the first tries of chosen tenants, balance events, and
`rater notify` run as a real process."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller

from rater.dev.procs import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Mail:
    to: tuple[str, ...]
    subject: str
    text: str
    event_id: str
    tenant: str
    message_id: str
    at: float


class SmtpSink:
    """aiosmtpd on loopback, keeping every message it accepted."""

    def __init__(self, delay: float = 0.0):
        self.mails: list[Mail] = []
        self.lock = threading.Lock()
        self.delay = delay
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        mail = Mail(
            to=tuple(envelope.rcpt_tos),
            subject=str(msg["Subject"]),
            text=msg.get_content(),
            event_id=str(msg["X-Rater-Event-Id"]),
            tenant=str(msg["X-Rater-Tenant"]),
            message_id=str(msg["Message-ID"]),
            at=time.monotonic(),
        )
        with self.lock:
            self.mails.append(mail)
        return "250 OK"

    def __enter__(self) -> "SmtpSink":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def snapshot(self) -> list[Mail]:
        with self.lock:
            return list(self.mails)


@dataclass
class Post:
    key: str
    body: dict
    status: int
    at: float


@dataclass
class WebhookReceiver:
    """HTTP server answering 503 to the first ``fail_first[tenant]`` POSTs of a tenant's events
    (``-1``: every one, with 500)."""

    fail_first: dict[str, int] = field(default_factory=dict)
    posts: list[Post] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.tries: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Idempotency-Key", "")
                tenant = body.get("tenant_id")
                with receiver.lock:
                    n = receiver.tries[tenant] = receiver.tries.get(tenant, 0) + 1
                    limit = receiver.fail_first.get(tenant, 0)
                    status = 500 if limit == -1 else 503 if n <= limit else 200
                    receiver.posts.append(Post(key, body, status, time.monotonic()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> "WebhookReceiver":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.status == 200]

    def all_posts(self) -> list[Post]:
        with self.lock:
            return list(self.posts)


def event(event_id: str, type_: str, tenant: str, balance: str = "-1.000000", currency: str = "USD", **extra) -> dict:
    e = {
        "event_id": event_id,
        "type": type_,
        "tenant_id": tenant,
        "occurred_at": "2026-11-24T10:00:00Z",
        "cause": {"kind": "cdr", "id": f"cdr-{event_id}"},
        "balance": balance,
        "currency": currency,
    }
    if type_ == "below_zero":
        e["blocked_call_types"] = ["international", "toll_free"]
    elif type_ == "low_balance":
        e["threshold"] = "5.000000"
    elif type_ in ("auto_recharge_succeeded", "auto_recharge_requested", "funds_added"):
        e["amount"] = "25.000000"
    elif type_ == "auto_recharge_failed":
        e["reason"] = "card_expired"
    e.update(extra)
    return e


def start_notify(
    bootstrap: str,
    *,
    topic: str,
    dead_letter: str,
    group: str,
    state_dir: Path,
    web_port: int,
    contacts: Path | None,
    smtp_port: int | None,
    webhook_url: str | None,
    log: Path,
    extra: list[str] | None = None,
) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "rater",
        "notify",
        "--broker",
        bootstrap,
        "--topic-events",
        topic,
        "--topic-dead-letter",
        dead_letter,
        "--group-id",
        group,
        "--state-dir",
        str(state_dir),
        "--web-port",
        str(web_port),
    ]
    if smtp_port is not None:
        argv += ["--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_port), "--smtp-from", "rater@billing.example"]
    if contacts is not None:
        argv += ["--contacts", str(contacts)]
    if webhook_url:
        argv += ["--webhook-url", webhook_url]
    argv += extra or []
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATER_")}
    out = open(log, "ab")
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"rater notify exited ({proc.returncode}) while waiting for {what}:\n" + (log.read_text()[-3000:] if log else "")
            )
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f"\n{log.read_text()[-3000:]}" if log else ""))


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of Prometheus text."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    target = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(target + " "):
            return float(line.split()[-1])
    raise KeyError(target)


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
