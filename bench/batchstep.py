"""The worker's batch step in process, both engines: CPU per record over a small grid.

    python -m bench.batchstep [--runs 3] [--records 50000,300000] [--tenants 1000,10000]

What the worker does per batch outside Kafka: step 2 (``BatchProcessor`` or
``NativeBatchProcessor``: route, decode, rate, apply) and the planning of steps 3 and 4
(``CommitPipeline.plan``: the changed accounts made into changelog bytes by the account
store, their id segments and the tenant index, ``plan_writes``) and the hand-over, in batches
of 5,000 records (the worker's default) over 8 partitions. Each batch is handed to the
step as the worker's consumer hands it: one run per input partition (in the order first
met), each fed whole; for the native step a ``rater_native.Records`` read from a Kafka
record batch of the run's records (built before the runs, untimed), for the Python step
the same records as a list of messages. The writes land in an
in-memory table between batches, untimed (faust's RocksDB write). The cycle collector
is set as the worker sets it (``rater/worker/gctune.py``), and the input, built before the
runs, is frozen out of its view (the worker holds one fetch at a time). CPU time of this
process (``time.process_time``) over the records of the whole input, setup commands
included; the runs go round-robin over the grid's points, each point running each engine
alternately, medians of ``--runs``.

The grid: records x tenants x activity, where activity is the ``rater.sim.traffic``
input (skewed: Zipf-like, a few busy tenants) or the same tenants each equally busy
(even). The accounts live in the worker's account cache (50,000, the default).

Then RSS per account held natively: the accounts of 100,000 tenants (setup commands and
300,000 CDRs, rated by the native step) are read into a fresh ``NativeAccountStore``
(``/proc/self/statm`` before and after, divided by the accounts), with a cache of 100,000
(every account held) and with the default 50,000.

Results: printed as a table and written to ``bench/results/batchstep.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

import orjson
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from rater.core.batch import BatchProcessor, Message, Topics
from rater.core.native_engine import NativeBatchProcessor, available
from rater.core.partitioning import partition_for
from rater.core.rates import load_rate_tables
from rater.core.timeutil import SECOND, parse_time
from rater.sim import traffic
from rater.worker import gctune
from rater.worker.pipeline import CommitPipeline
from rater.worker.store import AccountStore, NativeAccountStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATES = os.path.join(ROOT, "rate_tables")
OUT = os.path.join(ROOT, "bench", "results", "batchstep.json")
PARTITIONS = 8
BATCH = 5000
CACHE = 50_000
START = parse_time("2026-11-20T00:00:00Z")
NOW = parse_time("2026-12-31T00:00:00Z")
# How each batch is handed to the step (``batches``), as the report says it.
FED = "each batch fed as the worker's consumer hands it, one run per input partition: a `rater_native.Records` for the native step"


class TablePort:
    """The Kafka port as far as step 2 and the planning use it: the local table."""

    changelog = "rater-accounts-changelog"

    def __init__(self):
        self.table: dict[int, dict[bytes, bytes]] = {p: {} for p in range(PARTITIONS)}

    def table_get(self, partition: int, key: bytes) -> bytes | None:
        return self.table[partition].get(key)

    def write(self, records: list) -> None:
        for _topic, partition, key, value, _headers in records:
            if value is None:
                self.table[partition].pop(key, None)
            else:
                self.table[partition][key] = value


def make_input(records: int, tenants: int, activity: str, tables, seed: int = 1, start: int = START) -> list[Message]:
    """``records`` input records (setup commands first) as the worker consumes them, the
    first at event time ``start`` (µs), the others 5 ms apart."""
    profiles = traffic.tenants(tenants, seed, tables, at=start)
    if activity == "even":
        for p in profiles:
            p["activity"] = 1.0
    setup = traffic.setup_commands(profiles, start, f"r{seed}")
    stream = traffic.cdr_stream(
        profiles,
        tables,
        seed,
        clock=traffic.synthetic_clock(start + SECOND, 5_000),
        run_id=f"r{seed}",
        bad_share=0.01,
        count=max(records - len(setup), 0),
    )
    offsets = [0] * PARTITIONS
    out = []
    for rec in list(setup) + list(stream):
        if isinstance(rec, bytes):  # not JSON: no key, rejected where it lands
            key, topic, value = None, "cdrs", rec
        else:
            key = rec["tenant_id"].encode() if isinstance(rec.get("tenant_id"), str) else None
            topic = "tenant-commands" if "command" in rec else "cdrs"
            value = orjson.dumps(rec)
        p = partition_for(key, PARTITIONS) if key else 0
        out.append(Message(topic, p, offsets[p], key, value))
        offsets[p] += 1
        if len(out) == records:
            break
    return out


def worker(engine: str, tables, cache: int = CACHE):
    port = TablePort()
    if engine == "native":
        store = NativeAccountStore(port, PARTITIONS, cache)
        processor = NativeBatchProcessor(tables, PARTITIONS, Topics(), store)
    else:
        store = AccountStore(port, PARTITIONS, cache)
        processor = BatchProcessor(tables, PARTITIONS, Topics(), store.load)
    return port, store, processor, CommitPipeline(port, store, processor)


def fetched(topic: str, partition: int, msgs: list[Message]) -> Any:
    """``msgs`` (one partition's, offsets increasing) as the worker's consumer hands them
    with the native engine: a ``rater_native.Records`` read from the Kafka record batch
    that holds them, at the same offsets."""
    import rater_native

    base = msgs[0].offset
    b = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 28
    )
    for m in msgs:
        b.append(m.offset - base, timestamp=START // 1000, key=m.key, value=m.value, headers=[])
    buf = bytearray(b.build())
    buf[0:8] = struct.pack(">q", base)
    [(*_header, records)] = rater_native.read_fetch(bytes(buf), topic, partition, True)
    return records


def batches(engine: str, msgs: list[Message]) -> list[list[Any]]:
    """``msgs`` in the worker's batches of ``BATCH`` records, each as runs per partition."""
    out = []
    for start in range(0, len(msgs), BATCH):
        runs: dict[tuple[str, int], list[Message]] = {}
        for m in msgs[start : start + BATCH]:
            runs.setdefault((m.topic, m.partition), []).append(m)
        out.append([fetched(t, p, run) if engine == "native" else run for (t, p), run in runs.items()])
    return out


def run_batches(engine: str, tables, runs: list[list[Any]], cache: int = CACHE):
    """CPU seconds of the batch steps over ``runs`` (``batches``), and the worker's parts after them."""
    port, store, processor, pipeline = worker(engine, tables, cache)
    cpu = 0.0
    gc.collect()
    for batch in runs:
        t0 = time.process_time()
        store.durable.clear()
        result = processor.begin()
        for run in batch:
            processor.feed(result, run, NOW)
        processor.end(result)
        positions = {}
        for run in batch:
            last = run[-1]
            positions[(last.topic, last.partition)] = last.offset
        w = pipeline.plan(result, positions)
        store.hand_over(w.segments, w.accounts, result.accounts)
        cpu += time.process_time() - t0
        port.write(w.segments)  # step 4, untimed: the store's write
        port.write(w.accounts)
        store.written(w.segments, w.accounts)
    return cpu, port, store, processor


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_per_account(tables, tenants: int = 100_000, records: int = 400_000) -> dict:
    """Bytes of RSS per account held natively (a fresh store reading every account)."""
    msgs = make_input(records, tenants, "skewed", tables)
    # Held until the accounts are measured, as the input was before it was fed in runs: what
    # it frees would otherwise be heap the accounts fill without the RSS growing.
    fed = batches("native", msgs)
    _cpu, port, _store, _proc = run_batches("native", tables, fed)
    names = sorted({k for part in port.table.values() for k in part if b"\x00" not in k})
    out = {"accounts": len(names), "records": len(msgs)}
    for label, cache in (("all_held", len(names)), ("default_cache", CACHE)):
        _p, store, processor, _pl = worker("native", tables, cache)
        store.port = port
        gc.collect()
        before = rss()
        native = processor.engine.native
        hold = store.held.hold
        for name in names:
            hold(native, name.decode())
        gc.collect()
        after = rss()
        out[label] = {
            "cache": cache,
            "held": len(store.held),
            "rss_delta": after - before,
            "bytes_per_account": (after - before) / len(names),
        }
        del store, processor
        gc.collect()
    del fed
    return out


def report_rss(result: dict, tables) -> None:
    result["rss"] = rss_per_account(tables)
    for label in ("all_held", "default_cache"):
        r = result["rss"][label]
        print(
            f"RSS per account, {label} (cache {r['cache']:,}, {r['held']:,} held of "
            f"{result['rss']['accounts']:,}): {r['bytes_per_account']:,.0f} bytes"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--records", default="50000,300000")
    p.add_argument("--tenants", default="1000,10000")
    p.add_argument("--no-rss", action="store_true")
    p.add_argument("--rss-only", action="store_true", help="only the RSS per account (the grid from the last results)")
    p.add_argument("--engines", default="python,native", help="which engines (a comparison of two builds: native only)")
    p.add_argument("--results", default=OUT, help=f"where to write them (default {os.path.relpath(OUT, ROOT)})")
    a = p.parse_args()
    if not available():
        raise SystemExit("the native engine is not built (make native)")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    tables = load_rate_tables(RATES)
    gctune.tune()
    engines = tuple(a.engines.split(","))
    if a.rss_only:
        with open(a.results) as f:
            result = json.load(f)
        report_rss(result, tables)
        with open(a.results, "w") as f:
            json.dump(result, f, indent=1)
        return
    # Every input first, then the runs round-robin over the grid's points (and the engines
    # alternately within each): a slow minute of the shared machine falls on one run of
    # every point, not on every run of one point, whose median it would then move.
    points = [
        (records, tenants, activity)
        for records in (int(x) for x in a.records.split(","))
        for tenants in (int(x) for x in a.tenants.split(","))
        for activity in ("skewed", "even")
    ]
    inputs = [make_input(records, tenants, activity, tables) for records, tenants, activity in points]
    fed = [{e: batches(e, msgs) for e in engines} for msgs in inputs]
    gc.collect()
    gc.freeze()
    cpu: list[dict[str, list[float]]] = [{e: [] for e in engines} for _ in points]
    for run in range(a.runs):
        for i, msgs in enumerate(inputs):
            for e in engines:
                seconds, *_ = run_batches(e, tables, fed[i][e])
                cpu[i][e].append(seconds * 1e6 / len(msgs))
        print(f"run {run + 1} of {a.runs} done", flush=True)
    gc.unfreeze()
    rows = []
    for (records, tenants, activity), msgs, spent in zip(points, inputs, cpu):
        row = {
            "records": len(msgs),
            "tenants": tenants,
            "activity": activity,
            **{f"{e}_us": statistics.median(spent[e]) for e in engines},
            **{f"{e}_runs": [round(x, 2) for x in spent[e]] for e in engines},
        }
        rows.append(row)
        ratio = f" ({row['python_us'] / row['native_us']:.2f}x)" if len(engines) == 2 else ""
        each = ", ".join(f"{e} {row[f'{e}_us']:6.1f}" for e in engines)
        runs = "; ".join(f"{e} " + " ".join(f"{x:.1f}" for x in row[f"{e}_runs"]) for e in engines)
        print(f"{row['records']:>8,} records {tenants:>6,} tenants {activity:6s}: µs/record {each}{ratio}  (runs: {runs})", flush=True)
    del inputs, fed
    result: dict = {
        "started": started,
        "argv": " ".join(["python -m bench.batchstep", *sys.argv[1:]]),
        "batch": BATCH,
        "partitions": PARTITIONS,
        "fed": FED,
        "cache": CACHE,
        "runs": a.runs,
        "grid": rows,
    }
    for e in engines:
        us = [r[f"{e}_us"] for r in rows]
        result[f"{e}_spread"] = max(us) / min(us)
    print("spread across the grid (max / min CPU per record): " + ", ".join(f"{e} {result[f'{e}_spread']:.2f}x" for e in engines))
    os.makedirs(os.path.dirname(os.path.abspath(a.results)), exist_ok=True)
    with open(a.results, "w") as f:
        json.dump(result, f, indent=1)
    if not a.no_rss:
        # In a fresh process: this one's heap holds what the grid's inputs freed, which
        # the accounts would fill without the RSS growing (it read 0 bytes per account).
        rss_only = [sys.executable, "-m", "bench.batchstep", "--rss-only", "--results", os.path.abspath(a.results)]
        subprocess.run(rss_only, cwd=ROOT, check=True)
    print(f"wrote {a.results}")


if __name__ == "__main__":
    main()
