"""Process helpers for the development tools, the benchmark and the tests: a free TCP port,
a child process that dies with its parent, and the one wrapper of a subprocess (``Child``)
and of a ``rater worker`` subprocess (``WorkerChild``).

The test harness (``tests/support/worker.py``), the benchmark (``bench/procs.py``) and the
demo (``rater/dev/demo.py``) build on ``WorkerChild``; each adds only what it looks at
(HTTP answers and log errors; CPU and memory; the screen).

Every child runs in its own session, so its process group id is its pid: signals go to
that group (the child and anything it started), never to a process found by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """``preexec_fn``: the child gets SIGTERM when the process that started it dies
    (Linux ``PR_SET_PDEATHSIG``; elsewhere nothing)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def http_status(url: str, timeout: float = 2.0) -> tuple[int | None, bytes]:
    """(status, body) of a GET; (None, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return None, b""


class ChildFailed(RuntimeError):
    """A child exited, or did not become ready or stop, when it should have."""


class Child:
    """One subprocess with its output appended to ``log_path``; ``stop`` ends it by pid.

    ``start`` may be called again after the child ended (a restart): each start writes a
    ``===== start #n`` line to the log first."""

    Failed: type[Exception] = ChildFailed  # what ``wait_ready`` and ``stop`` raise

    def __init__(self, cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, cwd: Path = ROOT, name: str = "child"):
        self.cmd = list(cmd)
        self.log_path = Path(log_path)
        self.env = dict(env or {})  # added to this process's environment at each start
        self.cwd = cwd
        self.name = name
        self.popen: subprocess.Popen | None = None
        self.started = 0.0  # time.monotonic() of the last start
        self.starts = 0

    def command(self) -> list[str]:
        return self.cmd

    def start(self) -> "Child":
        assert not self.alive(), f"{self.name} is already running"
        self.starts += 1
        cmd = self.command()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.started = time.monotonic()
            self.popen = subprocess.Popen(
                cmd,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once it ended (None while it runs, or never started)."""
        return None if self.popen is None else self.popen.poll()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait for the exit; after ``timeout``, SIGKILL and raise ``Failed``.
        The exit status (None when never started)."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise self.Failed(f"{self.name} did not stop within {timeout:.0f} s of SIGTERM\n{self.tail()}")
        return self.popen.returncode

    def kill(self) -> int | None:
        """SIGKILL: a crash, nothing flushed or committed."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.signal(signal.SIGKILL)
            self.popen.wait(10)
        return self.popen.returncode

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        try:
            os.killpg(self.popen.pid, sig)  # its own session: the group id is its pid
        except ProcessLookupError:
            pass

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-n:])


class WorkerChild(Child):
    """A ``rater worker`` subprocess: its own app id, topics (``--topic-<name>``), state dir
    and web port; ``wait_ready`` polls ``/readyz``."""

    def __init__(
        self,
        broker: str,
        *,
        app_id: str,
        topics: Mapping[str, str],
        state_dir: Path,
        log_path: Path,
        rates_dir: Path = ROOT / "rate_tables",
        partitions: int = 4,
        web_port: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        name: str = "worker",
    ):
        super().__init__([], log_path, env, name=name)
        self.broker = broker
        self.app_id = app_id
        self.topics = topics
        self.state_dir = Path(state_dir)
        self.rates_dir = Path(rates_dir)
        self.partitions = partitions
        self.web_port = web_port or free_port()
        self.extra_args = list(extra_args)
        # What runs ``rater worker``: the interpreter and ``-m`` (the benchmark's profile
        # puts ``-m pyinstrument ... -m`` in between).
        self.launcher = [sys.executable, "-m"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def command(self) -> list[str]:
        cmd = [
            *self.launcher,
            "rater",
            "worker",
            "--broker",
            self.broker,
            "--rates",
            str(self.rates_dir),
            "--state-dir",
            str(self.state_dir),
            "--web-port",
            str(self.web_port),
            "--partitions",
            str(self.partitions),
            "--app-id",
            self.app_id,
        ]
        for name, topic in self.topics.items():
            cmd += [f"--topic-{name}", topic]
        return cmd + self.extra_args

    def ready(self) -> bool:
        return http_status(self.url + "/readyz", timeout=1.0)[0] == 200

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.1) -> float:
        """Seconds from the start to the first 200 of ``/readyz``; ``Failed`` when the
        worker exits first or is not ready within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.Failed(f"{self.name} exited with status {self.returncode} before it was ready\n{self.tail()}")
            if self.ready():
                return time.monotonic() - self.started
            time.sleep(interval)
        raise self.Failed(f"{self.name} not ready after {timeout:.0f} s\n{self.tail()}")
