"""Real ``rater worker`` processes for tests: start one, talk HTTP to it, stop or kill it.

``RaterWorker`` is a context manager around one ``python -m rater worker`` subprocess
with its own app id, its own topic names, a free web port and a temporary state dir.
Entering it starts the worker and waits until ``/readyz`` answers 200 (60 s by default);
leaving it stops the worker (SIGTERM, then SIGKILL). When the ``with`` block fails, the
tail of the worker's log is printed, so pytest shows it with the failure.

Two workers of one group share ``app_id``, ``topics`` and ``partitions`` and differ in
port and state dir::

    topics = WorkerTopics.unique("t7")
    with RaterWorker(broker, topics=topics, app_id="t7-app") as a, \\
         RaterWorker(broker, topics=topics, app_id="t7-app") as b:
        ...

The helpers never touch anything but the worker processes they started: signals go to
the process id Popen returned (each worker runs in its own session, so its process group
id is its pid).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

import orjson

ROOT = Path(__file__).resolve().parent.parent
RATES_DIR = ROOT / "rate_tables"
READY_TIMEOUT = 60.0
# Logged at ERROR by aiokafka and retried: the first group join on a new broker.
TRANSIENT_ERRORS = ("GroupCoordinatorNotAvailableError", "CoordinatorNotAvailableError")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class WorkerTopics:
    cdrs: str
    commands: str
    rated: str
    events: str
    requests: str
    rejects: str

    @classmethod
    def unique(cls, prefix: str) -> "WorkerTopics":
        base = unique(prefix)
        return cls(
            cdrs=f"{base}-cdrs", commands=f"{base}-commands", rated=f"{base}-rated",
            events=f"{base}-events", requests=f"{base}-requests", rejects=f"{base}-rejects",
        )  # fmt: skip

    def args(self) -> list[str]:
        out = []
        for f in dataclasses.fields(self):
            out += [f"--topic-{f.name}", getattr(self, f.name)]
        return out


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def json(self) -> Any:
        return orjson.loads(self.body)


class WorkerFailed(AssertionError):
    pass


class RaterWorker:
    def __init__(
        self,
        broker: str,
        *,
        topics: WorkerTopics | None = None,
        app_id: str | None = None,
        partitions: int = 4,
        state_dir: str | os.PathLike[str] | None = None,
        web_port: int | None = None,
        rates_dir: str | os.PathLike[str] = RATES_DIR,
        extra_args: list[str] | tuple[str, ...] = (),
        name: str = "worker",
        ready_timeout: float = READY_TIMEOUT,
        precreate_inputs: bool = False,
        env: dict[str, str] | None = None,
    ):
        self.broker = broker
        self.topics = topics or WorkerTopics.unique(name)
        self.app_id = app_id or unique(f"{name}-app")
        self.partitions = partitions
        self._tmp = tempfile.TemporaryDirectory(prefix=f"rater-{name}-")
        self.state_dir = Path(state_dir) if state_dir is not None else Path(self._tmp.name) / "state"
        self.web_port = web_port or free_port()
        self.rates_dir = Path(rates_dir)
        self.extra_args = list(extra_args)
        self.name = name
        self.ready_timeout = ready_timeout
        self.precreate_inputs = precreate_inputs
        self.env = dict(env or {})  # extra environment of the next start (e.g. RATER_FAILPOINT)
        self.log_path = Path(self._tmp.name) / "worker.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    # --- lifecycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "rater", "worker",
            "--broker", self.broker,
            "--rates", str(self.rates_dir),
            "--state-dir", str(self.state_dir),
            "--web-port", str(self.web_port),
            "--partitions", str(self.partitions),
            "--app-id", self.app_id,
            *self.topics.args(),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, wait: bool = True, timeout: float | None = None) -> "RaterWorker":
        """Start the process; with ``wait``, return once ``/readyz`` says ready."""
        assert self.proc is None or self.proc.poll() is not None, "the worker is already running"
        if self.precreate_inputs and self.starts == 0:
            # The worker creates missing topics itself, but describes the input topics
            # right after creating them and may see 0 partitions (the broker's metadata
            # lags CreateTopics), then exits. Creating the inputs first, and waiting until
            # their leaders show, keeps the tests about what they test; the worker still
            # creates its output topics.
            from tests.kafka_support import create_topic

            for topic in (self.topics.cdrs, self.topics.commands):
                create_topic(self.broker, topic, self.partitions)
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        try:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        finally:
            log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise WorkerFailed(f"{self.name} exited with status {code} before it was ready\n{self.tail()}")
            try:
                r = self.get("/readyz", timeout=2)
                if r.status == 200:
                    return
                last = f"{r.status} {r.body[:200]!r}"
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise WorkerFailed(f"{self.name} not ready after {timeout or self.ready_timeout:.0f} s ({last})\n{self.tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait for a clean exit; SIGKILL after ``timeout``. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
                raise WorkerFailed(f"{self.name} did not stop within {timeout:.0f} s of SIGTERM\n{self.tail()}")
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL: a crash, nothing flushed or committed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait(10)
        return self.proc.returncode

    def restart(self, wait: bool = True, timeout: float | None = None) -> "RaterWorker":
        """SIGTERM, then start again on the same state dir, port, app id and topics."""
        self.stop()
        return self.start(wait=wait, timeout=timeout)

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)  # its own session: the group id is its pid
        except ProcessLookupError:
            pass

    def __enter__(self) -> "RaterWorker":
        try:
            self.start()
        except BaseException:
            self.kill()
            self._tmp.cleanup()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                print(f"\n----- {self.name} ({self.url}, app {self.app_id}) log tail -----\n{self.tail(80)}")
            try:
                self.stop()
            except WorkerFailed as failed:
                if exc_type is None:
                    raise
                print(failed)
        finally:
            self._tmp.cleanup()

    # --- looking at it ------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, n: int = 40) -> str:
        lines = self.log().splitlines()
        return "\n".join(lines[-n:])

    def errors(self) -> list[str]:
        """Errors in the log: each ``ERROR``/``CRITICAL`` line or traceback with the lines
        that follow it up to the next log line; the client's retried complaints while a
        fresh broker creates its offsets topic are left out."""
        out: list[str] = []
        block: list[str] | None = None
        for line in self.log().splitlines():
            if line.startswith("[") or line.startswith("====="):  # the next log line
                if block is not None:
                    out.append("\n".join(block))
                    block = None
                if ("[ERROR]" in line or "[CRITICAL]" in line) and not any(t in line for t in TRANSIENT_ERRORS):
                    block = [line]
            elif block is not None:
                block.append(line)
            elif line.startswith("Traceback"):
                block = [line]
        if block is not None:
            out.append("\n".join(block))
        return out

    def get(self, path: str, timeout: float = 10.0) -> Response:
        """GET ``path`` (sent as written: no normalisation of ``..`` or ``%2F``)."""
        req = urllib.request.Request(self.url + path, method="GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return Response(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The samples of ``/metrics``: ``(name, sorted labels) -> value``."""
        from prometheus_client.parser import text_string_to_metric_families

        r = self.get("/metrics")
        assert r.status == 200, r
        out = {}
        for fam in text_string_to_metric_families(r.body.decode()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for (n, ls), v in self.metrics().items():
            if n == name and all(dict(ls).get(k) == want for k, want in labels.items()):
                total += v
        return total

    def records_done(self) -> int:
        """Input records this worker finished (applied, duplicate or rejected)."""
        return int(sum(self.metric("rater_records_total", outcome=o) for o in ("applied", "duplicate", "rejected")))


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2,
             what: str = "condition", workers: tuple[RaterWorker, ...] = ()) -> Any:  # fmt: skip
    """Poll ``predicate`` until it returns something truthy; fail with the workers' logs."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, AssertionError, KeyError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            logs = "\n".join(f"----- {w.name} log tail -----\n{w.tail(60)}" for w in workers)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_exc!r})\n{logs}")
        time.sleep(interval)


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: SIGTERM the worker if the test process that started it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass
