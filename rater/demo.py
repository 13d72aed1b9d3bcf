"""``python -m rater.demo`` (``make demo``): a broker, a worker, traffic and a live view.

1. Starts a fresh local Kafka broker (``rater.devbroker``, data under ``.kafka/demo``;
   the first run fetches the broker jars with Maven).
2. Starts one ``rater worker`` (4 partitions, a free web port, state in
   ``.kafka/demo/state``, log in ``.kafka/demo/worker.log``) and waits for ``/readyz``.
3. Runs ``rater simulate`` (log in ``.kafka/demo/simulate.log``) for ``--duration``
   seconds (default 60; 0 runs until Ctrl-C): 200 tenants set up, CDRs at 200/s, 1 %
   bad records, a payment service answering recharge requests.
4. Shows, once a second: CDRs/s (deltas of ``rater_records_total``), totals by outcome,
   rejects by reason, the tenants with the lowest balances (``GET /tenants/<id>``), the
   latest balance events (consumed from ``balance-events``) and URLs to try with curl.
   On a terminal it redraws one screen with ANSI escapes; otherwise (or ``--plain``)
   it prints a status line every few seconds.
5. Starts ``rater notify`` (log in ``.kafka/demo/notify.log``) with an SMTP sink in this
   process (aiosmtpd on a free loopback port) and a contacts file naming one address per
   simulated tenant (``.kafka/demo/contacts.csv``); the view shows the emails the sink
   received and their latest subjects, and the notifier's retried and dead-lettered counts.
6. At the end, or on Ctrl-C, stops the simulator, the notifier, the worker and the broker,
   and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from . import devbroker

PARTITIONS = 4
LOWEST = 10
EVENTS_SHOWN = 8
_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# ---------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


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


def _stop_process(proc: subprocess.Popen | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


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
    "below_zero": "31", "low_balance": "33", "balance_restored": "32", "funds_added": "32",
    "auto_recharge_requested": "36", "auto_recharge_succeeded": "32", "auto_recharge_failed": "31;1",
    "funds_expired": "35",
}  # fmt: skip


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.root = devbroker.repo_root()
        self.dir = self.root / ".kafka" / "demo"
        self.broker_dir = self.dir / "broker"
        self.worker_log = self.dir / "worker.log"
        self.sim_log = self.dir / "simulate.log"
        self.notify_log = self.dir / "notify.log"
        self.notify: subprocess.Popen | None = None
        self.notify_base = ""
        self.sink: MailSink | None = None
        self.notify_snap: dict[str, float] = {}
        self.broker: devbroker.BrokerInfo | None = None
        self.worker: subprocess.Popen | None = None
        self.sim: subprocess.Popen | None = None
        self.port = 0
        self.base = ""
        self.stop = asyncio.Event()
        self.interrupted = False
        self.tty = sys.stdout.isatty() and not args.plain
        self.style = Style(self.tty and not os.environ.get("NO_COLOR"))
        self.balances: dict[str, tuple[float, str]] = {}  # tenant -> (balance, currency), from the topics
        self.events: collections.deque = collections.deque(maxlen=EVENTS_SHOWN)
        self.rows: list[dict[str, Any]] = []
        self.snap: Snapshot | None = None
        self.window: collections.deque = collections.deque()  # (time, cdrs total)
        self.rate = 0.0
        self.started = 0.0
        self.sim_started = 0.0
        self.sim_ended: float | None = None
        self.worker_died = False
        self.last_total = -1.0
        self.consuming = asyncio.Event()
        self.consume_task: asyncio.Task | None = None

    # --- lifecycle -------------------------------------------------------------------

    def say(self, msg: str) -> None:
        print(f"rater demo: {msg}", file=sys.stderr, flush=True)

    def start_broker(self) -> None:
        with contextlib.suppress(devbroker.DevBrokerError):
            devbroker.stop(self.broker_dir, quiet=True)  # a leftover of an interrupted demo
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        devbroker.ensure_jars(quiet=False)
        self.say("starting a local Kafka broker...")
        self.broker = devbroker.start(self.broker_dir, die_with_parent=True, quiet=True)
        self.say(f"broker at {self.broker.bootstrap} (data in {self._rel(self.broker_dir)})")

    def _rel(self, p: Path) -> str:
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return str(p)

    def start_worker(self) -> None:
        assert self.broker is not None
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "rater", "worker", "--broker", self.broker.bootstrap,
               "--rates", str(self.rates_dir()), "--state-dir", str(self.dir / "state"),
               "--web-port", str(self.port), "--partitions", str(PARTITIONS), "--app-id", "rater-demo"]  # fmt: skip
        self.say(f"starting a worker (web {self.base}, log {self._rel(self.worker_log)})...")
        with open(self.worker_log, "ab") as log:
            self.worker = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           cwd=self.root, start_new_session=True,
                                           preexec_fn=_die_with_parent)  # fmt: skip

    def start_notifier(self) -> None:
        """An SMTP sink here, a contacts file for the simulated tenants, and `rater notify`."""
        assert self.broker is not None
        try:
            self.sink = MailSink()
        except ImportError:
            self.say("aiosmtpd is not installed (it comes with the test extra): no notifications in this demo")
            return
        from .traffic import tenant_id_of

        contacts = self.dir / "contacts.csv"
        n = self.args.tenants
        contacts.write_text("tenant_id,email\n" + "".join(
            f"{tenant_id_of(i, n)},admin@{tenant_id_of(i, n)}.example\n" for i in range(n)))  # fmt: skip
        port = _free_port()
        self.notify_base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "rater", "notify", "--broker", self.broker.bootstrap,
               "--group-id", "rater-demo-notify", "--contacts", str(contacts), "--smtp-host", "127.0.0.1",
               "--smtp-port", str(self.sink.port), "--smtp-from", "rater-demo@localhost",
               "--state-dir", str(self.dir / "notify"), "--web-port", str(port)]  # fmt: skip
        self.say(f"starting rater notify (email to an SMTP sink on 127.0.0.1:{self.sink.port}, "
                 f"log {self._rel(self.notify_log)})")  # fmt: skip
        with open(self.notify_log, "ab") as log:
            self.notify = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           cwd=self.root, start_new_session=True,
                                           preexec_fn=_die_with_parent)  # fmt: skip

    def rates_dir(self) -> Path:
        return Path(self.args.rates).resolve() if self.args.rates else self.root / "rate_tables"

    async def wait_ready(self, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            assert self.worker is not None
            if self.worker.poll() is not None:
                self.say(f"the worker exited ({self.worker.returncode}); the end of {self._rel(self.worker_log)}:")
                print(_tail(self.worker_log), file=sys.stderr)
                return False
            status, _body = await asyncio.to_thread(_http, self.base + "/readyz", 1.0)
            if status == 200:
                return True
            await asyncio.sleep(0.5)
        if not self.stop.is_set():
            self.say(f"the worker is not ready after {timeout:.0f}s; see {self._rel(self.worker_log)}")
        return False

    def start_simulator(self) -> None:
        assert self.broker is not None
        a = self.args
        cmd = [sys.executable, "-m", "rater", "simulate", "--broker", self.broker.bootstrap,
               "--tenants", str(a.tenants), "--rate", str(a.rate), "--duration", str(a.duration),
               "--bad-share", str(a.bad_share), "--seed", str(a.seed), "--rates", str(self.rates_dir()),
               "--funds-scale", str(a.funds_scale), "--status-interval", "1"]  # fmt: skip
        self.say(f"starting the simulator ({a.tenants} tenants, {a.rate:g} records/s, log {self._rel(self.sim_log)})")
        with open(self.sim_log, "ab") as log:
            self.sim = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.root, start_new_session=True,
                                        preexec_fn=_die_with_parent)  # fmt: skip
        self.sim_started = time.monotonic()

    def shutdown(self) -> None:
        if self.sim is not None and self.sim.poll() is None:
            self.say("stopping the simulator...")
            _stop_process(self.sim, 15)
        if self.notify is not None and self.notify.poll() is None:
            self.say("stopping rater notify...")
            _stop_process(self.notify, 20)
        if self.sink is not None:
            self.sink.stop()
        if self.worker is not None and self.worker.poll() is None:
            self.final_snapshot()
            self.say("stopping the worker...")
            _stop_process(self.worker, 30)
        if self.broker is not None:
            self.say("stopping the broker...")
            with contextlib.suppress(devbroker.DevBrokerError):
                devbroker.stop(self.broker_dir, quiet=True)

    def final_snapshot(self, timeout: float = 8.0) -> None:
        """The worker's metrics once it has rated what the simulator sent, for the summary."""
        if not self.base:
            return
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status, body = _http(self.base + "/metrics", 2.0)
            if status != 200:
                return
            snap = Snapshot(parse_metrics(body.decode("utf-8", "replace")))
            self.snap = snap
            if snap.lag == 0 and last is not None and snap.all_total() == last:
                break
            last = snap.all_total()
            time.sleep(0.5)
        for row in self.rows:
            status, body = _http(f"{self.base}/tenants/{row.get('tenant_id')}", 1.0)
            if status == 200:
                with contextlib.suppress(orjson.JSONDecodeError):
                    row.update(orjson.loads(body))
        self.rows.sort(key=lambda r: float(r.get("balance") or 0))

    # --- data ----------------------------------------------------------------------------

    async def consume(self) -> None:
        """Latest balance per tenant (rated CDRs and balance events) and the last events."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        assert self.broker is not None
        consumer = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="latest")  # fmt: skip
        await consumer.start()
        try:
            tps = []
            for topic in ("rated-cdrs", "balance-events"):
                parts = None
                for _ in range(50):
                    parts = consumer.partitions_for_topic(topic)
                    if parts:
                        break
                    await consumer._client.force_metadata_update()  # noqa: SLF001 - no public way
                    await asyncio.sleep(0.2)
                tps += [TopicPartition(topic, p) for p in sorted(parts or ())]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:  # resolve "the end" now, before the simulator sends anything
                await consumer.position(tp)
            self.consuming.set()
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, msgs in batch.items():
                    for m in msgs:
                        try:
                            v = orjson.loads(m.value)
                        except orjson.JSONDecodeError:
                            continue
                        if tp.topic == "rated-cdrs":
                            bal = v.get("balance_after")
                        else:
                            bal = v.get("balance")
                            self.events.append(v)
                        if bal is not None:
                            with contextlib.suppress(ValueError, TypeError):
                                self.balances[v["tenant_id"]] = (float(bal), v.get("currency", ""))
        finally:
            await consumer.stop()

    async def refresh(self) -> None:
        if self.notify_base:
            status, body = await asyncio.to_thread(_http, self.notify_base + "/metrics", 1.0)
            if status == 200:
                snap: dict[str, float] = {}
                for name, samples in parse_metrics(body.decode("utf-8", "replace")).items():
                    for labels, value in samples:
                        snap[f"{name}:{labels.get('channel', '')}"] = value
                self.notify_snap = snap
        status, body = await asyncio.to_thread(_http, self.base + "/metrics", 2.0)
        if status == 200:
            self.snap = Snapshot(parse_metrics(body.decode("utf-8", "replace")))
            now = time.monotonic()
            total = self.snap.cdrs_total()
            self.window.append((now, total))
            while len(self.window) > 2 and now - self.window[0][0] > 5.0:
                self.window.popleft()
            t0, c0 = self.window[0]
            self.rate = (total - c0) / (now - t0) if now > t0 else 0.0
        lowest = sorted(self.balances.items(), key=lambda kv: kv[1][0])[:LOWEST]
        rows = []
        for tenant, (bal, cur) in lowest:
            status, body = await asyncio.to_thread(_http, f"{self.base}/tenants/{tenant}", 1.0)
            if status != 200:
                rows.append({"tenant_id": tenant, "balance": str(bal), "currency": cur, "_stale": True})
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                view = orjson.loads(body)
                rows.append(view)
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    self.balances[tenant] = (float(view["balance"]), view["currency"])
        rows.sort(key=lambda r: float(r.get("balance") or 0))
        self.rows = rows

    # --- rendering ---------------------------------------------------------------------------

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

        lines.append(f"{lab('CDRs/s')} {s(f'{self.rate:,.1f}', '1;32')}   consumer lag {_num(snap.lag)}"
                     f"   processing p50 {ms(p50)}, p99 {ms(p99)}")  # fmt: skip
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
        lines.append(s(f"Lowest balances (GET /tenants/<id>)", "1;4"))
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
            lines.append(f"  {r.get('tenant_id', ''):<18}{r.get('rate_plan', '?'):<14}"
                         f"{s(f'{_money(bal):>14}', color)}  {r.get('currency', ''):<4}{_money(threshold):>9}  "
                         f"{len(r.get('lots') or ()):>4}  {ars:<{pad}}{blocked}")  # fmt: skip
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
            lines.append(f"  {t:<9}{e.get('tenant_id', ''):<18}{s(f'{typ:<24}', EVENT_COLORS.get(typ, ''))}"
                         f"{_money(e.get('balance')):>12} {e.get('currency', ''):<4} {_event_detail(e)[:23]:<24}"
                         f"{s(cause.get('kind', '') + ' ' + cause_id, '2')}")  # fmt: skip
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
        state = "" if self.notify is None or self.notify.poll() is None else f" (rater notify exited {self.notify.returncode})"
        return (f"{_num(self.sink.count())} emails received by the sink 127.0.0.1:{self.sink.port}; notify sent "
                f"{_num(n.get('rater_notify_sent_total:email', 0))}, retried {_num(n.get('rater_notify_retried_total:email', 0))}, "
                f"dead-lettered {_num(n.get('rater_notify_dead_lettered_total:email', 0))}{state}")  # fmt: skip

    def plain_line(self) -> str:
        snap = self.snap
        elapsed = (self.sim_ended or time.monotonic()) - self.sim_started if self.sim_started else 0.0
        if snap is None:
            return f"[{elapsed:4.0f}s] waiting for metrics"
        rec = snap.records
        lowest = ", ".join(f"{r.get('tenant_id')} {_money(r.get('balance'))} {r.get('currency', '')}" for r in self.rows[:3])
        rejects = " ".join(f"{k}={_num(v)}" for k, v in sorted(snap.rejects.items())) or "none"
        return (f"[{elapsed:4.0f}s] {self.rate:,.1f} CDRs/s | cdrs applied {_num(rec.get(('cdrs', 'applied'), 0))} "
                f"rejected {_num(rec.get(('cdrs', 'rejected'), 0))} duplicate {_num(rec.get(('cdrs', 'duplicate'), 0))} "
                f"| commands applied {_num(rec.get(('tenant-commands', 'applied'), 0))} | rejects {rejects} "
                f"| tenants ok {_num(snap.tenants.get('ok', 0))} low {_num(snap.tenants.get('low', 0))} "
                f"negative {_num(snap.tenants.get('negative', 0))} | lowest: {lowest or '-'}"
                + (f" | emails {_num(self.sink.count())}" if self.sink else ""))  # fmt: skip

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
                if self.worker.poll() is not None:
                    self.worker_died = True
                    break
                if self.sim.poll() is not None:
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
            print(f"  tenants          " + ", ".join(f"{st} {_num(snap.tenants.get(st, 0))}" for st in ("ok", "low", "negative")))
        if self.sink is not None:
            print(f"  notifications    {self.notify_line()}")
            for subject in self.sink.last(3):
                print(f"                   {subject}")
        if self.rows:
            low = ", ".join(f"{r.get('tenant_id')} {_money(r.get('balance'))} {r.get('currency', '')}" for r in self.rows[:3])
            print(f"  lowest balances  {low}")
        print(f"  logs             {self._rel(self.worker_log)}, {self._rel(self.sim_log)}, {self._rel(self.notify_log)}, "
              f"{self._rel(self.broker_dir / 'logs')}")  # fmt: skip

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
            self.say(f"the worker exited ({self.worker.returncode if self.worker else '?'}); "
                     f"the end of {self._rel(self.worker_log)}:")  # fmt: skip
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

        self.port = _free_port()
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
    return (f"{_num(requested)} requested: {_num(succeeded)} succeeded, {_num(failed)} failed, {_num(pending)} pending; "
            f"{_num(expired)} not requested (card expired)")


def _event_detail(e: dict[str, Any]) -> str:
    typ = e.get("type")
    if typ == "low_balance":
        return f"below {_money(e.get('threshold'))}"
    if typ == "below_zero":
        return "blocks " + "/".join(c.replace("international", "intl").replace("toll_free", "toll-free")
                                    for c in e.get("blocked_call_types") or ())  # fmt: skip
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rater.demo",
                                description="A local broker, a rater worker, simulated traffic and a live view.")  # fmt: skip
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic; 0 runs until Ctrl-C (default 60)")
    p.add_argument("--tenants", type=int, default=200, help="simulated tenants (default 200)")
    p.add_argument("--rate", type=float, default=200.0, help="records per second (default 200)")
    p.add_argument("--bad-share", type=float, default=0.01, help="share of deliberately bad records (default 0.01)")
    p.add_argument("--funds-scale", type=float, default=0.25,
                   help="multiply the tenants' initial funds; the default 0.25 makes balances run low within "
                        "a minute, so every kind of balance event shows (default 0.25)")  # fmt: skip
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated tenants and traffic (default 1)")
    p.add_argument("--rates", default=None, help="rate-table directory (default: the shipped rate_tables)")
    p.add_argument("--plain", action="store_true", help="print status lines instead of redrawing the screen")
    p.add_argument("--plain-interval", type=float, default=5.0, help="seconds between plain status lines (default 5)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    demo = Demo(args)
    code = 1
    try:
        # Started from the main thread: the broker (and the children) get SIGTERM when
        # the process that forked them dies (PR_SET_PDEATHSIG follows the forking thread).
        demo.start_broker()
        code = asyncio.run(demo.main())
    except devbroker.DevBrokerError as exc:
        print(f"rater demo: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        demo.interrupted = True
        code = 130
    finally:
        try:
            demo.shutdown()
        except KeyboardInterrupt:
            pass
    if demo.snap is not None or demo.sim is not None:
        demo.summary()
    return code


if __name__ == "__main__":
    sys.exit(main())
