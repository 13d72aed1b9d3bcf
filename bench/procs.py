"""Processes the benchmark starts and what it reads about them from /proc.

CPU time is ``utime + stime`` of ``/proc/<pid>/stat`` (all threads of the process), peak
RSS is ``VmHWM`` and current RSS ``VmRSS`` of ``/proc/<pid>/status``: no psutil. Every
process is started in its own session and stopped by its own pid (SIGTERM, then SIGKILL),
never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from rater.dev.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
RATES_DIR = ROOT / "rate_tables"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (every thread)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    rest = data[data.rindex(b")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (``VmHWM``, ``VmRSS``), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def http_get(url: str, timeout: float = 2.0) -> tuple[int | None, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return None, b""


def records_total(metrics_text: bytes) -> int:
    """Sum of ``rater_records_total`` over every label set."""
    total = 0.0
    for line in metrics_text.decode().splitlines():
        if line.startswith("rater_records_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class Proc:
    """One subprocess with its log in a file; ``stop`` ends it by pid."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.cmd = cmd
        self.log_path = log_path
        self.env = env
        self.popen: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> "Proc":
        log = open(self.log_path, "ab")
        try:
            self.started = time.monotonic()
            self.popen = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=ROOT, env=self.env, start_new_session=True,
            )
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def hwm_kib(self) -> int:
        return status_kib(self.pid, "VmHWM")

    def rss_kib(self) -> int:
        return status_kib(self.pid, "VmRSS")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(10)
        return self.popen.returncode

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class WorkerProc(Proc):
    """A ``rater worker`` subprocess with its own app id, topics, state dir and port."""

    def __init__(self, broker: str, *, app_id: str, topics: dict[str, str], state_dir: Path, log_path: Path,
                 partitions: int, batch_size: int, debug_batches: bool = False,
                 extra: list[str] | None = None):
        self.port = free_port()
        self.app_id = app_id
        self.topics = topics
        self.state_dir = state_dir
        cmd = [
            sys.executable, "-m", "rater", "worker",
            "--broker", broker, "--app-id", app_id, "--partitions", str(partitions),
            "--rates", str(RATES_DIR), "--state-dir", str(state_dir), "--web-port", str(self.port),
            "--batch-size", str(batch_size),
            # No wall-clock sweep during a measurement: it would add outputs after the last one.
            "--sweep-interval", "3600",
        ]
        for name, topic in topics.items():
            cmd += [f"--topic-{name}", topic]
        cmd += extra or []
        env = dict(os.environ)
        env.pop("RATER_DEBUG_BATCHES", None)
        if debug_batches:
            env["RATER_DEBUG_BATCHES"] = "1"
        super().__init__(cmd, log_path, env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.05) -> float:
        """Seconds from process start to the first 200 of /readyz."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker exited during startup:\n{self.tail()}")
            status, _ = http_get(self.url + "/readyz", timeout=1.0)
            if status == 200:
                return time.monotonic() - self.started
            time.sleep(interval)
        raise RuntimeError(f"worker not ready after {timeout:.0f} s:\n{self.tail()}")

    def records(self) -> int | None:
        status, body = http_get(self.url + "/metrics", timeout=5.0)
        if status != 200:
            return None
        return records_total(body)

    def wait_records(self, n: int, timeout: float, interval: float = 0.5) -> int:
        """Poll /metrics until ``rater_records_total`` reaches ``n``; the count seen last."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker died:\n{self.tail()}")
            got = self.records()
            if got is not None:
                seen = got
                if got >= n:
                    return got
            time.sleep(interval)
        raise TimeoutError(f"worker rated {seen:,} of {n:,} records in {timeout:.0f} s:\n{self.tail()}")
