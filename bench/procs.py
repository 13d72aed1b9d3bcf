"""Processes the benchmark starts (on ``rater.dev.procs.Child``/``WorkerChild``, the one
wrapper of a subprocess) and what it reads about them from /proc.

CPU time is ``utime + stime`` of ``/proc/<pid>/stat`` (all threads of the process), peak
RSS is ``VmHWM`` and current RSS ``VmRSS`` of ``/proc/<pid>/status``: no psutil. Every
process is started in its own session and stopped by its own pid (SIGTERM, then SIGKILL),
never by name.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rater.dev.procs import Child, WorkerChild, http_status

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


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine has used so far (``/proc/stat``: all but
    idle and iowait, summed over the cores): with a child's own CPU over the same span,
    what the others took meanwhile."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def others_cpu(busy: float, own: float) -> float:
    """CPU seconds the rest of the machine used over a span (the broker, the harness,
    others): the machine's busy seconds over the span less a process's own."""
    return round(max(busy - own, 0.0), 2)


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (``VmHWM``, ``VmRSS``), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def records_total(metrics_text: bytes) -> int:
    """Sum of ``rater_records_total`` over every label set."""
    total = 0.0
    for line in metrics_text.decode().splitlines():
        if line.startswith("rater_records_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class Measured:
    """CPU and memory of a running child (``Child.pid``), from /proc."""

    pid: int

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def hwm_kib(self) -> int:
        return status_kib(self.pid, "VmHWM")

    def rss_kib(self) -> int:
        return status_kib(self.pid, "VmRSS")


class Proc(Measured, Child):
    """One subprocess of the benchmark (a relay, the pacer, ...), with its log in a file."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None):
        super().__init__(cmd, log_path, env, name=Path(log_path).stem)


class WorkerProc(Measured, WorkerChild):
    """A ``rater worker`` of the benchmark: no wall-clock sweep (it would add outputs after
    the last one), ``--batch-size``, and per-batch log lines when ``debug_batches``."""

    def __init__(
        self,
        broker: str,
        *,
        app_id: str,
        topics: dict[str, str],
        state_dir: Path,
        log_path: Path,
        partitions: int,
        batch_size: int,
        debug_batches: bool = False,
        extra: list[str] | None = None,
    ):
        extra_args = ["--batch-size", str(batch_size), "--sweep-interval", "3600", *(extra or [])]
        super().__init__(
            broker,
            app_id=app_id,
            topics=topics,
            state_dir=state_dir,
            log_path=log_path,
            rates_dir=RATES_DIR,
            partitions=partitions,
            extra_args=extra_args,
            env={"RATER_DEBUG_BATCHES": "1" if debug_batches else ""},
        )

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.05) -> float:
        return super().wait_ready(timeout, interval)

    def records(self) -> int | None:
        status, body = http_status(self.url + "/metrics", timeout=5.0)
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
