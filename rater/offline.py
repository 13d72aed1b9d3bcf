"""``rater rate``: the core driven from JSON-lines files (SPEC 9).

Inputs are applied in order, line by line. Outputs are streamed to OUTDIR as they are
produced; ``balances.json`` and the state file are written at the end, atomically, so a
crash mid-run leaves the previous state file whole and the next run starts from it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import IO

import orjson

from rater.core.codec import to_view
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
CHUNK = 4 << 20  # bytes of input handed to the engine at a time (whole lines)


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
    rest = b""
    while True:
        block = f.read(CHUNK)
        if not block:
            break
        data = rest + block
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        yield line, data[:cut]
        line += data.count(b"\n", 0, cut)
        rest = data[cut:]
    if rest:
        yield line, rest


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
    files = {name: open(os.path.join(out_dir, name), "wb", buffering=1 << 20) for name in OUTPUT_FILES}
    rated_f, events_f, requests_f, rejects_f = (files[n] for n in OUTPUT_FILES)
    started = time.perf_counter()
    records = 0
    done_bytes = 0
    try:
        for path in inputs:
            for first_line, data in _chunks(path):
                n, rated, events, requests, rejects = engine.rate_lines(data, path, first_line, now)
                records += n
                done_bytes += len(data)
                rated_f.write(rated)
                events_f.write(events)
                requests_f.write(requests)
                rejects_f.write(rejects)
                progress.update(done_bytes, records)
        progress.update(done_bytes, records, force=True)
    finally:
        progress.close()
        for f in files.values():
            f.close()
    final = engine.accounts_dict()
    views = {tid: to_view(a) for tid, a in sorted(final.items())}
    write_atomic(
        os.path.join(out_dir, "balances.json"),
        orjson.dumps(views, option=orjson.OPT_INDENT_2) + b"\n",
    )
    if state_path:
        save_state(state_path, final)
    below = sorted(t for t, a in final.items() if a.balance < 0)
    return RunResult(engine.tally, records, time.perf_counter() - started, below)


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
        lines.append(
            f"tenants below zero: {len(result.tenants_below_zero)} ({shown}{f', +{more} more' if more > 0 else ''})"
        )
    else:
        lines.append("tenants below zero: 0")
    return "\n".join(lines)
