"""`rater rate --engine native` against `--engine python` on the same input, same run.

    python -m bench.engines [--records 200000] [--tenants 1000] [--runs 3]

Writes the benchmark's input shape (``rater.sim.traffic``: setup commands, skewed tenants,
1 % bad records, top-ups) as JSON lines once, then runs ``rater rate`` on it with each
engine, alternating (python, native, python, native, ...), and reports each engine's
median records/s as ``rater rate`` reports them (reading, rating, writing the outputs)
and the median wall time of the whole process (start-up and ``balances.json`` included),
and records per CPU second of the whole process (its own rusage: on a shared machine the
steadiest of the three).
The outputs of the two engines are compared byte for byte on every run.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import orjson

from rater.core.rates import load_rate_tables
from rater.core.timeutil import parse_time
from rater.sim import traffic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATES = os.path.join(ROOT, "rate_tables")
FILES = ("rated-cdrs.jsonl", "balance-events.jsonl", "recharge-requests.jsonl", "rejects.jsonl", "balances.json")


def write_input(path: str, records: int, tenants: int, seed: int) -> int:
    tables = load_rate_tables(RATES)
    start = parse_time("2026-11-20T00:00:00Z")
    n = 0
    with open(path, "wb") as f:
        for rec in traffic.records(tenants, seed, tables, records, start=start, step=5_000, bad_share=0.01):
            f.write((rec if isinstance(rec, bytes) else orjson.dumps(rec)) + b"\n")
            n += 1
    return n


def run_once(engine: str, path: str, out: str) -> tuple[float, float, float]:
    """(records/s as reported, records/s over the whole process, records per CPU second
    of the whole process: user + system, from the child's own rusage)."""
    cmd = [sys.executable, "-m", "rater", "rate", "--engine", engine, "--rates", RATES, "--out", out, "--now", "2026-12-31T00:00:00Z", path]
    err_path = out + ".err"
    t0 = time.perf_counter()
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    text = open(err_path, encoding="utf-8", errors="replace").read()
    m = re.search(r"([\d,]+) records in ([\d.]+) s \(([\d,]+)/s\)", text)
    if os.waitstatus_to_exitcode(status) != 0 or m is None:
        raise SystemExit(f"rater rate --engine {engine} failed: {text[-2000:]}")
    records = int(m.group(1).replace(",", ""))
    return records / float(m.group(2)), records / wall, records / (usage.ru_utime + usage.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rater-engines-") as tmp:
        path = os.path.join(tmp, "in.jsonl")
        n = write_input(path, a.records, a.tenants, a.seed)
        print(f"input: {n:,} lines, {os.path.getsize(path) / 2**20:.1f} MiB, {a.tenants:,} tenants", flush=True)
        rates: dict[str, list[float]] = {"python": [], "native": []}
        walls: dict[str, list[float]] = {"python": [], "native": []}
        cpus: dict[str, list[float]] = {"python": [], "native": []}
        for run in range(a.runs):
            for engine in ("python", "native"):
                r, w, c = run_once(engine, path, os.path.join(tmp, engine))
                rates[engine].append(r)
                walls[engine].append(w)
                cpus[engine].append(c)
                print(
                    f"run {run + 1} {engine:6s}: {r:12,.0f} records/s ({w:,.0f}/s over the whole process, {c:,.0f} per CPU second)",
                    flush=True,
                )
            same = all(filecmp.cmp(os.path.join(tmp, "python", f), os.path.join(tmp, "native", f), shallow=False) for f in FILES)
            print(f"run {run + 1} outputs identical: {same}", flush=True)
            if not same:
                raise SystemExit("the engines' outputs differ")
        py, nat = statistics.median(rates["python"]), statistics.median(rates["native"])
        pyw, natw = statistics.median(walls["python"]), statistics.median(walls["native"])
        pyc, natc = statistics.median(cpus["python"]), statistics.median(cpus["native"])
        print(
            f"median python {py:,.0f}/s, native {nat:,.0f}/s: {nat / py:.1f}x "
            f"(whole process: {pyw:,.0f}/s vs {natw:,.0f}/s, {natw / pyw:.1f}x; "
            f"per CPU second: {pyc:,.0f} vs {natc:,.0f}, {natc / pyc:.1f}x)"
        )


if __name__ == "__main__":
    main()
