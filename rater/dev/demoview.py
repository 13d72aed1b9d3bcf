"""The demo's screen (``make demo``): the worker's metrics parsed into a ``Snapshot``, and the
frame drawn from it (``DemoScreen``, mixed into ``rater.dev.demo.Demo``), the mail sink of the
demo's notifier, and the line helpers. No processes are started here."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rater.dev.procs import free_port

LOWEST = 10
EVENTS_SHOWN = 8
_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

# ---------------------------------------------------------------------------- helpers


def _http(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text to ``name -> [(labels, value)]``."""
    out: dict[str, list[tuple[dict[str, str], float]]] = collections.defaultdict(list)
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL_RE.findall(m.group(2) or ""))
        out[m.group(1)].append((labels, value))
    return out


def _tail_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def _num(n: float) -> str:
    return f"{int(n):,}"


def _money(text: str | None) -> str:
    """``-12.084000`` -> ``-12.08``: the view shows cents, the API keeps micro-units."""
    if not text:
        return "?"
    try:
        return f"{float(text):,.2f}"
    except ValueError:
        return text


# ---------------------------------------------------------------------------- the snapshot


class Snapshot:
    """What one refresh of the view shows, from the worker's metrics."""

    def __init__(self, metrics: dict[str, list[tuple[dict[str, str], float]]]):
        self.records: collections.Counter = collections.Counter()  # (topic, outcome)
        for labels, v in metrics.get("rater_records_total", []):
            self.records[(labels.get("topic", ""), labels.get("outcome", ""))] += v
        self.rejects = {lb.get("reason", ""): v for lb, v in metrics.get("rater_rejects_total", [])}
        self.events = {lb.get("type", ""): v for lb, v in metrics.get("rater_balance_events_total", [])}
        self.recharge_failures = {lb.get("reason", ""): v for lb, v in metrics.get("rater_auto_recharge_failures_total", [])}
        self.tenants = {lb.get("state", ""): v for lb, v in metrics.get("rater_tenants", [])}
        self.charged: collections.Counter = collections.Counter()
        for labels, v in metrics.get("rater_charged_total", []):
            self.charged[labels.get("currency", "")] += v
        self.lag = sum(v for _lb, v in metrics.get("rater_consumer_lag", []))
        buckets = []
        for labels, v in metrics.get("rater_processing_seconds_bucket", []):
            le = labels.get("le", "")
            buckets.append((float("inf") if le == "+Inf" else float(le), v))
        self.buckets = sorted(buckets)

    def cdrs_total(self) -> float:
        return sum(v for (topic, _o), v in self.records.items() if topic == "cdrs")

    def all_total(self) -> float:
        return sum(self.records.values())

    def quantile(self, q: float) -> float | None:
        if not self.buckets or self.buckets[-1][1] <= 0:
            return None
        target = q * self.buckets[-1][1]
        for le, count in self.buckets:
            if count >= target:
                return le
        return None


# ---------------------------------------------------------------------------- the view


class Style:
    def __init__(self, color: bool):
        self.color = color

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and code else text


EVENT_COLORS = {
    "below_zero": "31",
    "low_balance": "33",
    "balance_restored": "32",
    "funds_added": "32",
    "auto_recharge_requested": "36",
    "auto_recharge_succeeded": "32",
    "auto_recharge_failed": "31;1",
    "funds_expired": "35",
}


class DemoScreen:
    """The live view and the summary of ``Demo`` (its attributes: ``rows``, ``events``, ``base``, ...)."""

    def frame(self, width: int) -> list[str]:
        s = self.style
        a = self.args
        snap = self.snap
        elapsed = (self.sim_ended or time.monotonic()) - self.sim_started if self.sim_started else 0.0
        total = f"{a.duration:.0f}s" if a.duration else "until Ctrl-C"
        lines = [
            s("rater demo", "1;36") + f"  broker {self.broker.bootstrap if self.broker else '?'}  worker {self.base}"
            f"  traffic {elapsed:.0f}s / {total}" + s("   (Ctrl-C to stop)", "2"),
            "",
        ]
        if snap is None:
            lines.append("waiting for the first metrics...")
            return lines
        p50, p99 = snap.quantile(0.5), snap.quantile(0.99)

        def lab(text: str) -> str:
            return s(f"{text:<16}", "1")

        def ms(v: float | None) -> str:
            if v is None:
                return "-"
            return "> 10 s" if v == float("inf") else f"<= {v * 1000:g} ms"

        lines.append(
            f"{lab('CDRs/s')} {s(f'{self.rate:,.1f}', '1;32')}   consumer lag {_num(snap.lag)}   processing p50 {ms(p50)}, p99 {ms(p99)}"
        )
        for topic in ("cdrs", "tenant-commands"):
            parts = []
            for outcome, color in (("applied", "32"), ("rejected", "31"), ("duplicate", "33"), ("forwarded", "36")):
                n = snap.records.get((topic, outcome), 0)
                if n or outcome in ("applied", "rejected", "duplicate"):
                    parts.append(f"{s(_num(n), color)} {outcome}")
            lines.append(f"{lab(topic)} " + ", ".join(parts))
        rejects = ", ".join(f"{r} {s(_num(n), '31')}" for r, n in sorted(snap.rejects.items())) or "none"
        lines.append(f"{lab('rejects')} {rejects}")
        states = ", ".join(f"{st} {_num(snap.tenants.get(st, 0))}" for st in ("ok", "low", "negative"))
        charged = ", ".join(f"{v:,.2f} {c}" for c, v in sorted(snap.charged.items())) or "-"
        lines.append(f"{lab('tenants')} {states}      {s('charged', '1')} {charged}")
        lines.append(f"{lab('balance events')} {_events_line(snap.events, s)}")
        lines.append(f"{lab('auto-recharge')} {_recharge_line(snap.events, snap.recharge_failures)}")
        sim = _tail_line(self.sim_log).removeprefix("simulate: ")
        lines.append(f"{lab('simulator')} {sim}")
        if self.sink is not None:
            lines.append(f"{lab('notifications')} {self.notify_line()}")
            for subject in self.sink.last(3):
                lines.append(s(f"  {subject}", "2"))
        lines.append("")
        lines.append(s("Lowest balances (GET /tenants/<id>)", "1;4"))
        hdr = f"  {'tenant':<18}{'plan':<14}{'balance':>14}  {'cur':<4}{'low at':>9}  {'lots':>4}  {'auto-recharge':<22}{'intl/toll-free'}"
        lines.append(s(hdr, "2"))
        for r in self.rows:
            bal = r.get("balance")
            fbal = float(bal) if bal else 0.0
            threshold = r.get("low_balance_threshold")
            low = float(threshold) if threshold else 0.0
            color = "31" if fbal < 0 else ("33" if low > 0 and fbal < low else "32")
            ar = r.get("auto_recharge") or {}
            if not ar or not ar.get("enabled"):
                ars = "off"
            elif ar.get("suspended"):
                ars = s("suspended", "31")
            elif ar.get("pending_request_id"):
                ars = s("pending #" + ar["pending_request_id"].rsplit("/", 1)[-1], "36")
            else:
                ars = f"on < {_money(ar.get('threshold'))}"
            pad = 22 + (len(ars) - len(_strip(ars)))
            blocked = s("blocked", "31") if fbal < 0 else "allowed"
            lines.append(
                f"  {r.get('tenant_id', ''):<18}{r.get('rate_plan', '?'):<14}"
                f"{s(f'{_money(bal):>14}', color)}  {r.get('currency', ''):<4}{_money(threshold):>9}  "
                f"{len(r.get('lots') or ()):>4}  {ars:<{pad}}{blocked}"
            )
        for _ in range(LOWEST - len(self.rows)):
            lines.append("")
        lines.append("")
        lines.append(s("Latest balance events (balance-events)", "1;4"))
        lines.append(s(f"  {'time':<9}{'tenant':<18}{'type':<24}{'balance':>12} {'cur':<4} {'detail':<24}cause", "2"))
        for e in list(self.events)[::-1]:
            t = (e.get("occurred_at") or "")[11:19]
            typ = e.get("type", "")
            cause = e.get("cause") or {}
            cause_id = cause.get("id", "")
            if len(cause_id) > 24:
                cause_id = "..." + cause_id[-21:]
            lines.append(
                f"  {t:<9}{e.get('tenant_id', ''):<18}{s(f'{typ:<24}', EVENT_COLORS.get(typ, ''))}"
                f"{_money(e.get('balance')):>12} {e.get('currency', ''):<4} {_event_detail(e)[:23]:<24}"
                f"{s(cause.get('kind', '') + ' ' + cause_id, '2')}"
            )
        for _ in range(EVENTS_SHOWN - len(self.events)):
            lines.append("")
        lines.append("")
        lines.append(s("Try", "1;4"))
        example = self.rows[0]["tenant_id"] if self.rows else "acme-0000"
        lines.append(f"  curl -s {self.base}/metrics | grep rater_records_total")
        lines.append(f"  curl -s {self.base}/tenants/{example}")
        lines.append(f"  curl -s '{self.base}/tenants/{example}/authorize?call_type=international&to=%2B447700900123'")
        return [_clip(line, width) for line in lines]

    def notify_line(self) -> str:
        if self.sink is None:
            return "off"
        n = self.notify_snap
        state = "" if self.notify is None or self.notify.alive() else f" (rater notify exited {self.notify.returncode})"
        return (
            f"{_num(self.sink.count())} emails received by the sink 127.0.0.1:{self.sink.port}; notify sent "
            f"{_num(n.get('rater_notify_sent_total:email', 0))}, retried {_num(n.get('rater_notify_retried_total:email', 0))}, "
            f"dead-lettered {_num(n.get('rater_notify_dead_lettered_total:email', 0))}{state}"
        )

    def plain_line(self) -> str:
        snap = self.snap
        elapsed = (self.sim_ended or time.monotonic()) - self.sim_started if self.sim_started else 0.0
        if snap is None:
            return f"[{elapsed:4.0f}s] waiting for metrics"
        rec = snap.records
        lowest = ", ".join(f"{r.get('tenant_id')} {_money(r.get('balance'))} {r.get('currency', '')}" for r in self.rows[:3])
        rejects = " ".join(f"{k}={_num(v)}" for k, v in sorted(snap.rejects.items())) or "none"
        return (
            f"[{elapsed:4.0f}s] {self.rate:,.1f} CDRs/s | cdrs applied {_num(rec.get(('cdrs', 'applied'), 0))} "
            f"rejected {_num(rec.get(('cdrs', 'rejected'), 0))} duplicate {_num(rec.get(('cdrs', 'duplicate'), 0))} "
            f"| commands applied {_num(rec.get(('tenant-commands', 'applied'), 0))} | rejects {rejects} "
            f"| tenants ok {_num(snap.tenants.get('ok', 0))} low {_num(snap.tenants.get('low', 0))} "
            f"negative {_num(snap.tenants.get('negative', 0))} | lowest: {lowest or '-'}"
            + (f" | emails {_num(self.sink.count())}" if self.sink else "")
        )

    def draw(self) -> None:
        size = shutil.get_terminal_size((120, 40))
        lines = self.frame(size.columns)[: size.lines - 1]
        out = "\x1b[H" + "".join(line + "\x1b[K\n" for line in lines) + "\x1b[J"
        sys.stdout.write(out)
        sys.stdout.flush()

    # --- the run -------------------------------------------------------------------------

    async def live(self) -> None:
        last_plain = 0.0
        drained_since: float | None = None
        if self.tty:
            sys.stdout.write("\x1b[?1049h\x1b[?25l\x1b[2J")  # alternate screen, no cursor
        try:
            while not self.stop.is_set():
                tick = time.monotonic()
                await self.refresh()
                if self.tty:
                    self.draw()
                elif tick - last_plain >= self.args.plain_interval:
                    last_plain = tick
                    print(self.plain_line(), flush=True)
                assert self.worker is not None and self.sim is not None
                if not self.worker.alive():
                    self.worker_died = True
                    break
                if not self.sim.alive():
                    if self.sim_ended is None:
                        self.sim_ended = time.monotonic()
                        self.last_total = -1.0
                    # let the worker finish what is in the topics, then stop
                    total = self.snap.all_total() if self.snap else 0.0
                    if self.snap is not None and self.snap.lag == 0 and total == self.last_total:
                        drained_since = drained_since or time.monotonic()
                        if time.monotonic() - drained_since >= 1.0:
                            break
                    else:
                        drained_since = None
                    self.last_total = total
                    if time.monotonic() - self.sim_ended > 20:
                        break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=max(0.05, 1.0 - (time.monotonic() - tick)))
        finally:
            if self.consume_task is not None:
                self.consume_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.consume_task
            if self.tty:
                sys.stdout.write("\x1b[?25h\x1b[?1049l")
                sys.stdout.flush()

    def summary(self) -> None:
        snap = self.snap
        elapsed = (self.sim_ended or time.monotonic()) - self.sim_started if self.sim_started else 0.0
        print()
        print(f"rater demo: ran {elapsed:.0f}s" + (" (interrupted)" if self.interrupted else ""))
        sim = _tail_line(self.sim_log).removeprefix("simulate: ")
        if sim:
            print(f"  simulator        {sim}")
        if snap is None:
            print("  no metrics were read from the worker")
        else:
            rec = snap.records
            for topic in ("cdrs", "tenant-commands"):
                parts = [f"{_num(rec.get((topic, o), 0))} {o}" for o in ("applied", "rejected", "duplicate")]
                if rec.get((topic, "forwarded")):
                    parts.append(f"{_num(rec[(topic, 'forwarded')])} forwarded")
                print(f"  {topic:<17}{', '.join(parts)}")
            print(f"  rejects          {', '.join(f'{k} {_num(v)}' for k, v in sorted(snap.rejects.items())) or 'none'}")
            print(f"  charged          {', '.join(f'{v:,.2f} {c}' for c, v in sorted(snap.charged.items())) or '-'}")
            print(f"  balance events   {_events_line(snap.events, Style(False))}")
            print(f"  auto-recharge    {_recharge_line(snap.events, snap.recharge_failures)}")
            print("  tenants          " + ", ".join(f"{st} {_num(snap.tenants.get(st, 0))}" for st in ("ok", "low", "negative")))
        if self.sink is not None:
            print(f"  notifications    {self.notify_line()}")
            for subject in self.sink.last(3):
                print(f"                   {subject}")
        if self.rows:
            low = ", ".join(f"{r.get('tenant_id')} {_money(r.get('balance'))} {r.get('currency', '')}" for r in self.rows[:3])
            print(f"  lowest balances  {low}")
        print(
            f"  logs             {self._rel(self.worker_log)}, {self._rel(self.sim_log)}, {self._rel(self.notify_log)}, "
            f"{self._rel(self.broker_dir / 'logs')}"
        )

    async def main(self) -> int:
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            self.interrupted = True
            self.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt)
        self.started = time.monotonic()
        self.start_worker()
        if not await self.wait_ready():
            return 130 if self.stop.is_set() else 1
        self.say("worker ready")
        self.start_notifier()
        self.consume_task = asyncio.create_task(self.consume())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.consuming.wait(), timeout=15)
        self.start_simulator()
        await self.live()
        if self.worker_died:
            self.say(f"the worker exited ({self.worker.returncode if self.worker else '?'}); the end of {self._rel(self.worker_log)}:")
            print(_tail(self.worker_log), file=sys.stderr)
            return 1
        return 0  # Ctrl-C is the way to end a demo without --duration


class MailSink:
    """An SMTP server on loopback (aiosmtpd, in a thread of this process) that keeps the
    count and the latest subjects of what it receives: where the demo's emails go."""

    def __init__(self) -> None:
        import email
        import email.policy
        import threading

        from aiosmtpd.controller import Controller

        self._lock = threading.Lock()
        self._count = 0
        self._subjects: collections.deque[str] = collections.deque(maxlen=10)
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                with sink._lock:
                    sink._count += 1
                    sink._subjects.append(f"to {', '.join(envelope.rcpt_tos)}: {' '.join(str(msg['Subject']).split())}")
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def count(self) -> int:
        with self._lock:
            return self._count

    def last(self, n: int) -> list[str]:
        with self._lock:
            return list(self._subjects)[-n:][::-1]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._controller.stop()


def _events_line(events: dict[str, float], s: Style) -> str:
    parts = []
    for typ in ("funds_added", "funds_expired", "low_balance", "below_zero", "balance_restored"):
        n = events.get(typ, 0)
        if n or typ != "funds_expired":
            parts.append(f"{typ} {s(_num(n), EVENT_COLORS.get(typ, ''))}")
    return ", ".join(parts)


def _recharge_line(events: dict[str, float], failures: dict[str, float]) -> str:
    """Counts that add up: of the requests, succeeded + failed + pending; the failures
    for an expired card are apart, as no request was made for them. (A request that
    timed out and was paid later counts as failed and as succeeded, so pending is then
    not shown below zero.)"""
    requested = events.get("auto_recharge_requested", 0)
    succeeded = events.get("auto_recharge_succeeded", 0)
    expired = failures.get("card_expired", 0)
    failed = events.get("auto_recharge_failed", 0) - expired
    pending = max(requested - succeeded - failed, 0)
    return (
        f"{_num(requested)} requested: {_num(succeeded)} succeeded, {_num(failed)} failed, {_num(pending)} pending; "
        f"{_num(expired)} not requested (card expired)"
    )


def _event_detail(e: dict[str, Any]) -> str:
    typ = e.get("type")
    if typ == "low_balance":
        return f"below {_money(e.get('threshold'))}"
    if typ == "below_zero":
        return "blocks " + "/".join(
            c.replace("international", "intl").replace("toll_free", "toll-free") for c in e.get("blocked_call_types") or ()
        )
    if typ == "auto_recharge_failed":
        return str(e.get("reason", ""))
    if typ in ("auto_recharge_requested", "auto_recharge_succeeded"):
        return f"+{_money(e.get('amount'))} #{str(e.get('request_id', '')).rsplit('/', 1)[-1]}"
    if typ in ("funds_added", "funds_expired"):
        return f"{'+' if typ == 'funds_added' else '-'}{_money(e.get('amount'))}"
    return ""


def _strip(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def _clip(line: str, width: int) -> str:
    """Cut a line with ANSI escapes to ``width`` visible characters."""
    if len(_strip(line)) <= width:
        return line
    out, visible, i = [], 0, 0
    while i < len(line) and visible < width:
        if line[i] == "\x1b":
            j = line.find("m", i)
            if j < 0:
                break
            out.append(line[i : j + 1])
            i = j + 1
            continue
        out.append(line[i])
        visible += 1
        i += 1
    return "".join(out) + "\x1b[0m"
