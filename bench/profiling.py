"""Sampling profiles of a running process: py-spy's collapsed stacks to top-frame tables.

``py-spy record --format raw --function`` writes one line per distinct stack,
``thread;frame;frame;... count``, each frame ``function (file)`` (``--function``
aggregates by function, not line). From those lines: the *self* share of a frame (the
samples where it is the innermost frame), the *inclusive* share (samples with it
anywhere on the stack), and shares by *area* (who owns the innermost frame: faust, mode,
aiokafka, asyncio, rocksdict, the rater's modules).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")

AREAS = (
    # First match wins: the native engine's calls before the rest of rater/core, the
    # account store before the rest of rater/worker.
    ("rater: native engine calls (rating in Rust)", ("rater/core/native_engine.py",)),
    (
        "rater: Python rating core (ledger, rates, records, engine, money, timeutil)",
        (
            "rater/core/ledger.py",
            "rater/core/rates.py",
            "rater/core/records.py",
            "rater/core/engine.py",
            "rater/core/money.py",
            "rater/core/timeutil.py",
        ),
    ),
    (
        "rater: accounts (codec, id segments, account store)",
        ("rater/core/codec.py", "rater/core/idsegments.py", "rater/worker/store.py", "rater/worker/inflight.py"),
    ),
    (
        "rater: batch driver (routing, commit pipeline, replay check, sending, adapter)",
        ("rater/core/", "rater/worker/"),
    ),
    ("rater: rater rate driver (offline, state file)", ("rater/offline.py", "rater/statefile.py")),
    ("faust (streams, conductor, tables, stores)", ("faust/",)),
    ("mode (services, threads)", ("mode/",)),
    ("aiokafka (protocol, producer, consumer)", ("aiokafka/", "kafka/")),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
    ("orjson / hashlib / json (C)", ("orjson", "hashlib", "json/")),
    ("prometheus_client", ("prometheus_client/",)),
)


def py_spy() -> str | None:
    venv = Path(sys.executable).parent / "py-spy"
    if venv.exists():
        return str(venv)
    return shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, rate: int = 100) -> tuple[bool, str]:
    """Sample ``pid`` for ``seconds`` (py-spy, non-blocking: the process is not paused)."""
    exe = py_spy()
    if exe is None:
        return False, "py-spy not found"
    cmd = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(rate),
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--function",
        "--nonblocking",
        "--output",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    ok = proc.returncode == 0 and out.exists()
    return ok, (proc.stdout + proc.stderr).strip().splitlines()[-1] if (proc.stdout + proc.stderr).strip() else ""


def _short(file: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return file


def _area(file: str) -> str:
    for name, keys in AREAS:
        if any(k in file for k in keys):
            return name
    return "other"


def summarize(path: Path, top: int = 20) -> dict:
    """Top frames by self and inclusive share, and shares by area, of a py-spy raw file."""
    self_c: Counter = Counter()
    incl: Counter = Counter()
    areas: Counter = Counter()
    threads: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, n_text = line.rpartition(" ")
        try:
            n = int(n_text)
        except ValueError:
            continue
        frames = stack.split(";")
        thread = "main thread" if "runpy" in frames[0] or "<module>" in frames[0] else "other threads"
        names = []
        for f in frames:
            m = _FRAME.match(f)
            names.append(f"{m['fn']} ({_short(m['file'])})" if m else (f or "(no Python frame name)"))
        total += n
        threads[thread] += n
        if names:
            self_c[names[-1]] += n
            m = _FRAME.match(frames[-1])
            areas[_area(m["file"] if m else frames[-1])] += n
        for name in set(names):
            incl[name] += n

    def share(c: Counter, k: int) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in c.most_common(k)] if total else []

    return {
        "samples": total,
        "self": share(self_c, top),
        "inclusive": share(incl, top * 3),
        "areas": share(areas, len(AREAS) + 1),
        "threads": share(threads, 2),
    }


def summarize_pstats(path: Path, top: int = 20) -> dict:
    """The same tables from a pstats file (pyinstrument ``-r pstats``): self share from
    ``tottime``, inclusive share from ``cumtime`` (recursion counted once by pstats)."""
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    # pyinstrument samples wall time: leave out the event loop waiting in epoll (idle).
    stats = {k: v for k, v in stats.items() if not (k[0] == "<built-in>" and k[2].endswith(("epoll.poll", "select")))}
    total = sum(v[2] for v in stats.values()) or 1.0
    self_c: Counter = Counter()
    incl: Counter = Counter()
    areas: Counter = Counter()
    for (file, _line, fn), (_cc, _nc, tt, ct, _callers) in stats.items():
        name = f"{fn} ({_short(file)})"
        self_c[name] += tt
        incl[name] = max(incl[name], ct)
        areas[_area(file)] += tt

    def share(c: Counter, k: int) -> list[tuple[str, float]]:
        return [(name, v / total) for name, v in c.most_common(k)]

    return {
        "samples": int(total * 100),  # 10 ms interval: seconds x 100
        "self": share(self_c, top),
        "inclusive": share(incl, top * 3),
        "areas": share(areas, len(AREAS) + 1),
        "threads": [("main thread", 1.0)],
    }
