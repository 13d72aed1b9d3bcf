"""``python -m bench.compiled``: what compiling the rating core with mypyc would buy.

The issue's ``rater rate`` target (100,000 records/s on one core) is 5x off in CPython,
and the profile is flat. This probe measures the cheapest compiled route, mypyc on the
unchanged core modules, without changing what ships:

1. generates the input as ``bench.run`` does (``rater.sim.traffic``, seed 1);
2. copies ``rater/`` into a temporary directory and compiles ``CORE`` there with mypyc
   (``mypy`` from the bench extra; gcc);
3. runs ``rater rate`` from the checkout (pure) and from the copy (compiled), alternating,
   ``--runs`` times each, on the same input with the same ``--now``;
4. checks that both wrote byte-identical outputs, and prints the medians and their ratio
   (also to ``bench/results/compiled.json``).

It measures the offline path only. The worker cannot use this build as it is: mypyc
compiles ``accounts.get(...)`` on a ``dict``-typed attribute to the C dict lookup, which
bypasses ``_Accounts.get`` in ``rater/core/batch.py`` (the worker's lazy account loading), so
a compiled worker rejected every CDR of a later batch as ``unknown_tenant`` (seen
2026-12-01). See ``bench/analysis.md``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from rater.core.rates import load_rate_tables
from rater.core.timeutil import SECOND, format_time
from rater.sim import traffic

ROOT = Path(__file__).resolve().parents[1]
CORE = ("money", "timeutil", "rates", "records", "ledger", "engine")
OUTPUTS = ("rated-cdrs.jsonl", "balance-events.jsonl", "recharge-requests.jsonl", "rejects.jsonl", "balances.json")
_LINE = re.compile(r"([\d,]+) records in ([\d.]+) s \(([\d,]+)/s\)")


def log(msg: str) -> None:
    print(f"[compiled {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def generate(path: Path, cdrs: int, tenants: int, seed: int) -> int:
    tables = load_rate_tables(str(ROOT / "rate_tables"))
    step = 5_000
    start = traffic.now_micros() - (cdrs * step + 600 * SECOND)
    n = 0
    with open(path, "wb") as f:
        for rec in traffic.records(tenants, seed, tables, cdrs, start=start, step=step):
            f.write((rec if isinstance(rec, bytes) else orjson.dumps(rec)) + b"\n")
            n += 1
    return n


def compile_core(work: Path) -> Path:
    copy = work / "compiled"
    shutil.copytree(ROOT / "rater", copy / "rater", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    cmd = [sys.executable, "-m", "mypyc", *(f"rater/{m}.py" for m in CORE)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=copy, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"mypyc failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    log(f"compiled {', '.join(CORE)} in {time.perf_counter() - t0:.0f} s")
    return copy


def rate(cwd: Path, inp: Path, out: Path, now: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "rater", "rate", "--rates", str(ROOT / "rate_tables"), "--out", str(out), "--now", now, str(inp)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    m = _LINE.search(proc.stderr)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"rater rate failed in {cwd} ({proc.returncode}): {proc.stderr[-2000:]}")
    return int(m.group(1).replace(",", "")) / float(m.group(2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compiled", description=__doc__.splitlines()[0])
    p.add_argument("--cdrs", type=int, default=200_000)
    p.add_argument("--tenants", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--results", default=str(ROOT / "bench" / "results" / "compiled.json"))
    a = p.parse_args(argv)
    try:
        import mypyc  # noqa: F401
    except ImportError:
        raise SystemExit("mypyc is not installed: pip install -e '.[bench]' (it brings mypy)") from None
    with tempfile.TemporaryDirectory(prefix="rater-compiled-") as tmp:
        work = Path(tmp)
        inp = work / "input.jsonl"
        n = generate(inp, a.cdrs, a.tenants, a.seed)
        log(f"input: {n:,} records, {a.tenants:,} tenants")
        copy = compile_core(work)
        now = format_time((traffic.now_micros() // SECOND) * SECOND)
        rates: dict[str, list[float]] = {"pure": [], "compiled": []}
        for run in range(a.runs):
            for name, cwd in (("pure", ROOT), ("compiled", copy)):
                r = rate(cwd, inp, work / f"out-{name}", now)
                rates[name].append(r)
                log(f"run {run + 1}: {name} {r:,.0f} records/s")
        same = all(filecmp.cmp(work / "out-pure" / f, work / "out-compiled" / f, shallow=False) for f in OUTPUTS)
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "records": n,
        "tenants": a.tenants,
        "runs": a.runs,
        "modules": list(CORE),
        "rates": rates,
        "median": med,
        "ratio": med["compiled"] / med["pure"],
        "identical_outputs": same,
        "python": sys.version.split()[0],
    }
    Path(a.results).write_text(json.dumps(result, indent=1) + "\n")
    log(f"median pure {med['pure']:,.0f}/s, compiled {med['compiled']:,.0f}/s: {result['ratio']:.2f}x; outputs identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
