"""``rater rate``: the core driven from JSON-lines files (SPEC 9).

Inputs are applied in order, line by line. Outputs are streamed to OUTDIR as they are
produced; ``balances.json`` and the state file are written at the end, atomically, so a
crash mid-run leaves the previous state file whole and the next run starts from it.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Iterator

from rater.core.engine import Tally
from rater.core.ledger import DEFAULT_HORIZON
from rater.core.money import format_money
from rater.core.native_engine import make_engine
from rater.core.rates import RateTables
from rater.statefile import load_state, save_state, write_atomic

OUTPUT_FILES = ("rated-cdrs.jsonl", "balance-events.jsonl", "recharge-requests.jsonl", "rejects.jsonl")


@dataclass
class RunResult:
    tally: Tally
    records: int
    seconds: float
    tenants_below_zero: list[str]


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total_bytes: int, stream: IO[str]):
        self.total = max(total_bytes, 1)
        self.stream = stream
        self.enabled = stream.isatty()
        self.last = 0.0

    def update(self, done_bytes: int, records: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        frac = min(done_bytes / self.total, 1.0)
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r[{bar:<30}] {frac:6.1%} {records:,} records")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


STDIN = "-"  # an input named "-" is standard input (named "-" in rejects too)
# Bytes of input handed to the engine at a time (whole lines): 1 MiB rated the
# benchmark's input about 10 % faster than 4 MiB (bench/analysis.md).
CHUNK = 1 << 20


def _chunks(path: str):
    """(first line number, whole lines) of a file or of standard input, about ``CHUNK``
    bytes at a time."""
    if path == STDIN:
        yield from _chunks_of(sys.stdin.buffer)
        return
    with open(path, "rb") as f:
        yield from _chunks_of(f)


def _chunks_of(f):
    line = 1
    while True:
        block = f.read(CHUNK)
        if not block:
            break
        if not block.endswith(b"\n"):
            block += f.readline()  # the rest of the block's last line: one copy of the block
        yield line, block
        line += block.count(b"\n")


def run(
    inputs: list[str],
    tables: RateTables,
    out_dir: str,
    now: int,
    state_path: str | None = None,
    horizon: int = DEFAULT_HORIZON,
    progress_stream: IO[str] | None = None,
    engine_name: str = "python",
) -> RunResult:
    accounts = load_state(state_path) if state_path else {}
    engine = make_engine(engine_name, tables, accounts, horizon)
    os.makedirs(out_dir, exist_ok=True)
    total_bytes = sum(os.path.getsize(p) for p in inputs if p != STDIN)
    progress = _Progress(total_bytes, progress_stream or sys.stderr)  # stderr as it is now, not at import
    # Unbuffered: each chunk's outputs are one write per file, made by one thread while
    # the engine rates the next chunk (the native engine lets go of the GIL meanwhile),
    # and the chunk after it is read by another.
    files = [open(os.path.join(out_dir, name), "wb", buffering=0) for name in OUTPUT_FILES]
    started = time.perf_counter()
    records = 0
    done_bytes = 0
    try:
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="rater-write") as writer,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="rater-read") as reader,
        ):
            writing: Future | None = None
            for path in inputs:
                for first_line, data in _read_ahead(_chunks(path), reader):
                    n, *outputs = engine.rate_lines(data, path, first_line, now)
                    records += n
                    done_bytes += len(data)
                    if writing is not None:
                        writing.result()  # one chunk in flight at most; its error raised here
                    writing = writer.submit(_write_chunk, files, outputs)
                    progress.update(done_bytes, records)
            if writing is not None:
                writing.result()
        progress.update(done_bytes, records, force=True)
    finally:
        progress.close()
        for f in files:
            f.close()
    write_atomic(os.path.join(out_dir, "balances.json"), engine.balances_json())
    if state_path:
        save_state(state_path, engine.accounts_dict())
    below = engine.below_zero()
    return RunResult(engine.tally, records, time.perf_counter() - started, below)


def _read_ahead(items: Iterator, reader: ThreadPoolExecutor) -> Iterator:
    """The items of ``items``, the next one taken by ``reader`` while this one is used."""
    coming = reader.submit(next, items, None)
    while (item := coming.result()) is not None:
        coming = reader.submit(next, items, None)
        yield item


def _write_chunk(files: list[IO[bytes]], outputs: list[bytes]) -> None:
    """One chunk's outputs, each file's in one write (a short write is continued)."""
    for f, data in zip(files, outputs):
        view = memoryview(data)
        while view:
            view = view[f.write(view) :]


def summary(result: RunResult) -> str:
    t = result.tally
    by_status: dict[str, int] = {}
    for (_kind, status), n in t.outcomes.items():
        by_status[status] = by_status.get(status, 0) + n
    rate = result.records / result.seconds if result.seconds > 0 else 0.0
    lines = [
        f"{result.records:,} records in {result.seconds:.2f} s ({rate:,.0f}/s): "
        + ", ".join(f"{by_status.get(s, 0):,} {s}" for s in ("applied", "duplicate", "rejected"))
    ]
    if t.reasons:
        lines.append("rejects: " + ", ".join(f"{r} {n:,}" for r, n in sorted(t.reasons.items())))
    charged: dict[str, int] = {}
    for (currency, _ct), micro in t.charged.items():
        charged[currency] = charged.get(currency, 0) + micro
    if charged:
        lines.append("charged: " + ", ".join(f"{format_money(m)} {c}" for c, m in sorted(charged.items())))
    if result.tenants_below_zero:
        shown = ", ".join(result.tenants_below_zero[:10])
        more = len(result.tenants_below_zero) - 10
        lines.append(f"tenants below zero: {len(result.tenants_below_zero)} ({shown}{f', +{more} more' if more > 0 else ''})")
    else:
        lines.append("tenants below zero: 0")
    return "\n".join(lines)
