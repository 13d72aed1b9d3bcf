"""``python -m bench.run`` (``make bench``): the rater's benchmarks, written to docs/benchmarks.md.

    python -m bench.run                 # full size: 1,000,000 CDRs over 10,000 tenants, 3 runs
    python -m bench.run --quick         # smoke size, one run, under 3 minutes
    python -m bench.run --broker H:P    # use a running broker instead of a fresh dev broker

Phases (every process it starts is stopped by its pid at the end, whatever happens):

1. *Input*: setup commands then CDRs from ``rater.sim.traffic`` (deterministic), published
   to one input topic (``--partitions``) before any clock starts, and written as JSON
   lines for ``rater rate``.
2. *Throughput*, each run: a ``rater worker`` (fresh app id, output topics and state dir)
   rates the input; then the baseline relays (``bench/relay.py``, batch and send modes)
   copy it. Records/s from the first output's Kafka timestamp to the last one's (or, when
   the worker has not finished within ``--worker-cap`` seconds, to the moment the count
   was read); CPU seconds from /proc/<pid>/stat; peak RSS from VmHWM.
3. *Latency*, each run: for each offered rate a fresh worker and input topic, setup
   commands from a shared commands topic, then ``bench/pacer.py`` for ``--latency-seconds``;
   latency = CreateTime of the rated CDR - CreateTime of the input CDR, by cdr_id.
4. *Offline*, each run: ``rater rate`` on the same records.
5. *Restart* (once, timed ``--runs`` times): a worker holding ``--restart-accounts``
   accounts is stopped and started again on its state dir; seconds to /readyz 200; RSS
   per 100,000 accounts against an idle worker.
6. *Profile* (once): py-spy on a worker rating the input, top frames by share.
7. *Authorize* (once): ``bench/authorize.py`` asks a worker ``authorize?call_type=&to=``
   in a closed loop (``--authorize-concurrency`` connections, ``--authorize-seconds``),
   first idle, then while ``bench/pacer.py`` offers it ``--authorize-load`` CDRs/s;
   answers/s and p50/p99. ``--only authorize`` runs just this phase (into
   bench/results/authorize.json unless ``--results`` says otherwise).
8. *Grid* (full size, after the throughput runs; ``--no-grid`` skips it): the worker's
   CPU per record over the grid of ``bench/batchstep.py`` (``--grid-records`` x
   ``--grid-tenants`` x skewed/even activity), each point's input on its own topic, a
   fresh worker per point and run, ``--runs`` runs round-robin over the points.
   ``--only grid`` runs just this phase (into bench/results/grid.json), rendered in place
   of the full run's grid when it is the newer.

Results go to bench/results/<quick|full>.json, then docs/benchmarks.md and
docs/benchmarks.png are rendered from them (``bench/report.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from rater.core.rates import check_rate_tables
from rater.core.timeutil import SECOND, format_time
from rater.dev import broker as devbroker
from rater.sim import traffic

from . import kio, profiling, report
from .procs import RATES_DIR, ROOT, Proc, WorkerProc, machine_busy_seconds, others_cpu, status_kib

RESULTS_DIR = ROOT / "bench" / "results"
_BATCH_LINE = re.compile(r"batch (\d+) records, (\d+) outputs, (\d+) accounts, ([\d.]+) ms")


def dumps(obj: Any) -> bytes:
    """orjson.dumps, copied into an exact-size bytes object: a small ``orjson.dumps``
    result kept a ~4 KiB allocation (orjson 3.12 and 3.13), so a million kept ones cost 4 GiB."""
    return bytes(memoryview(orjson.dumps(obj)))


FULL = dict(
    cdrs=1_000_000,
    tenants=10_000,
    runs=3,
    worker_cap=100.0,
    latency_seconds=20.0,
    latency_drain=10.0,
    latency_tenants=1_000,
    restart_accounts=100_000,
    profile_seconds=30.0,
    authorize_seconds=20.0,
)
QUICK = dict(
    cdrs=30_000,
    tenants=1_000,
    runs=1,
    worker_cap=25.0,
    latency_seconds=4.0,
    latency_drain=4.0,
    latency_tenants=300,
    restart_accounts=10_000,
    profile_seconds=8.0,
    authorize_seconds=8.0,
)


# Each turns one of the worker's optimisations off (docs/benchmarks.md, "What each change bought").
ABLATIONS = [
    ("no account cache", ["--account-cache", "0"]),
    ("batches of 2,000 (the old default)", ["--batch-size", "2000"]),
]

logging.getLogger("aiokafka").setLevel(logging.ERROR)  # retried NotLeader... right after a topic is made


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.id = uuid.uuid4().hex[:6]
        self.prefix = f"bench-{self.id}"
        self.work = Path(tempfile.mkdtemp(prefix="rater-bench-"))
        self.procs: list[Proc] = []
        self.broker_dir: Path | None = None
        self.bootstrap = args.broker
        self.tables, problems = check_rate_tables(str(RATES_DIR))
        if self.tables is None:
            raise SystemExit("; ".join(problems))
        self.results: dict[str, Any] = {"runs": [], "commands": {}}
        self.input_topic = ""  # the benchmark's input topic, once published
        self.n_input = self.n_setup = 0

    # --- processes ------------------------------------------------------------------

    def track(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def finish(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def cleanup(self) -> None:
        for proc in list(self.procs):
            try:
                proc.stop()
            except Exception as exc:  # keep stopping the others
                log(f"stopping pid {proc.popen.pid if proc.popen else '?'}: {exc}")
        self.procs.clear()
        if self.bootstrap and not self.broker_dir:
            try:
                asyncio.run(kio.delete_topics(self.bootstrap, self.prefix))
            except Exception as exc:
                log(f"could not delete topics {self.prefix}*: {exc}")
        if self.broker_dir is not None:
            devbroker.stop(data_dir=self.broker_dir, quiet=True)
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            log(f"kept {self.work}")

    def drop_topics(self, prefix: str) -> None:
        try:
            asyncio.run(kio.delete_topics(self.bootstrap, prefix))
        except Exception as exc:
            log(f"could not delete topics {prefix}*: {exc}")
            return
        self.settle()

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until the broker has deleted the files of the topics dropped, and the page
        cache is written back: the deletion of a phase's gigabytes ran into the next phase
        and took it four times the kernel time for its own writes (``rater rate`` right
        after the Kafka phases: 5.3 s of system CPU against 1.3, bench/analysis.md).
        Only with the benchmark's own broker (its data dir is known)."""
        if self.broker_dir is None:
            return
        data = self.broker_dir / "data"
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                if not any(name.endswith("-delete") for name in os.listdir(data)):
                    break
            except OSError:
                break
            time.sleep(0.2)
        else:
            log(f"the broker still deletes topics after {timeout:.0f} s; going on")
        os.sync()

    def worker(
        self,
        name: str,
        topics: dict[str, str],
        *,
        app_id: str | None = None,
        state_dir: Path | None = None,
        debug: bool = True,
        extra: list[str] | None = None,
    ) -> WorkerProc:
        app_id = app_id or f"{self.prefix}-{name}"
        state_dir = state_dir or self.work / f"{name}-state"
        w = WorkerProc(
            self.bootstrap,
            app_id=app_id,
            topics=topics,
            state_dir=state_dir,
            log_path=self.work / f"{name}.log",
            partitions=self.args.partitions,
            batch_size=self.args.batch_size,
            debug_batches=debug,
            extra=extra,
        )
        self.results["commands"].setdefault("worker", " ".join(_shown(w.command())))
        return w

    def out_topics(self, base: str, cdrs: str, commands: str | None = None) -> dict[str, str]:
        return {
            "cdrs": cdrs,
            "commands": commands or f"{base}-commands",
            "rated": f"{base}-rated",
            "events": f"{base}-events",
            "requests": f"{base}-requests",
            "rejects": f"{base}-rejects",
        }

    # --- setup ------------------------------------------------------------------------

    def start_broker(self) -> None:
        if self.bootstrap:
            log(f"using the broker at {self.bootstrap}")
            return
        self.broker_dir = self.work / "broker"
        info = devbroker.start(data_dir=self.broker_dir, quiet=True)
        self.bootstrap = info.bootstrap
        log(f"dev broker {self.bootstrap} in {self.broker_dir}")

    def write_input(self) -> None:
        """The benchmark's input (``rater.sim.traffic``) as JSON lines, kept to publish."""
        a = self.args
        step = 5_000  # µs of event time between records, as rater.sim.traffic's default
        # Every event time in the past (the worker refuses records > 24 h ahead), by 10 min.
        self.start = traffic.now_micros() - (a.cdrs * step + 600 * SECOND)
        t0 = time.perf_counter()
        items: list[tuple[bytes | None, bytes]] = []
        self.jsonl = self.work / "input.jsonl"
        setup = 0
        with open(self.jsonl, "wb") as f:
            for rec in traffic.records(a.tenants, a.seed, self.tables, a.cdrs, start=self.start, step=step):
                if isinstance(rec, bytes):
                    items.append((None, rec))
                    f.write(rec + b"\n")
                    continue
                value = dumps(rec)
                items.append((rec["tenant_id"].encode(), value))
                f.write(value + b"\n")
                if "command" in rec and "cdr_id" not in rec and len(items) == setup + 1:
                    setup += 1
        self.n_setup = setup
        self.n_input = len(items)
        self.items = items
        self.generate_s = time.perf_counter() - t0

    def publish_input(self) -> None:
        """The input (``write_input``) published to a new topic, keyed by tenant."""
        a = self.args
        setup, items, gen = self.n_setup, self.items, self.generate_s
        self.items = []  # published once: not kept for the rest of the run
        self.input_topic = f"{self.prefix}-in"
        asyncio.run(kio.create_topics(self.bootstrap, [self.input_topic], a.partitions))
        t0 = time.perf_counter()
        asyncio.run(kio.publish(self.bootstrap, self.input_topic, items, a.partitions))
        pub = time.perf_counter() - t0
        self.results["input"] = {
            "records": self.n_input,
            "setup_commands": setup,
            "cdrs_and_topups": self.n_input - setup,
            "tenants": a.tenants,
            "bytes": self.jsonl.stat().st_size,
            "generate_s": round(gen, 1),
            "publish_s": round(pub, 1),
            "publish_rate": round(self.n_input / pub),
        }
        log(
            f"input: {self.n_input:,} records ({setup:,} setup commands) generated in {gen:.1f} s, "
            f"published in {pub:.1f} s to {self.input_topic}"
        )

    # --- throughput -------------------------------------------------------------------

    def measure_worker(self, name: str, cap: float, extra: list[str] | None = None) -> dict:
        base = f"{self.prefix}-{name}"
        topics = self.out_topics(base, self.input_topic)
        w = self.track(self.worker(name, topics, app_id=base, extra=extra))
        w.start()
        try:
            ready_s = w.wait_ready()
            cpu0, busy0 = w.cpu(), machine_busy_seconds()
            t_ready = time.time()
            series: list[tuple[float, int]] = []
            deadline = time.monotonic() + cap
            done = False
            while time.monotonic() < deadline:
                got = w.records()
                now = time.time()
                if got is not None:
                    series.append((now, got))
                    if got >= self.n_input:
                        done = True
                        break
                if not w.alive():
                    raise RuntimeError(f"worker died:\n{w.tail()}")
                time.sleep(0.5)
            cpu1, busy1 = w.cpu(), machine_busy_seconds()
            hwm = w.hwm_kib()
            rss = w.rss_kib()
            end_ms = series[-1][0] * 1000 if series else time.time() * 1000
            rated = series[-1][1] if series else 0
        finally:
            self.finish(w)
        first, last, outputs = asyncio.run(self._edges([topics[k] for k in ("rated", "events", "requests", "rejects")]))
        if first is None:
            raise RuntimeError(f"worker {name} wrote nothing:\n{w.tail()}")
        end = last if done else end_ms
        seconds = (end - first) / 1000
        # The CDR phase: from when the setup commands were rated to the end (metrics series).
        cdr_rate = None
        at_setup = next(((t, n) for t, n in series if n >= self.n_setup), None)
        if at_setup and series[-1][0] > at_setup[0] + 1:
            cdr_rate = (series[-1][1] - at_setup[1]) / (series[-1][0] - at_setup[0])
        batches = _batch_stats(w.log_path)
        disk = {
            "changelog_bytes": self.topic_bytes(f"{base}-accounts-changelog"),
            "output_bytes": sum(self.topic_bytes(topics[k]) for k in ("rated", "events", "requests", "rejects")),
        }
        if disk["changelog_bytes"] is not None and batches.get("accounts"):
            disk["changelog_bytes_per_account_write"] = disk["changelog_bytes"] / batches["accounts"]
            disk["changelog_bytes_per_record"] = disk["changelog_bytes"] / max(rated, 1)
        self.drop_topics(base)
        shutil.rmtree(w.state_dir, ignore_errors=True)
        out = {
            "records": rated,
            "of": self.n_input,
            "finished": done,
            "seconds": round(seconds, 2),
            "rate": rated / seconds if seconds > 0 else 0.0,
            "cdr_phase_rate": cdr_rate,
            "cpu_s": round(cpu1 - cpu0, 2),
            "cpu_us_per_record": (cpu1 - cpu0) / rated * 1e6 if rated else None,
            "cpu_share": (cpu1 - cpu0) / max(time.time() - t_ready, 1e-9),
            "others_cpu_s": others_cpu(busy1 - busy0, cpu1 - cpu0),
            "peak_rss_mib": hwm / 1024,
            "rss_mib": rss / 1024,
            "ready_s": round(ready_s, 2),
            "outputs": outputs,
            "batch_size": self.args.batch_size,
            "batches": batches,
            "disk": disk,
        }
        log(
            f"worker {name}: {rated:,} of {self.n_input:,} records{'' if done else ' (capped)'} in {seconds:.1f} s "
            f"= {out['rate']:,.0f}/s; cpu {out['cpu_s']} s ({out['cpu_us_per_record'] or 0:.0f} µs/record; "
            f"others {out['others_cpu_s']:.1f} s), "
            f"peak RSS {out['peak_rss_mib']:.0f} MiB; batches {batches.get('mean_records', 0):.0f} records, "
            f"{batches.get('mean_ms', 0):.1f} ms"
        )
        return out

    def topic_bytes(self, topic: str) -> int | None:
        """Bytes of a topic's log segments on the dev broker's disk (None: not our broker)."""
        if self.broker_dir is None:
            return None
        data = self.broker_dir / "data"
        total = 0
        for d in data.glob(f"{topic}-*"):
            if d.name.rsplit("-", 1)[0] == topic:
                total += sum(f.stat().st_size for f in d.glob("*.log"))
        return total

    async def _edges(self, topics: list[str]):
        async with kio.Offsets(self.bootstrap) as off:
            return await off.edges(topics)

    def measure_relay(self, name: str, mode: str) -> dict:
        base = f"{self.prefix}-{name}"
        out_topic = f"{base}-out"
        asyncio.run(kio.create_topics(self.bootstrap, [out_topic], self.args.partitions))
        cmd = [
            sys.executable,
            "-m",
            "bench.relay",
            "--broker",
            self.bootstrap,
            "--topic",
            self.input_topic,
            "--out",
            out_topic,
            "--group",
            base,
            "--mode",
            mode,
            "--batch-size",
            str(self.args.batch_size),
            "--wait",
            str(self.args.relay_wait),
        ]
        self.results["commands"].setdefault(f"relay_{mode}", " ".join(_shown(cmd)))
        p = self.track(Proc(cmd, self.work / f"{name}.log"))
        p.start()
        try:
            cpu0, busy0 = p.cpu(), machine_busy_seconds()
            count = asyncio.run(self._wait_total(out_topic, self.n_input, 600, p))
            cpu1, busy1 = p.cpu(), machine_busy_seconds()
            hwm = p.hwm_kib()
        finally:
            self.finish(p)
        first, last, outputs = asyncio.run(self._edges([out_topic]))
        seconds = (last - first) / 1000
        self.drop_topics(base)
        out = {
            "records": count,
            "seconds": round(seconds, 2),
            "rate": count / seconds if seconds > 0 else 0.0,
            "cpu_s": round(cpu1 - cpu0, 2),
            "cpu_us_per_record": (cpu1 - cpu0) / count * 1e6,
            "others_cpu_s": others_cpu(busy1 - busy0, cpu1 - cpu0),
            "peak_rss_mib": hwm / 1024,
            "mode": mode,
        }
        log(
            f"relay {mode}: {count:,} records in {seconds:.1f} s = {out['rate']:,.0f}/s; cpu {out['cpu_s']} s "
            f"({out['cpu_us_per_record']:.1f} µs/record; others {out['others_cpu_s']:.1f} s), peak RSS {out['peak_rss_mib']:.0f} MiB"
        )
        return out

    async def _wait_total(self, topic: str, n: int, timeout: float, proc: Proc) -> int:
        async with kio.Offsets(self.bootstrap) as off:
            deadline = time.monotonic() + timeout
            count = 0
            while time.monotonic() < deadline:
                count = await off.total([topic])
                if count >= n:
                    return count
                if not proc.alive():
                    raise RuntimeError(f"relay died:\n{proc.tail()}")
                await asyncio.sleep(0.25)
            raise TimeoutError(f"relay wrote {count:,} of {n:,} in {timeout:.0f} s")

    # --- the grid ---------------------------------------------------------------------

    def measure_grid(self) -> dict:
        """The worker over the grid of ``bench.batchstep`` (records x tenants x skewed or
        even activity), through Kafka: issue 14's bar as its text puts it, "the native
        worker's [CPU per record] stays within 1.5x across it". Every point's input is
        published first (its own topic), then the runs go round-robin over the points, a
        fresh worker at each: a slow minute of the shared machine falls on one run of every
        point. CPU per record over all the point's records, setup commands included, from
        the worker's /readyz to its last record, as ``measure_worker`` counts it. No relay
        beside it: its per-record cost does not depend on the tenants, and a relay's CPU
        counted from its start would carry its start-up (about 0.15 s, 3 µs a record at
        50,000 records)."""
        from .batchstep import make_input

        a = self.args
        points = [
            (records, tenants, activity)
            for records in (int(x) for x in a.grid_records.split(","))
            for tenants in (int(x) for x in a.grid_tenants.split(","))
            for activity in ("skewed", "even")
        ]
        inputs = []
        for i, (records, tenants, activity) in enumerate(points):
            # Every event time in the past (the worker refuses records > 24 h ahead), by 10 min.
            start = traffic.now_micros() - (records * 5_000 + 600 * SECOND)
            msgs = make_input(records, tenants, activity, self.tables, seed=a.seed, start=start)
            items = [(m.key, m.value) for m in msgs]
            setup = next((n for n, m in enumerate(msgs) if m.topic != "tenant-commands"), len(msgs))
            topic = f"{self.prefix}-grid{i}"
            asyncio.run(kio.create_topics(self.bootstrap, [topic], a.partitions))
            asyncio.run(kio.publish(self.bootstrap, topic, items, a.partitions))
            inputs.append((topic, len(items), setup))
            log(f"grid input {i}: {len(items):,} records ({setup:,} setup commands), {tenants:,} tenants {activity}, in {topic}")
        self.settle()  # the inputs' pages written back before the first worker starts
        measured: list[list[dict]] = [[] for _ in points]
        # measure_worker reads the input from these; the phases after this one (the
        # profile) rate the benchmark's own input again.
        own = self.input_topic, self.n_input, self.n_setup
        try:
            for run in range(a.runs):
                log(f"--- grid, run {run + 1} of {a.runs}")
                for i, (topic, n, setup) in enumerate(inputs):
                    self.input_topic, self.n_input, self.n_setup = topic, n, setup
                    measured[i].append(self.measure_worker(f"gw{i}r{run}", a.worker_cap))
        finally:
            self.input_topic, self.n_input, self.n_setup = own
        self.drop_topics(f"{self.prefix}-grid")
        rows = []
        for (records, tenants, activity), (_topic, n, setup), m in zip(points, inputs, measured):
            worker = [r["cpu_us_per_record"] for r in m]
            rows.append(
                {
                    "records": n,
                    "setup_commands": setup,
                    "tenants": tenants,
                    "activity": activity,
                    "worker_us": statistics.median(worker),
                    "worker_runs": [round(x, 2) for x in worker],
                    "finished": all(r["finished"] for r in m),
                    "worker_rate": statistics.median(r["rate"] for r in m),
                    "account_writes_per_record": statistics.median(r["batches"].get("accounts_per_record", 0) for r in m),
                    "batches": statistics.median(r["batches"].get("count", 0) for r in m),
                }
            )
        us = [r["worker_us"] for r in rows]
        return {"batch_size": a.batch_size, "partitions": a.partitions, "runs": a.runs, "grid": rows, "worker_spread": max(us) / min(us)}

    # --- offline ------------------------------------------------------------------------

    def measure_offline(self, run: int, engine: str = "native") -> dict:
        """``rater rate --engine ENGINE`` on the input; "native" falls back to the Python
        engine (and says so in the results) when the extension is not built."""
        from rater.core.native_engine import available

        if engine == "native" and not available():
            engine = "python"
        name = "offline" if engine == "native" else "offline_python"
        out_dir = self.work / f"{name}-{run}"
        now = format_time((traffic.now_micros() // SECOND) * SECOND)
        cmd = [
            sys.executable,
            "-m",
            "rater",
            "rate",
            "--engine",
            engine,
            "--rates",
            str(RATES_DIR),
            "--out",
            str(out_dir),
            "--now",
            now,
            str(self.jsonl),
        ]
        self.results["commands"].setdefault(name, " ".join(_shown(cmd)))
        err_path = self.work / f"{name}-{run}.err"
        # What is dirty in the page cache (the input just written, the broker's log) is
        # written back first, untimed, not while an engine writes its own outputs
        # (``settle`` waits for the broker's deletions, the larger disturbance).
        synced = time.perf_counter()
        os.sync()
        synced = time.perf_counter() - synced
        t0 = time.perf_counter()
        busy0 = machine_busy_seconds()
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        # Peak RSS from VmHWM, polled: ru_maxrss of a child counts the pages it shared
        # with this (large) process between fork and exec.
        hwm = [0]

        def poll_hwm() -> None:
            while proc.returncode is None:
                try:
                    hwm[0] = max(hwm[0], status_kib(proc.pid, "VmHWM"))
                except (OSError, KeyError):
                    return
                time.sleep(0.1)

        poller = threading.Thread(target=poll_hwm, daemon=True)
        poller.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        wall = time.perf_counter() - t0
        busy = machine_busy_seconds() - busy0
        text = err_path.read_text(errors="replace")
        m = re.search(r"([\d,]+) records in ([\d.]+) s \(([\d,]+)/s\)", text)
        if proc.returncode != 0 or not m:
            raise RuntimeError(f"rater rate failed ({proc.returncode}): {text[-2000:]}")
        records = int(m.group(1).replace(",", ""))
        seconds = float(m.group(2))
        shutil.rmtree(out_dir, ignore_errors=True)
        cpu = usage.ru_utime + usage.ru_stime
        out = {
            "user_s": round(usage.ru_utime, 2),
            "sys_s": round(usage.ru_stime, 2),
            "sync_s": round(synced, 2),
            "records": records,
            "seconds": seconds,
            "rate": records / seconds,
            "wall_s": round(wall, 2),
            "wall_rate": records / wall,
            "cpu_s": round(cpu, 2),
            "others_cpu_s": others_cpu(busy, cpu),
            "peak_rss_mib": hwm[0] / 1024,
            "engine": engine,
        }
        log(
            f"offline ({engine}): {records:,} records in {seconds:.2f} s = {out['rate']:,.0f}/s "
            f"({wall:.1f} s wall with start-up; cpu {usage.ru_utime:.1f} s user, {usage.ru_stime:.1f} s system, "
            f"others {out['others_cpu_s']:.1f} s meanwhile; {synced:.1f} s writing back the page cache before)"
        )
        return out

    # --- latency ------------------------------------------------------------------------

    def prepare_latency(self) -> None:
        a = self.args
        self.lat_at = traffic.now_micros() - 3600 * SECOND
        profiles = traffic.tenants(a.latency_tenants, a.seed, self.tables, at=self.lat_at)
        cmds = traffic.setup_commands(profiles, self.lat_at)
        self.lat_commands = f"{self.prefix}-lat-commands"
        asyncio.run(kio.create_topics(self.bootstrap, [self.lat_commands], a.partitions))
        items = [(c["tenant_id"].encode(), dumps(c)) for c in cmds]
        asyncio.run(kio.publish(self.bootstrap, self.lat_commands, items, a.partitions))
        self.lat_setup = len(items)

    def measure_latency(self, run: int, rate: int) -> dict:
        a = self.args
        base = f"{self.prefix}-lat{rate}-r{run}"
        cdrs = f"{base}-cdrs"
        asyncio.run(kio.create_topics(self.bootstrap, [cdrs], a.partitions))
        topics = self.out_topics(base, cdrs, commands=self.lat_commands)
        w = self.track(self.worker(f"lat{rate}-r{run}", topics, app_id=base))
        w.start()
        pacer_cmd = [
            sys.executable,
            "-m",
            "bench.pacer",
            "--broker",
            self.bootstrap,
            "--topic",
            cdrs,
            "--partitions",
            str(a.partitions),
            "--rate",
            str(rate),
            "--seconds",
            str(a.latency_seconds),
            "--tenants",
            str(a.latency_tenants),
            "--seed",
            str(a.seed),
            "--at",
            str(self.lat_at),
            "--run-id",
            f"L{rate}r{run}",
        ]
        self.results["commands"].setdefault("pacer", " ".join(_shown(pacer_cmd)))
        try:
            w.wait_ready()
            w.wait_records(self.lat_setup, timeout=120, interval=0.2)
            pacer = self.track(Proc(pacer_cmd, self.work / f"pacer-{rate}-{run}.log"))
            pacer.start()
            pacer.popen.wait(timeout=a.latency_seconds + 120)  # type: ignore[union-attr]
            self.finish(pacer)
            lines = pacer.log_path.read_text().splitlines()
            paced = orjson.loads(next(l for l in reversed(lines) if l.startswith("{")))  # noqa: E741
            offered = paced["sent"]
            deadline = time.monotonic() + a.latency_drain
            got = 0
            while time.monotonic() < deadline:
                got = (w.records() or 0) - self.lat_setup
                if got >= offered:
                    break
                time.sleep(0.2)
            cpu = w.cpu()
        finally:
            self.finish(w)
        inputs = asyncio.run(kio.read_all(self.bootstrap, [cdrs]))
        outputs = asyncio.run(kio.read_all(self.bootstrap, [topics["rated"]]))
        sent_at: dict[str, int] = {}
        for value, ts in inputs:
            rec = orjson.loads(value)
            if "cdr_id" in rec:
                sent_at[rec["cdr_id"]] = ts
        lat: list[float] = []
        for value, ts in outputs:
            rec = orjson.loads(value)
            t = sent_at.get(rec.get("cdr_id"))
            if t is not None:
                lat.append(ts - t)
        lat.sort()
        missing = len(sent_at) - len(lat)
        out_ts = [ts for _v, ts in outputs]
        in_ts = [ts for _v, ts in inputs]
        # What the worker rated per second while the load lasted and after.
        rated_rate = len(lat) / max((max(out_ts) - min(in_ts)) / 1000, 1e-3) if out_ts and in_ts else 0.0
        self.drop_topics(base)
        shutil.rmtree(w.state_dir, ignore_errors=True)
        out = {
            "offered_rate": rate,
            "achieved_rate": paced["rate"],
            "pacer_worst_lag_s": paced["worst_lag_s"],
            "cdrs": len(sent_at),
            "rated": len(lat),
            "unrated_after_drain": missing,
            "p50_ms": _pct(lat, missing, 0.50),
            "p99_ms": _pct(lat, missing, 0.99),
            "p999_ms": _pct(lat, missing, 0.999),
            "max_ms": lat[-1] if lat and not missing else None,
            "rated_rate": rated_rate,
            "seconds": a.latency_seconds,
            # A queue that grows: CDRs left over, or the median CDR waiting over a second.
            "saturated": missing > 0.001 * len(sent_at) or _pct(lat, missing, 0.5) is None or _pct(lat, missing, 0.5) > 1000,
            "worker_cpu_s": round(cpu, 1),
        }
        log(
            f"latency at {rate:,}/s: {len(lat):,} of {len(sent_at):,} rated within {a.latency_drain:.0f} s after; "
            f"p50 {_fmt_ms(out['p50_ms'])}, p99 {_fmt_ms(out['p99_ms'])}, p99.9 {_fmt_ms(out['p999_ms'])}"
        )
        return out

    # --- authorize ----------------------------------------------------------------------

    def measure_authorize(self) -> dict:
        """Answers/s and latency of ``authorize?call_type=&to=`` against one worker (the
        latency phase's tenants), idle and while the pacer offers it CDRs."""
        a = self.args
        base = f"{self.prefix}-auth"
        cdrs = f"{base}-cdrs"
        asyncio.run(kio.create_topics(self.bootstrap, [cdrs], a.partitions))
        topics = self.out_topics(base, cdrs, commands=self.lat_commands)
        w = self.track(self.worker("auth", topics, app_id=base, debug=False))
        w.start()
        ask_cmd = [
            sys.executable,
            "-m",
            "bench.authorize",
            "--url",
            w.url,
            "--tenants",
            str(a.latency_tenants),
            "--seed",
            str(a.seed),
            "--at",
            str(self.lat_at),
            "--seconds",
            str(a.authorize_seconds),
            "--concurrency",
            str(a.authorize_concurrency),
        ]
        load = a.authorize_load
        pacer_cmd = [
            sys.executable,
            "-m",
            "bench.pacer",
            "--broker",
            self.bootstrap,
            "--topic",
            cdrs,
            "--partitions",
            str(a.partitions),
            "--rate",
            str(load),
            "--seconds",
            str(a.authorize_seconds + 4),
            "--tenants",
            str(a.latency_tenants),
            "--seed",
            str(a.seed),
            "--at",
            str(self.lat_at),
            "--run-id",
            "A",
        ]
        shown = " ".join(_shown(ask_cmd)).replace("http://$BROKER", "http://127.0.0.1:$WORKER_PORT")
        self.results["commands"].setdefault("authorize", shown)
        out: dict[str, Any] = {"load_cdrs_per_s": load, "tenants": a.latency_tenants}
        try:
            w.wait_ready()
            w.wait_records(self.lat_setup, timeout=120, interval=0.2)

            def ask(label: str) -> dict:
                proc = self.track(Proc(ask_cmd, self.work / f"authorize-{label}.log"))
                proc.start()
                proc.popen.wait(timeout=a.authorize_seconds + 60)  # type: ignore[union-attr]
                self.finish(proc)
                lines = proc.log_path.read_text().splitlines()
                return orjson.loads(next(l for l in reversed(lines) if l.startswith("{")))  # noqa: E741

            out["idle"] = ask("idle")
            before = w.records() or 0
            pacer = self.track(Proc(pacer_cmd, self.work / "pacer-authorize.log"))
            pacer.start()
            # The pacer draws its records before its clock starts ("ready" on stderr):
            # ask only once the CDRs flow.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and (w.records() or 0) <= before:
                time.sleep(0.1)
            time.sleep(1.0)
            rated0, t0 = w.records() or 0, time.monotonic()
            out["loaded"] = ask("loaded")
            # What the worker rated meanwhile: it must keep up with the offered CDRs.
            out["rated_while_asked_per_s"] = round(((w.records() or 0) - rated0) / (time.monotonic() - t0), 1)
            pacer.popen.wait(timeout=a.authorize_seconds + 120)  # type: ignore[union-attr]
            self.finish(pacer)
            lines = pacer.log_path.read_text().splitlines()
            paced = orjson.loads(next(l for l in reversed(lines) if l.startswith("{")))  # noqa: E741
            out["paced_rate"] = paced["rate"]
            out["worker_cpu_s"] = round(w.cpu(), 1)
        finally:
            self.finish(w)
        self.drop_topics(base)
        shutil.rmtree(w.state_dir, ignore_errors=True)
        for label in ("idle", "loaded"):
            r = out[label]
            log(
                f"authorize {label}: {r['rps']:,.0f} answers/s, p50 {_fmt_ms(r['p50_ms'])}, p99 {_fmt_ms(r['p99_ms'])}, "
                f"statuses {r['statuses']}"
            )
        return out

    # --- restart ------------------------------------------------------------------------

    def measure_standby(self) -> dict:
        """Two workers sharing the input, without and with a standby copy of each other's
        partitions (``--standby-replicas`` 0 and 1), alternating, ``--runs`` pairs: the two
        workers' CPU per input record, from the input's publication to every record rated
        and 5 s more (the standby copies follow the last writes). Both join on an empty
        topic and settle first, so each rates about half."""
        a = self.args
        items, rows = self.items, []
        for run in range(a.runs):
            for standby in (0, 1):
                base = f"{self.prefix}-sb{run}{standby}"
                topic = f"{base}-in"
                asyncio.run(kio.create_topics(self.bootstrap, [topic], a.partitions))
                topics = self.out_topics(base, topic)
                extra = ["--standby-replicas", str(standby)]
                ws = [self.track(self.worker(f"sb{run}{standby}{x}", topics, app_id=base, debug=False, extra=extra)) for x in "ab"]
                try:
                    for w in ws:
                        w.start()
                    for w in ws:
                        w.wait_ready(timeout=300)
                    time.sleep(8)  # the second worker's rebalance and recovery
                    for w in ws:
                        w.wait_ready(timeout=300)
                    cpu0 = [w.cpu() for w in ws]
                    t0 = time.monotonic()
                    asyncio.run(kio.publish(self.bootstrap, topic, items, a.partitions))
                    while sum(w.records() or 0 for w in ws) < self.n_input:
                        if time.monotonic() - t0 > a.worker_cap:
                            raise RuntimeError(f"standby phase: the input not rated in {a.worker_cap:.0f} s")
                        time.sleep(0.5)
                    seconds = time.monotonic() - t0
                    time.sleep(5)
                    cpu = [w.cpu() - c for w, c in zip(ws, cpu0)]
                    rated = [w.records() or 0 for w in ws]
                finally:
                    for w in ws:
                        self.finish(w)
                self.drop_topics(base)
                for w in ws:
                    shutil.rmtree(w.state_dir, ignore_errors=True)
                row = {
                    "standby_replicas": standby,
                    "records": rated,
                    "seconds": round(seconds, 2),
                    "cpu_s": [round(c, 2) for c in cpu],
                    "cpu_us_per_record": sum(cpu) / max(sum(rated), 1) * 1e6,
                }
                rows.append(row)
                log(
                    f"standby {standby}, run {run + 1}: {sum(rated):,} records ({rated[0]:,} + {rated[1]:,}) in {seconds:.1f} s, "
                    f"the workers' CPU {row['cpu_us_per_record']:.1f} µs per record"
                )
        return {"records": self.n_input, "tenants": a.tenants, "runs": rows}

    def measure_restart(self) -> dict:
        a = self.args
        n = a.restart_accounts
        at = traffic.now_micros() - 3600 * SECOND
        profiles = traffic.tenants(2 * n, a.seed + 7, self.tables, at=at)
        # configure_account and add_funds: every account created and funded (touched). The
        # first n tenants are built; the other n are added at the end (``measure_more``).
        setup = [c for c in traffic.setup_commands(profiles, at, "rs") if "auto_recharge" not in c]
        first = {p["tenant_id"] for p in profiles[:n]}
        cmds = [c for c in setup if c["tenant_id"] in first]
        more = [c for c in setup if c["tenant_id"] not in first]
        base = f"{self.prefix}-rs"
        topic = f"{base}-in"
        asyncio.run(kio.create_topics(self.bootstrap, [topic], a.partitions))
        asyncio.run(kio.publish(self.bootstrap, topic, [(c["tenant_id"].encode(), dumps(c)) for c in cmds], a.partitions))
        topics = self.out_topics(base, topic)
        state = self.work / "rs-state"
        idle_topics = self.out_topics(f"{self.prefix}-idle", f"{self.prefix}-idle-in")
        asyncio.run(kio.create_topics(self.bootstrap, [idle_topics["cdrs"]], a.partitions))
        # The idle worker (no account) runs beside the builder: RSS does not mind the noise.
        idle = self.track(self.worker("idle", idle_topics, debug=False))
        builder = self.track(self.worker("rs-build", topics, app_id=base, state_dir=state, debug=False))
        idle.start()
        builder.start()
        res: dict[str, Any] = {"accounts": n, "records": len(cmds)}
        try:
            builder.wait_ready()
            t0 = time.monotonic()
            idle.wait_ready()
            time.sleep(3)
            res["idle_rss_mib"] = idle.rss_kib() / 1024
            self.finish(idle)
            builder.wait_records(len(cmds), timeout=1200)
            res["build_s"] = round(time.monotonic() - t0, 1)
            time.sleep(3)
            res["full_rss_mib"] = builder.rss_kib() / 1024
            res["full_hwm_mib"] = builder.hwm_kib() / 1024
        finally:
            self.finish(idle)
            self.finish(builder)
        res["state_dir_mib"] = _du(state) / 2**20
        per = (res["full_rss_mib"] - res["idle_rss_mib"]) * 2**20 / n
        res["bytes_per_account"] = per
        res["mib_per_100k"] = per * 100_000 / 2**20
        log(
            f"restart: {n:,} accounts built in {res['build_s']} s; RSS {res['full_rss_mib']:.0f} MiB vs idle "
            f"{res['idle_rss_mib']:.0f} MiB = {per:,.0f} bytes/account ({res['mib_per_100k']:.1f} MiB per 100k)"
        )
        ready, indexed, rss_after = [], [], []
        for i in range(a.runs):
            w = self.track(self.worker(f"rs-restart{i}", topics, app_id=base, state_dir=state, debug=False))
            w.start()
            try:
                ready.append(w.wait_ready(timeout=300))
                indexed.append(_wait_log(w, r"indexed (\d+) account", 300))
                time.sleep(2)
                rss_after.append(w.rss_kib() / 1024)
            finally:
                self.finish(w)
            log(
                f"restart {i + 1}: ready in {ready[-1]:.2f} s, tenant index of the accounts built "
                f"{indexed[-1]:.2f} s after start, RSS {rss_after[-1]:.0f} MiB"
            )
        res["ready_s"] = ready
        res["indexed_s"] = indexed
        res["rss_after_restart_mib"] = rss_after
        if not a.quick:
            cold = self.work / "rs-cold"
            w = self.track(self.worker("rs-cold", topics, app_id=base, state_dir=cold, debug=False))
            w.start()
            try:
                res["cold_ready_s"] = w.wait_ready(timeout=600)
                res["cold_cpu_s"] = round(w.cpu(), 2)  # start-up and the rebuild, to /readyz
                bulk = _bulk_read(w.log_path.read_text(errors="replace"))
                if bulk is not None:  # rater/worker/catchup.py
                    res["cold_bulk_records"], res["cold_bulk_s"] = bulk
            finally:
                self.finish(w)
            shutil.rmtree(cold, ignore_errors=True)
            read = f"; changelog read in bulk: {bulk[0]:,} records in {bulk[1]:.2f} s" if bulk is not None else ""
            log(
                f"restart on an empty state dir (table rebuilt from the changelog): ready in {res['cold_ready_s']:.2f} s, "
                f"{res['cold_cpu_s']} s of CPU{read}"
            )
        self.measure_more(res, more, topic, topics, base, state)
        self.drop_topics(base)
        self.drop_topics(f"{self.prefix}-idle")
        shutil.rmtree(state, ignore_errors=True)
        return res

    def measure_more(self, res: dict, more: list, topic: str, topics: dict[str, str], base: str, state: Path) -> None:
        """RSS per account with twice the accounts: a worker started on the n stored
        accounts builds n more. Much of a worker's memory is bounded (the account cache,
        RocksDB's write buffers and block cache, per partition) and is spread over more
        accounts as they grow; this shows how far."""
        a = self.args
        w = self.track(self.worker("rs-more", topics, app_id=base, state_dir=state, debug=False))
        w.start()
        try:
            w.wait_ready(timeout=300)
            asyncio.run(kio.publish(self.bootstrap, topic, [(c["tenant_id"].encode(), dumps(c)) for c in more], a.partitions))
            w.wait_records(len(more), timeout=1200)
            time.sleep(3)
            res["more_rss_mib"] = w.rss_kib() / 1024
        finally:
            self.finish(w)
        n = res["accounts"]
        res["bytes_per_account_at_2n"] = (res["more_rss_mib"] - res["idle_rss_mib"]) * 2**20 / (2 * n)
        log(
            f"restart: {n:,} more accounts built by a worker started on the first {n:,}: RSS {res['more_rss_mib']:.0f} MiB "
            f"= {res['bytes_per_account_at_2n']:,.0f} bytes/account over {2 * n:,} accounts"
        )

    # --- profile ------------------------------------------------------------------------

    def profile_worker(self) -> dict:
        """py-spy attached to a running worker; without py-spy, the worker runs under
        pyinstrument (main thread only, start-up included) and is stopped after the time."""
        a = self.args
        tool = a.profiler
        if tool == "auto":
            tool = "py-spy" if profiling.py_spy() else "pyinstrument"
        base = f"{self.prefix}-prof"
        topics = self.out_topics(base, self.input_topic)
        w = self.track(self.worker("prof", topics, app_id=base))
        raw = self.work / ("profile-worker.txt" if tool == "py-spy" else "profile-worker.pstats")
        if tool == "pyinstrument":
            w.launcher = [sys.executable, "-m", "pyinstrument", "--interval", "0.01", "-r", "pstats", "-o", str(raw), "-m"]
        self.results["commands"]["profile"] = (
            " ".join(_shown(w.command()))
            if tool == "pyinstrument"
            else ("py-spy record --pid <worker pid> --rate 100 --duration N --format raw --function --nonblocking --output F")
        )
        w.start()
        note = ""
        try:
            w.wait_ready()
            time.sleep(2)
            c0, t0 = w.cpu(), time.monotonic()
            if tool == "py-spy":
                ok, note = profiling.record(w.pid, a.profile_seconds, raw)
            else:
                time.sleep(a.profile_seconds)
            c1, t1 = w.cpu(), time.monotonic()
            n = w.records() or 0
        finally:
            self.finish(w)  # pyinstrument writes its profile as the worker exits
        if tool == "pyinstrument":
            ok = raw.exists()
            note = "" if ok else f"pyinstrument wrote no profile:\n{w.tail()}"
        res: dict[str, Any] = {
            "tool": tool,
            "note": note,
            "seconds": a.profile_seconds,
            "worker_cpu_share": (c1 - c0) / (t1 - t0),
            "records_by_end": n,
            "batches": _batch_stats(w.log_path),
        }
        if ok:
            res.update(profiling.summarize(raw) if tool == "py-spy" else profiling.summarize_pstats(raw))
            if a.keep_profiles:
                shutil.copy(raw, RESULTS_DIR / f"{raw.stem}-{self.mode}{raw.suffix}")
        self.drop_topics(base)
        shutil.rmtree(w.state_dir, ignore_errors=True)
        # The offline path too (one process, no Kafka): where `rater rate` spends its time.
        sub = self.work / "offline-profile.jsonl"
        with open(self.jsonl, "rb") as src, open(sub, "wb") as dst:
            for i, line in enumerate(src):
                if i >= min(self.n_input, a.tenants * 3 + 100_000):
                    break
                dst.write(line)
        exe = profiling.py_spy()
        if exe:
            out = self.work / "profile-offline.txt"
            cmd = [
                exe,
                "record",
                "--rate",
                "200",
                "--format",
                "raw",
                "--function",
                "--output",
                str(out),
                "--",
                sys.executable,
                "-m",
                "rater",
                "rate",
                "--rates",
                str(RATES_DIR),
                "--out",
                str(self.work / "offline-prof"),
                str(sub),
            ]
            subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=900)
            if out.exists():
                res["offline"] = profiling.summarize(out)
        return res

    # --- the whole thing ------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return "quick" if self.args.quick else "full"

    def run(self) -> dict:
        a = self.args
        began = time.monotonic()
        self.results["mode"] = self.mode
        self.results["started"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.results["machine"] = report.machine()
        self.results["settings"] = {k: v for k, v in vars(a).items() if k not in ("broker",)}
        self.results["argv"] = " ".join(["python -m bench.run", *sys.argv[1:]])
        if a.only in ("authorize", "restart"):
            self.start_broker()
        if a.only == "authorize":
            self.prepare_latency()
            self.results["authorize"] = self.measure_authorize()
            self.results["elapsed_s"] = round(time.monotonic() - began)
            return self.results
        if a.only == "restart":
            self.results["restart"] = self.measure_restart()
            self.results["elapsed_s"] = round(time.monotonic() - began)
            return self.results
        if a.only == "grid":
            self.start_broker()
            self.results["grid"] = self.measure_grid()
            self.results["elapsed_s"] = round(time.monotonic() - began)
            return self.results
        if a.only == "standby":
            self.write_input()
            self.start_broker()
            self.results["standby"] = self.measure_standby()
            self.results["elapsed_s"] = round(time.monotonic() - began)
            return self.results
        self.write_input()
        # ``rater rate`` first, every run of it, before the broker starts: it uses no
        # Kafka, and a broker beside it on the two cores takes one from the native
        # engine's threads (right after the Kafka phases, deleting their topics, it made
        # the kernel's share of the output writes four times what it is otherwise; idle,
        # it still used 0.5 to 1.6 s of CPU during each run: bench/analysis.md).
        offline = []
        for run in range(a.runs):
            log(f"--- rater rate, run {run + 1} of {a.runs}")
            offline.append({"offline": self.measure_offline(run, "native"), "offline_python": self.measure_offline(run, "python")})
        self.start_broker()
        self.publish_input()
        self.prepare_latency()
        rates = [int(r) for r in a.latency_rates.split(",") if r]
        for run in range(a.runs):
            log(f"--- run {run + 1} of {a.runs}")
            r: dict[str, Any] = dict(offline[run])
            r["worker"] = self.measure_worker(f"w{run}", a.worker_cap)
            r["relay_batch"] = self.measure_relay(f"rb{run}", "batch")
            r["relay_send"] = self.measure_relay(f"rs{run}", "send")
            r["latency"] = [self.measure_latency(run, rate) for rate in rates]
            self.results["runs"].append(r)
        if a.ablation:
            # What the worker's own optimisations buy, each turned off in turn, same input
            # and cap; the throughput runs above are the "all on" line (median).
            self.results["ablation"] = []
            for label, extra in ABLATIONS:
                log(f"ablation: {label}")
                res = self.measure_worker(f"ab{len(self.results['ablation'])}", a.worker_cap, extra=extra)
                self.results["ablation"].append({"label": label, "args": " ".join(extra), **res})
        if a.grid:
            self.results["grid"] = self.measure_grid()
        if not a.no_restart:
            self.results["restart"] = self.measure_restart()
        if not a.no_profile:
            self.results["profile"] = self.profile_worker()
        if not a.no_authorize:
            self.results["authorize"] = self.measure_authorize()
        self.results["elapsed_s"] = round(time.monotonic() - began)
        return self.results


def _shown(cmd: list[str]) -> list[str]:
    """A command as a reader would type it: ``python`` for the venv's interpreter, paths
    relative to the repo, the temp dirs and generated names left as placeholders."""
    out = []
    for part in cmd:
        if part == sys.executable:
            part = "python"
        part = part.replace(str(ROOT) + "/", "")
        part = re.sub(r"/tmp/rater-bench-[^/]+", "$WORK", part)
        part = re.sub(r"bench-[0-9a-f]{6}", "bench-$ID", part)
        part = re.sub(r"127\.0\.0\.1:\d+", "$BROKER", part)
        out.append(part)
    return out


def _batch_stats(path: Path) -> dict:
    sizes, ms, accounts = [], [], 0
    try:
        for line in path.read_text(errors="replace").splitlines():
            m = _BATCH_LINE.search(line)
            if m:
                sizes.append(int(m.group(1)))
                accounts += int(m.group(3))
                ms.append(float(m.group(4)))
    except OSError:
        pass
    if not sizes:
        return {}
    return {
        "count": len(sizes),
        "mean_records": statistics.mean(sizes),
        "mean_ms": statistics.mean(ms),
        "median_records": statistics.median(sizes),
        "median_ms": statistics.median(ms),
        "us_per_record_in_batch": sum(ms) * 1000 / sum(sizes),
        "accounts": accounts,
        "accounts_per_record": accounts / sum(sizes),
    }


def _pct(sorted_ms: list[float], missing: int, q: float) -> float | None:
    """Nearest-rank percentile over the rated latencies plus ``missing`` that never came
    (counted as infinite): None when the rank falls among those."""
    n = len(sorted_ms) + missing
    if n == 0:
        return None
    k = max(0, min(n - 1, int(q * n + 0.999999) - 1))
    return float(sorted_ms[k]) if k < len(sorted_ms) else None


def _fmt_ms(v: float | None) -> str:
    return "unbounded" if v is None else f"{v:.0f} ms"


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def _bulk_read(text: str) -> tuple[int, float] | None:
    """The records and seconds of the worker's bulk reads of the changelog, summed
    ("changelog read in bulk: N records of P partition(s) in S s", ``rater/worker/adapter.py``);
    None when it logged none."""
    found = re.findall(r"changelog read in bulk: (\d+) records of \d+ partition\(s\) in ([\d.]+) s", text)
    if not found:
        return None
    return sum(int(n) for n, _s in found), round(sum(float(s) for _n, s in found), 2)


def _wait_log(w: WorkerProc, pattern: str, timeout: float) -> float:
    """Seconds from the worker's start to the log line matching ``pattern`` (the log's
    own timestamps are second-resolution text: poll the file instead)."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        try:
            text = w.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        for m in rx.finditer(text, seen):
            if int(m.group(1)) > 0:
                return time.monotonic() - w.started
        time.sleep(0.05)
    raise TimeoutError(f"no {pattern!r} in the worker log after {timeout:.0f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke size (under 3 minutes)")
    p.add_argument("--broker", help="bootstrap of a running broker (default: a dev broker in a temp dir)")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--cdrs", type=int)
    p.add_argument("--tenants", type=int)
    p.add_argument("--runs", type=int)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=5000, help="the worker's --batch-size (and the relay's)")
    p.add_argument("--relay-wait", type=float, default=0.02, help="the relay's getmany timeout (s)")
    p.add_argument("--worker-cap", type=float, help="seconds a worker may rate before its rate is read off")
    p.add_argument("--latency-rates", default="1000,5000,20000")
    p.add_argument("--latency-seconds", type=float)
    p.add_argument("--latency-drain", type=float, help="seconds allowed after the pacer stops")
    p.add_argument("--latency-tenants", type=int)
    p.add_argument("--restart-accounts", type=int)
    p.add_argument("--profile-seconds", type=float)
    p.add_argument(
        "--profiler",
        choices=("auto", "py-spy", "pyinstrument"),
        default="auto",
        help="auto: py-spy when installed, else pyinstrument (the bench extra)",
    )
    p.add_argument("--no-restart", action="store_true")
    p.add_argument(
        "--ablation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the worker with each optimisation turned off (once each)",
    )
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--no-authorize", action="store_true")
    p.add_argument(
        "--only",
        choices=("authorize", "restart", "grid", "standby"),
        help="run one phase alone, written to --results, by default <phase>.json beside the other results "
        "(restart, standby: not rendered; grid: the worker over the grid of bench.batchstep, --runs runs; "
        "standby: two workers with --standby-replicas 0 and 1 alternating, --runs pairs)",
    )
    p.add_argument(
        "--grid",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure the worker over the grid of bench.batchstep (default: in the full run, not with --quick)",
    )
    p.add_argument("--grid-records", default="50000,300000", help="the grid's input sizes")
    p.add_argument("--grid-tenants", default="1000,10000", help="the grid's tenant counts")
    p.add_argument("--authorize-seconds", type=float)
    p.add_argument("--authorize-concurrency", type=int, default=8, help="connections asking at once")
    p.add_argument("--authorize-load", type=int, default=1000, help="CDRs/s offered while it is asked")
    p.add_argument("--no-report", action="store_true", help="keep the results JSON, do not rewrite docs/")
    p.add_argument("--results", help="results JSON path (default bench/results/<quick|full>.json)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, inputs)")
    p.add_argument("--keep-profiles", action="store_true", help="copy py-spy's raw stacks to bench/results/")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    if args.grid is None:
        args.grid = not args.quick
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        results = bench.run()
    finally:
        bench.cleanup()
    RESULTS_DIR.mkdir(exist_ok=True)
    name = args.only or bench.mode
    path = Path(args.results) if args.results else RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    log(f"results in {path} ({results['elapsed_s']} s)")
    if not args.no_report and args.only not in ("restart", "standby"):
        written = report.write()
        log("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
