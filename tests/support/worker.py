"""Real ``rater worker`` processes for tests: start one, talk HTTP to it, stop or kill it.

``WorkerProcess`` is a context manager around one ``python -m rater worker`` subprocess
with its own app id, its own topic names, a free web port and a temporary state dir.
Entering it starts the worker and waits until ``/readyz`` answers 200 (60 s by default);
leaving it stops the worker (SIGTERM, then SIGKILL). When the ``with`` block fails, the
tail of the worker's log is printed, so pytest shows it with the failure.

Two workers of one group share ``app_id``, ``topics`` and ``partitions`` and differ in
port and state dir::

    topics = WorkerTopics.unique("t7")
    with WorkerProcess(broker, topics=topics, app_id="t7-app") as a, \\
         WorkerProcess(broker, topics=topics, app_id="t7-app") as b:
        ...

The helpers never touch anything but the worker processes they started: signals go to
the process id Popen returned (each worker runs in its own session, so its process group
id is its pid).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

import orjson

from rater.dev.procs import ROOT, WorkerChild

RATES_DIR = ROOT / "rate_tables"
READY_TIMEOUT = 60.0
# Logged at ERROR by aiokafka and retried: the first group join on a new broker.
TRANSIENT_ERRORS = ("GroupCoordinatorNotAvailableError", "CoordinatorNotAvailableError")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


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
            cdrs=f"{base}-cdrs",
            commands=f"{base}-commands",
            rated=f"{base}-rated",
            events=f"{base}-events",
            requests=f"{base}-requests",
            rejects=f"{base}-rejects",
        )

    def items(self) -> list[tuple[str, str]]:
        """(name, topic) pairs: the worker's ``--topic-<name>`` flags."""
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]

    def args(self) -> list[str]:
        return [arg for name, topic in self.items() for arg in (f"--topic-{name}", topic)]


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


class WorkerProcess(WorkerChild):
    """The test harness around ``rater.dev.procs.WorkerChild``: a context manager with a
    temporary state dir and log, and what the tests look at (HTTP answers, metrics, errors
    in the log)."""

    Failed = WorkerFailed

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
        self._tmp = tempfile.TemporaryDirectory(prefix=f"rater-{name}-")
        tmp = Path(self._tmp.name)
        super().__init__(
            broker,
            app_id=app_id or unique(f"{name}-app"),
            topics=topics or WorkerTopics.unique(name),
            state_dir=Path(state_dir) if state_dir is not None else tmp / "state",
            log_path=tmp / "worker.log",
            rates_dir=Path(rates_dir),
            partitions=partitions,
            web_port=web_port,
            extra_args=extra_args,
            env=env,
            name=name,
        )
        self.ready_timeout = ready_timeout
        self.precreate_inputs = precreate_inputs

    # --- lifecycle --------------------------------------------------------------------

    def start(self, wait: bool = True, timeout: float | None = None) -> "WorkerProcess":
        """Start the process; with ``wait``, return once ``/readyz`` says ready."""
        if self.precreate_inputs and self.starts == 0:
            # The worker creates missing topics itself, but describes the input topics
            # right after creating them and may see 0 partitions (the broker's metadata
            # lags CreateTopics), then exits. Creating the inputs first, and waiting until
            # their leaders show, keeps the tests about what they test; the worker still
            # creates its output topics.
            from tests.support.kafka import create_topic

            for topic in (self.topics.cdrs, self.topics.commands):
                create_topic(self.broker, topic, self.partitions)
        super().start()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float | None = None, interval: float = 0.2) -> float:
        return super().wait_ready(timeout or self.ready_timeout, interval)

    def running(self) -> bool:
        return self.alive()

    def restart(self, wait: bool = True, timeout: float | None = None) -> "WorkerProcess":
        """SIGTERM, then start again on the same state dir, port, app id and topics."""
        self.stop()
        return self.start(wait=wait, timeout=timeout)

    def __enter__(self) -> "WorkerProcess":
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


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    interval: float = 0.2,
    what: str = "condition",
    workers: tuple[WorkerProcess, ...] = (),
) -> Any:
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
