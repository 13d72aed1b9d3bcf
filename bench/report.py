"""docs/benchmarks.md and docs/benchmarks.png from bench/results/{full,quick,authorize,batchstep,grid}.json.

    python -m bench.report      # re-render without measuring again

The numbers are medians over the runs of one ``bench.run``; the analysis section is the
hand-written ``bench/analysis.md`` (it names the run it was written against), so a new
measurement does not silently keep an old reading.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks.png"
ANALYSIS = ROOT / "bench" / "analysis.md"

TARGETS = {
    "ratio": 0.5,  # worker >= 0.5 x relay
    "worker_rate": 30_000,  # CDRs/s
    "p99_at_5000_ms": 100.0,
    "offline_rate": 100_000,
    "ready_s": 10.0,
    "bytes_per_account": 1024.0,
    "grid_spread": 1.5,  # the native batch step's CPU per record, largest over smallest point
}


def machine() -> dict[str, Any]:
    def first(path: str, key: str) -> str:
        try:
            for line in open(path):
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    def version(mod: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(mod)
        except Exception:
            return "?"

    from rater.dev.broker import KAFKA_VERSION

    mem_kib = int(first("/proc/meminfo", "MemTotal").split()[0] or 0)
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    except Exception:
        java = "?"
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "cpu": first("/proc/cpuinfo", "model name"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiokafka": version("aiokafka"),
        "faust": version("faust-streaming"),
        "orjson": version("orjson"),
        "rocksdict": version("rocksdict"),
        "kafka": KAFKA_VERSION,
        "java": java,
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    }


# ------------------------------------------------------------------------------ helpers


def med(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def n0(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def n1(v: float | None) -> str:
    return "–" if v is None else f"{v:,.1f}"


def n2(v: float | None) -> str:
    return "–" if v is None else f"{v:,.2f}"


def ms(v: float | None, saturated: bool = False) -> str:
    if v is None:
        return "unbounded (not rated in time)"
    return f"{v:,.0f} ms" + (" (saturated)" if saturated else "")


def pct(v: float) -> str:
    return f"{v * 100:.1f} %"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def load(mode: str) -> dict | None:
    path = RESULTS / f"{mode}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------ summary


def summary(res: dict) -> dict[str, Any]:
    runs = res["runs"]
    s: dict[str, Any] = {}
    for key in ("worker", "relay_batch", "relay_send", "offline", "offline_python"):
        if key not in runs[0]:  # results from before the native engine: no python offline run
            continue
        s[key] = {f: med([r[key].get(f) for r in runs]) for f in runs[0][key] if isinstance(runs[0][key][f], (int, float))}
    s["worker_finished"] = all(r["worker"]["finished"] for r in runs)
    s["worker_capped_runs"] = sum(not r["worker"]["finished"] for r in runs)
    s["runs"] = len(runs)
    s["worker_batches"] = {
        f: med([r["worker"]["batches"].get(f) for r in runs])
        for f in ("mean_records", "mean_ms", "us_per_record_in_batch", "accounts_per_record")
    }
    s["worker_disk"] = {
        f: med([(r["worker"].get("disk") or {}).get(f) for r in runs])
        for f in ("changelog_bytes", "output_bytes", "changelog_bytes_per_account_write", "changelog_bytes_per_record")
    }
    s["ratio_batch"] = med([r["worker"]["rate"] / r["relay_batch"]["rate"] for r in runs])
    s["ratio_send"] = med([r["worker"]["rate"] / r["relay_send"]["rate"] for r in runs])
    lat: dict[int, dict] = {}
    for r in runs:
        for step in r["latency"]:
            lat.setdefault(step["offered_rate"], []).append(step)  # type: ignore[arg-type]
    s["latency"] = {}
    for rate, steps in sorted(lat.items()):  # type: ignore[assignment]

        def m(f):
            vals = [st[f] for st in steps]
            if any(v is None for v in vals):
                # unbounded in some run: the median is unbounded when most runs were
                return None if sum(v is None for v in vals) * 2 >= len(vals) else med(vals)
            return med(vals)

        s["latency"][rate] = {
            "achieved_rate": med([st["achieved_rate"] for st in steps]),
            "p50_ms": m("p50_ms"),
            "p99_ms": m("p99_ms"),
            "p999_ms": m("p999_ms"),
            "rated_share": med([st["rated"] / max(st["cdrs"], 1) for st in steps]),
            "saturated": sum(st["saturated"] for st in steps) * 2 > len(steps),
            "runs": len(steps),
            "cdrs": med([st["cdrs"] for st in steps]),
            "rated_rate": med([st.get("rated_rate") for st in steps]),
        }
    return s


def verdicts(res: dict, s: dict, grid: dict | None = None, wgrid: dict | None = None) -> list[list[str]]:
    """The "Against the targets" rows: ``res`` a ``bench.run`` result, ``s`` its summary,
    ``grid`` the batch step's (``bench/batchstep.py``), when it measured the native engine,
    ``wgrid`` the worker's over the same grid (``python -m bench.run --only grid``)."""
    rows = []
    w = s["worker"]["rate"]
    ratio = s["ratio_batch"]
    rows.append(
        [
            "worker ≥ 0.5 × relay",
            f"{ratio:.3f} × the batch relay ({s['ratio_send']:.3f} × the send relay)",
            "met" if ratio >= TARGETS["ratio"] else f"missed: {TARGETS['ratio'] / ratio:,.1f}× short",
        ]
    )
    rows.append(
        [
            "worker ≥ 30,000 CDRs/s",
            f"{w:,.0f} records/s",
            "met" if w >= TARGETS["worker_rate"] else f"missed: {TARGETS['worker_rate'] / w:,.1f}× short",
        ]
    )
    l5 = s["latency"].get(5000)
    if l5:
        p99 = l5["p99_ms"]
        if p99 is None:
            got, verdict = f"unbounded: the worker rates {l5['rated_rate']:,.0f}/s of the 5,000/s offered", "missed: saturated"
        else:
            got = f"{p99:,.0f} ms" + (" (saturated)" if l5["saturated"] else "")
            verdict = (
                "met"
                if p99 < TARGETS["p99_at_5000_ms"] and not l5["saturated"]
                else f"missed: {p99 / TARGETS['p99_at_5000_ms']:,.1f}× over" + (", saturated" if l5["saturated"] else "")
            )
        rows.append(["p99 < 100 ms at 5,000/s", got, verdict])
    off = s["offline"]["rate"]
    rows.append(
        [
            "`rater rate` ≥ 100,000 records/s",
            f"{off:,.0f} records/s",
            "met" if off >= TARGETS["offline_rate"] else f"missed: {TARGETS['offline_rate'] / off:,.1f}× short",
        ]
    )
    if "offline_python" in s:
        x = med([r["offline"]["rate"] / r["offline_python"]["rate"] for r in res["runs"]])
        rows.append(
            ["`rater rate --engine native` ≥ 10 × `--engine python`", f"{x:,.1f}×", "met" if x >= 10 else f"missed: {10 / x:,.1f}× short"]
        )
    rs = res.get("restart")
    if rs:
        ready = med(rs["ready_s"])
        scale = "" if rs["accounts"] == 100_000 else f" (with {rs['accounts']:,} accounts)"
        rows.append(
            [
                "ready < 10 s after restart, 100k accounts",
                f"{ready:.2f} s{scale}",
                "met" if ready < TARGETS["ready_s"] else f"missed: {ready / TARGETS['ready_s']:,.1f}× over",
            ]
        )
        per = rs["bytes_per_account"]
        rows.append(
            [
                "< 1 KiB RSS per account",
                f"{per:,.0f} bytes ({rs['mib_per_100k']:.1f} MiB per 100k)"
                + (f"; {rs['bytes_per_account_at_2n']:,.0f} with {2 * rs['accounts']:,}" if "bytes_per_account_at_2n" in rs else ""),
                "met" if per < TARGETS["bytes_per_account"] else f"missed: {per / TARGETS['bytes_per_account']:,.1f}× over",
            ]
        )
    if grid and "native_spread" in grid:
        us = [p["native_us"] for p in grid["grid"]]
        spread = grid["native_spread"]
        rows.append(
            [
                "native batch step within 1.5× across the grid",
                f"{spread:.2f}× ({min(us):.1f} to {max(us):.1f} µs per record, {len(us)} points)",
                "met" if spread <= TARGETS["grid_spread"] else f"missed: {spread / TARGETS['grid_spread']:,.2f}× over",
            ]
        )
    if wgrid:
        us = [p["worker_us"] for p in wgrid["grid"]["grid"]]
        spread = wgrid["grid"]["worker_spread"]
        rows.append(
            [
                "native worker within 1.5× across the grid (through Kafka)",
                f"{spread:.2f}× ({min(us):.1f} to {max(us):.1f} µs of CPU per record, {len(us)} points)",
                "met" if spread <= TARGETS["grid_spread"] else f"missed: {spread / TARGETS['grid_spread']:,.2f}× over",
            ]
        )
    return rows


def grid_section(grid: dict | None) -> list[str]:
    """The worker's batch step over the grid of inputs (``bench/batchstep.py``)."""
    if not grid:
        return []
    engines = [e for e in ("native", "python") if f"{e}_spread" in grid]
    when = f"on {grid['started']}" if "started" in grid else "(the time was not recorded)"
    argv = grid.get("argv", "python -m bench.batchstep")
    L = [
        "## The worker's batch step over a grid of inputs",
        "",
        f"`{argv}`, {when}, in one process without Kafka: step 2 and the planning of steps 3 "
        f"and 4 in batches of {grid['batch']:,} over {grid['partitions']} partitions"
        + (f" ({grid['fed']})" if "fed" in grid else "")
        + f", the account cache at {grid['cache']:,}; CPU µs per record over the whole input (setup commands "
        f"included), medians of {grid['runs']} runs going round-robin over the points. Skewed is "
        "the `rater.sim.traffic` input (a few busy tenants), even the same tenants equally busy.",
        "",
    ]
    head = ["records", "tenants", "activity"]
    head += [f"{e} µs / record (runs)" for e in engines]
    if len(engines) == 2:
        head.append("python / native")
    rows = []
    for p in grid["grid"]:
        row = [f"{p['records']:,}", f"{p['tenants']:,}", p["activity"]]
        row += [f"{p[f'{e}_us']:.1f} ({', '.join(f'{x:.1f}' for x in p[f'{e}_runs'])})" for e in engines]
        if len(engines) == 2:
            row.append(f"{p['python_us'] / p['native_us']:.2f}×")
        rows.append(row)
    L += table(head, rows)
    L += ["", "Spread (the largest point over the smallest): " + ", ".join(f"{e} {grid[f'{e}_spread']:.2f}×" for e in engines) + "."]
    rss = grid.get("rss")
    if rss:
        a, d = rss["all_held"], rss["default_cache"]
        L += [
            "",
            f"RSS per account held natively ({rss['accounts']:,} accounts read into a fresh store): "
            f"{a['bytes_per_account']:,.0f} bytes with every account held, {d['bytes_per_account']:,.0f} "
            f"per account with the default cache ({d['held']:,} held).",
        ]
    return L + [""]


def worker_grid_section(wgrid: dict | None) -> list[str]:
    """The worker over the same grid, through Kafka (``python -m bench.run --only grid``)."""
    if not wgrid:
        return []
    g = wgrid["grid"]
    L = [
        "## The worker over the grid of inputs",
        "",
        f"`{wgrid['argv']}`, on {wgrid['started']}: for each point of the grid above, its input "
        f"published to a topic of {g['partitions']} partitions, then a fresh `rater worker` "
        f"(native engine, batches of {g['batch_size']:,}) rating it from the first offset; CPU "
        "µs per record (utime + stime of the worker, from `/readyz` to its last record) over the "
        f"whole input, setup commands included; medians of {g['runs']} runs going round-robin "
        "over the points. Account writes per record from the worker's batch log.",
        "",
    ]
    rows = []
    for p in g["grid"]:
        rows.append(
            [
                f"{p['records']:,}",
                f"{p['tenants']:,}",
                p["activity"],
                f"{p['worker_us']:.1f} ({', '.join(f'{x:.1f}' for x in p['worker_runs'])})",
                f"{p['worker_rate']:,.0f}" + ("" if p["finished"] else " (capped)"),
                f"{p['account_writes_per_record']:.2f}",
            ]
        )
    L += table(["records", "tenants", "activity", "worker CPU µs / record (runs)", "records/s", "account writes / record"], rows)
    L += ["", f"Spread (the largest point over the smallest): {g['worker_spread']:.2f}×.", ""]
    return L


# ------------------------------------------------------------------------------ plot


def plot(res: dict, s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    names = ["rater worker", "relay (batch)", "relay (send)", "rater rate\n(offline)"]
    keys = ["worker", "relay_batch", "relay_send", "offline"]
    meds = [s[k]["rate"] for k in keys]
    colors = ["#d62728", "#1f77b4", "#6baed6", "#2ca02c"]
    ax1.bar(names, meds, color=colors)
    for i, k in enumerate(keys):
        pts = [r[k]["rate"] for r in res["runs"]]
        ax1.scatter([i] * len(pts), pts, color="black", s=12, zorder=3)
        ax1.annotate(f"{meds[i]:,.0f}/s", (i, meds[i]), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=9)
    ax1.axhline(TARGETS["worker_rate"], color="#d62728", ls="--", lw=1)
    ax1.text(3.45, TARGETS["worker_rate"], "worker target 30k/s", color="#d62728", fontsize=8, va="bottom", ha="right")
    ax1.set_yscale("log")
    ax1.set_ylim(bottom=min(meds) / 3)
    ax1.set_ylabel("records / s (log)")
    ax1.set_title(f"Throughput, median of {len(res['runs'])} run(s) (dots: runs)")

    rates = sorted(s["latency"])
    finite = [v for r in rates for k in ("p50_ms", "p99_ms", "p999_ms") if (v := s["latency"][r][k]) is not None]
    top = max(finite + [1000.0]) * 2.5  # where the unbounded percentiles are drawn
    for key, label, style, lift in (("p50_ms", "p50", "o-", 1.0), ("p99_ms", "p99", "s-", 1.5), ("p999_ms", "p99.9", "^-", 2.2)):
        xs, ys, xu = [], [], []
        for r in rates:
            v = s["latency"][r][key]
            if v is None:
                xu.append(r)
            else:
                xs.append(r)
                ys.append(max(v, 1))
        line = ax2.plot(xs, ys, style, label=label)[0]
        if xu:
            ax2.plot(xu, [top * lift] * len(xu), style[0], color=line.get_color(), mfc="none", ms=10)
    if any(s["latency"][r][k] is None for r in rates for k in ("p50_ms", "p99_ms", "p999_ms")):
        ax2.text(rates[0], top * 1.5, "hollow: unbounded (not rated in time)", fontsize=8, va="center")
    for r in rates:
        if s["latency"][r]["saturated"]:
            ax2.axvspan(r * 0.85, r * 1.15, color="grey", alpha=0.15)
    ax2.axhline(TARGETS["p99_at_5000_ms"], color="grey", ls="--", lw=1)
    ax2.text(rates[0], TARGETS["p99_at_5000_ms"], "100 ms", fontsize=8, va="bottom")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xticks(rates)
    ax2.set_xticklabels([f"{r:,}" for r in rates])
    ax2.set_xlabel("offered CDRs / s")
    ax2.set_ylabel("produce → rated CDR, ms (log)")
    ax2.set_title(f"Latency against offered load, median of {len(res['runs'])} run(s)\n(grey: saturated, the queue grows)", fontsize=10)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ markdown


def authorize_section(results: list[dict | None]) -> list[str]:
    """Authorize with a destination under load (``bench/authorize.py``), from the newest
    results that measured it (a full or quick run, or ``--only authorize``)."""
    found = sorted((r for r in results if r and r.get("authorize")), key=lambda r: r["started"])
    if not found:
        return []
    res = found[-1]
    a = res["authorize"]
    rows = []
    rated = a.get("rated_while_asked_per_s")
    loaded = f"offered {a['load_cdrs_per_s']:,} CDRs/s" + (f", rating {rated:,.0f}/s meanwhile" if rated is not None else "")
    for label, what in (("idle", "idle"), ("loaded", loaded)):
        r = a[label]
        rows.append(
            [
                what,
                f"{r['rps']:,.0f}",
                ms(r["p50_ms"]) if r["p50_ms"] >= 10 else f"{r['p50_ms']:.1f} ms",
                ms(r["p99_ms"]) if r["p99_ms"] >= 10 else f"{r['p99_ms']:.1f} ms",
                f"{r['answers']:,}",
                ", ".join(f"{k}: {v:,}" for k, v in r["statuses"].items()),
            ]
        )
    conc = a["idle"]["concurrency"]
    L = [
        "## Authorize with a destination",
        "",
        f"`GET /tenants/<id>/authorize?call_type=international&to=%2B...` against one worker "
        f"({a['tenants']:,} tenants, {conc} connections asking in a closed loop, each answer with a rate and "
        f"`max_seconds`), measured by `{res['argv']}` on {res['started']}: first with the worker idle, then "
        "while `bench/pacer.py` offers it CDRs. Latency is from sending the request to reading the whole answer. "
        f"The client runs on the same cores as the worker and the broker; the load average was "
        f"{' / '.join(res['machine'].get('loadavg_at_start', []))} at the start (other work shares the machine), "
        "so the figures move from run to run.",
        "",
    ]
    L += table(["worker", "answers/s", "p50", "p99", "answers", "HTTP statuses"], rows)
    return L + [""]


def render(full: dict | None, quick: dict | None, auth: dict | None = None, grid: dict | None = None, wgrid: dict | None = None) -> str:
    res = full or quick
    assert res is not None
    s = summary(res)
    st = res["settings"]
    m = res["machine"]
    inp = res["input"]
    L: list[str] = ["# Benchmarks", ""]
    L += [
        f"Measured by `{res['argv']}` on {res['started']} ({res['elapsed_s'] / 60:.1f} min; "
        f"{len(res['runs'])} run(s), the tables show medians). Regenerate with `make bench` "
        "(full size) or `python -m bench.run --quick` (smoke size, under 3 minutes); "
        "`python -m bench.report` re-renders this page from `bench/results/*.json`.",
        "",
        "Every process is measured from outside: records/s from the Kafka timestamps of its outputs, "
        "CPU seconds from `/proc/<pid>/stat` (utime + stime, all threads), peak RSS from `VmHWM` of "
        "`/proc/<pid>/status`. The worker and the baseline run one after the other in each run, on the "
        "same broker and the same input topic. The machine is shared with other work, so single numbers "
        "move by 10-30 %; the ratios and medians are what to read.",
        "",
        "![throughput and latency](benchmarks.png)",
        "",
        "## Against the targets",
        "",
    ]
    L += table(["target", "measured (median)", "verdict"], verdicts(res, s, grid, wgrid))
    L += ["", "## Machine", ""]
    L += table(
        ["", ""],
        [
            ["cores (nproc)", str(m["nproc"])],
            ["memory", f"{m['memory_gib']} GiB"],
            ["CPU", m["cpu"]],
            ["kernel", m["kernel"]],
            ["Python", m["python"]],
            ["aiokafka", m["aiokafka"]],
            ["faust-streaming", m["faust"]],
            ["orjson", m["orjson"]],
            ["rocksdict", m["rocksdict"]],
            ["Kafka broker", f"{m['kafka']} (dev broker, KRaft, one node, same machine), {m['java']}"],
            ["load average at start", " ".join(m["loadavg_at_start"])],
        ],
    )
    L += ["", "## Input", ""]
    L += [
        f"`rater.sim.traffic` with seed {st['seed']}: {inp['tenants']:,} tenants (plans, thresholds, auto-recharge, "
        f"skewed activity), their {inp['setup_commands']:,} setup commands, then {inp['cdrs_and_topups']:,} CDRs "
        f"(with 0.2 % manual top-ups): {inp['records']:,} records, {inp['bytes'] / 2**20:,.0f} MiB of JSON, "
        f"event times 5 ms apart, all in the past. Published once, before any clock starts, to one topic "
        f"of {st['partitions']} partitions keyed by tenant (murmur2), at {inp['publish_rate']:,} records/s.",
        "",
    ]
    # throughput
    w, rb, rsd, off = s["worker"], s["relay_batch"], s["relay_send"], s["offline"]
    L += ["## Throughput", ""]
    capped = not s["worker_finished"]
    L += [
        f"`rater worker --batch-size {st['batch_size']}` (the default), "
        "fresh app id, output topics and state dir each run. "
        + (
            f"**In {s['worker_capped_runs']} of {s['runs']} run(s) the worker did not finish the input in the time "
            f"allowed** (`--worker-cap {st['worker_cap']:.0f}` s after /readyz): there its rate is the records rated by "
            f"then (`rater_records_total`) over the time from its first output's timestamp; a median of "
            f"{w['records']:,.0f} of {inp['records']:,} records were rated. "
            "The relays and `rater rate` go through the whole input."
            if capped
            else "Each process goes through the whole input."
        ),
        "",
    ]
    rows = []
    for i, r in enumerate(res["runs"]):
        rows.append(
            [
                f"run {i + 1}",
                n0(r["worker"]["rate"]),
                n0(r["relay_batch"]["rate"]),
                n0(r["relay_send"]["rate"]),
                f"{r['worker']['rate'] / r['relay_batch']['rate']:.4f}",
                f"{r['worker']['rate'] / r['relay_send']['rate']:.4f}",
                n0(r["offline"]["rate"]),
            ]
        )
    rows.append(
        [
            "**median**",
            f"**{n0(w['rate'])}**",
            f"**{n0(rb['rate'])}**",
            f"**{n0(rsd['rate'])}**",
            f"**{s['ratio_batch']:.4f}**",
            f"**{s['ratio_send']:.4f}**",
            f"**{n0(off['rate'])}**",
        ]
    )
    L += table(
        ["", "worker rec/s", "relay batch rec/s", "relay send rec/s", "worker / relay batch", "worker / relay send", "`rater rate` rec/s"],
        rows,
    )
    L += [""]
    L += table(
        ["median", "records", "seconds", "rec/s", "CPU s", "CPU µs / record", "peak RSS"],
        [
            [
                "rater worker",
                n0(w["records"]),
                n1(w["seconds"]),
                n0(w["rate"]),
                n1(w["cpu_s"]),
                n0(w["cpu_us_per_record"]),
                f"{n0(w['peak_rss_mib'])} MiB",
            ],  # noqa: E501
            [
                "relay, batch",
                n0(rb["records"]),
                n1(rb["seconds"]),
                n0(rb["rate"]),
                n1(rb["cpu_s"]),
                n1(rb["cpu_us_per_record"]),
                f"{n0(rb['peak_rss_mib'])} MiB",
            ],  # noqa: E501
            [
                "relay, send",
                n0(rsd["records"]),
                n1(rsd["seconds"]),
                n0(rsd["rate"]),
                n1(rsd["cpu_s"]),
                n1(rsd["cpu_us_per_record"]),
                f"{n0(rsd['peak_rss_mib'])} MiB",
            ],  # noqa: E501
            [
                "`rater rate`",
                n0(off["records"]),
                n1(off["seconds"]),
                n0(off["rate"]),
                n1(off["cpu_s"]),
                n1(off["cpu_s"] * 1e6 / off["records"]),
                f"{n0(off['peak_rss_mib'])} MiB",
            ],  # noqa: E501
        ],
    )
    wb = s["worker_batches"]
    if w.get("others_cpu_s") is not None and rb.get("others_cpu_s") is not None:
        both = (w["cpu_s"] + w["others_cpu_s"]) * 1e6 / w["records"]
        L += [
            "",
            f"The rest of the machine (the broker, this harness) used {n1(w['others_cpu_s'])} s of CPU during the "
            f"worker's run and {n1(rb['others_cpu_s'])} s during the batch relay's: "
            f"{n1(w['others_cpu_s'] * 1e6 / w['records'])} and {n1(rb['others_cpu_s'] * 1e6 / rb['records'])} µs per "
            f"record. With the worker's own, {n1(both)} µs of the machine's CPU per record rated: at that cost the "
            f"two cores allow at most {n0(2e6 / both)} records/s, however the worker's work were spread over threads "
            f"({2e6 / both / rb['rate']:.2f}x the batch relay's median rate).",
        ]
    L += [
        "",
        f"The worker used {pct(w['cpu_share'])} of one core while it rated (CPU seconds over wall seconds); "
        f"the CDR phase alone (after the setup commands, from the `/metrics` series) ran at "
        f"{n0(w.get('cdr_phase_rate'))} records/s. Its batches (`RATER_DEBUG_BATCHES=1`) held "
        f"{n0(wb['mean_records'])} records on average and took {n1(wb['mean_ms'])} ms each from the start of their "
        f"rating to their changelog acknowledged ({n0(wb['us_per_record_in_batch'])} µs per record; the next batch "
        f"is rated meanwhile, so these overlap), against a "
        f"`--batch-size` of {st['batch_size']}."
        + (
            f" Each record made {wb['accounts_per_record']:.2f} account writes (an account is written once per batch "
            f"that touches it, with every id it remembers): {s['worker_disk']['changelog_bytes'] / 2**20:,.0f} MiB went "
            f"to the accounts changelog, {s['worker_disk']['changelog_bytes_per_account_write'] / 1024:,.1f} KiB per "
            f"account write and {s['worker_disk']['changelog_bytes_per_record'] / 1024:,.1f} KiB per record rated, "
            f"against {s['worker_disk']['output_bytes'] / 2**20:,.0f} MiB of outputs (rated CDRs, events, requests) "
            "on the broker's disk."
            if s["worker_disk"].get("changelog_bytes_per_account_write") and wb.get("accounts_per_record")
            else ""
        ),
        "",
        "The baseline (`bench/relay.py`) is a bare aiokafka relay with its own group: it parses each record "
        "with orjson, produces one record per input (acks=all, idempotent, same key and partition) and "
        "commits offsets once a second. *batch* appends to one `BatchBuilder` per partition as "
        "`rater/worker/sending.py` does; *send* calls `producer.send()` per record. The headline ratio is against "
        "the faster (batch) relay: what Kafka I/O in Python costs at best.",
        "",
    ]
    abl = res.get("ablation") or []
    if abl:
        L += ["### What each change bought (ablation, same run)", ""]
        rows = [["all on (the throughput median above)", "", n0(w["rate"]), "1.00", n0(w["cpu_us_per_record"])]]
        for x in abl:
            rows.append(
                [
                    x["label"],
                    f"`{x['args']}`",
                    n0(x["rate"]),
                    f"{x['rate'] / w['rate']:.2f}" if w["rate"] else "",
                    n0(x["cpu_us_per_record"]),
                ]
            )
        L += table(["worker", "flags", "rec/s", "vs all on", "CPU µs / record"], rows)
        L += ["", "(One run each, same input and cap as the throughput runs, fresh app id and state dir.)", ""]
    # latency
    L += ["## Latency", ""]
    L += [
        f"A fresh worker per offered rate (defaults), {st['latency_tenants']:,} tenants set up first from a shared "
        f"commands topic; then `bench/pacer.py` offers CDRs at a fixed rate for {st['latency_seconds']:.0f} s "
        f"(one batch per partition every 5 ms); the worker gets {st['latency_drain']:.0f} s more to finish. Latency is "
        "the rated CDR's Kafka CreateTime minus the input CDR's CreateTime, matched by `cdr_id`. A CDR not rated "
        "by the end counts as infinitely late, so a percentile that falls among those is *unbounded*: the "
        "worker cannot keep up with that rate and the queue grows for as long as the load lasts.",
        "",
    ]
    rows = []
    for rate, x in s["latency"].items():
        sat = x["saturated"]
        rows.append(
            [
                f"{rate:,}",
                n0(x["achieved_rate"]),
                n0(x["rated_rate"]),
                pct(x["rated_share"]),
                ms(x["p50_ms"], sat),
                ms(x["p99_ms"], sat),
                ms(x["p999_ms"], sat),
            ]
        )
    L += table(["offered CDRs/s", "achieved", "worker rated/s", "rated in time", "p50", "p99", "p99.9"], rows)
    L += [
        "",
        "*worker rated/s*: CDRs rated over the time from the first input to the last rated CDR. "
        "*(saturated)*: CDRs left unrated, or a median over 1 s: a queue that grows while the load lasts.",
    ]
    L += ["", "Per run:", ""]
    rows = []
    for i, r in enumerate(res["runs"]):
        for x in r["latency"]:
            rows.append(
                [
                    str(i + 1),
                    f"{x['offered_rate']:,}",
                    n0(x["achieved_rate"]),
                    n0(x.get("rated_rate")),
                    f"{x['rated']:,} / {x['cdrs']:,}",
                    ms(x["p50_ms"]),
                    ms(x["p99_ms"]),
                    ms(x["p999_ms"]),
                    n1(x["worker_cpu_s"]),
                ]
            )
    L += table(
        ["run", "offered", "achieved", "worker rated/s", "rated / offered", "p50", "p99", "p99.9", "worker CPU s (whole life)"], rows
    )  # noqa: E501
    L += [""]
    # offline
    L += ["## Offline: `rater rate`", ""]
    L += [
        f"`rater rate` on the same {inp['records']:,} records written as JSON lines "
        f"(one process; the native engine decodes, reads and writes on threads beside the one that rates): "
        f"{n0(off['rate'])} records/s as it reports itself (reading, rating, writing the outputs), "
        f"{n0(off['wall_rate'])} records/s over the whole process including start-up and `balances.json`; "
        f"peak RSS {n0(off['peak_rss_mib'])} MiB (all accounts in memory).",
        "",
    ]
    if "offline_python" in s:
        offp = s["offline_python"]
        L += [
            f"Engine: {res['runs'][0]['offline'].get('engine', 'python')}. The same input with `--engine python` "
            f"in the same runs: {n0(offp['rate'])} records/s ({n0(offp['wall_rate'])} records/s over the whole "
            f"process), peak RSS {n0(offp['peak_rss_mib'])} MiB.",
            "",
        ]
        if off.get("user_s") is not None and offp.get("user_s") is not None:
            L += [
                f"CPU of the whole process (medians): native {off['user_s']:.1f} s user and {off['sys_s']:.1f} s system, "
                f"python {offp['user_s']:.1f} s user and {offp['sys_s']:.1f} s system; the system time is mostly "
                f"the kernel copying the output files into the page cache, the same work for both engines. "
                f"The offline runs come first, all of them before the broker starts: right after the Kafka "
                f"phases, the broker deleting their topics made that system time four times larger, and even idle "
                f"it took CPU from the native engine's threads (`bench/analysis.md`).",
                "",
            ]
    rs = res.get("restart")
    if rs:
        L += ["## Restart and memory per account", ""]
        L += [
            f"A worker builds {rs['accounts']:,} accounts from {rs['records']:,} commands (`configure_account` and "
            f"`add_funds` per tenant, rated in "
            f"{rs['build_s']} s), is stopped (SIGTERM) and started again on the same state dir "
            f"({rs['state_dir_mib']:.0f} MiB of RocksDB), {len(rs['ready_s'])} time(s):",
            "",
        ]
        L += table(
            ["", "median", "runs"],
            [
                ["process start → /readyz 200", f"{med(rs['ready_s']):.2f} s", ", ".join(f"{x:.2f}" for x in rs["ready_s"])],
                [
                    "process start → tenant index rebuilt (`indexed N account(s)` in the log)",
                    f"{med(rs['indexed_s']):.2f} s",
                    ", ".join(f"{x:.2f}" for x in rs["indexed_s"]),
                ],
                [
                    "RSS after the restart, index rebuilt",
                    f"{med(rs['rss_after_restart_mib']):.0f} MiB",
                    ", ".join(f"{x:.0f}" for x in rs["rss_after_restart_mib"]),
                ],
            ]
            + (
                [
                    [
                        "start on an *empty* state dir → /readyz (table rebuilt from the changelog)",
                        f"{rs['cold_ready_s']:.2f} s"
                        + (f" ({rs['cold_cpu_s']:.1f} s of CPU)" if "cold_cpu_s" in rs else "")
                        + (
                            f"; {rs['cold_bulk_records']:,} changelog records read in bulk in {rs['cold_bulk_s']:.2f} s"
                            if "cold_bulk_records" in rs
                            else ""
                        ),
                        "1",
                    ]
                ]
                if "cold_ready_s" in rs
                else []
            ),
        )
        L += [
            "",
            f"RSS per account: the builder's RSS with all {rs['accounts']:,} accounts touched "
            f"({rs['full_rss_mib']:.0f} MiB; peak {rs['full_hwm_mib']:.0f} MiB) minus an idle worker's "
            f"({rs['idle_rss_mib']:.0f} MiB, same flags, no records) = **{rs['bytes_per_account']:,.0f} bytes per "
            f"account, {rs['mib_per_100k']:.1f} MiB per 100,000 accounts**. After a restart, with the same accounts "
            f"in the store and the tenant index rebuilt but no batch processed yet, the difference is "
            f"{(med(rs['rss_after_restart_mib']) - rs['idle_rss_mib']) * 2**20 / rs['accounts']:,.0f} bytes per account.",
            "",
        ]
        if "bytes_per_account_at_2n" in rs:
            L += [
                f"With twice the accounts (a worker started on those {rs['accounts']:,} builds {rs['accounts']:,} more): "
                f"RSS {rs['more_rss_mib']:.0f} MiB, **{rs['bytes_per_account_at_2n']:,.0f} bytes per account over "
                f"{2 * rs['accounts']:,}**. Much of the memory is bounded (the account cache, RocksDB's write buffers "
                f"and block cache of each partition) and is spread over more accounts as they grow.",
                "",
            ]
    prof = res.get("profile")
    if prof:
        L += ["## Profile", ""]
        if "self" not in prof:
            L += [f"Not taken: {prof.get('note')}", ""]
        else:
            pb = prof.get("batches") or {}
            how = (
                f"py-spy (`record --rate 100 --function --nonblocking`, {prof['seconds']:.0f} s, "
                f"{prof['samples']:,} samples of non-idle threads)"
                if prof.get("tool", "py-spy") == "py-spy"
                else f"pyinstrument (py-spy was not installed: 10 ms interval, main thread only, the worker's start-up "
                f"included, then {prof['seconds']:.0f} s of rating)"
            )
            L += [
                f"{how} on a worker rating the same input with the "
                f"defaults, in a separate pass after the measured runs. The worker used "
                f"{pct(prof['worker_cpu_share'])} of a core meanwhile"
                + (f"; its batches held {pb['mean_records']:.0f} records and took {pb['mean_ms']:.1f} ms." if pb else "."),
                "",
                "Where the samples were, by the owner of the innermost Python frame (time in C code, orjson or "
                "RocksDB, counts for the Python function that called it):",
                "",
            ]
            L += table(["area", "share"], [[a, pct(v)] for a, v in prof["areas"]])
            L += ["", "Top frames by self time (innermost frame):", ""]
            L += table(["share", "function (file)"], [[pct(v), f"`{f}`"] for f, v in prof["self"][:15]])
            L += ["", "Top frames by inclusive time (anywhere on the stack; the entry points and event-loop plumbing left out):", ""]
            skip = (
                "runpy",
                "<module>",
                "run_until_complete",
                "run_forever",
                "_run_once",
                "Handle._run",
                "main (rater/cli/main.py",
                "cmd_worker",
                "execute_from_commandline",
                "run (rater/worker/app.py",
                "_bootstrap",
                "WorkerThread.run",
                "_start_thread",
                "_run_code",
                "_execute_actor",
                "_execute_task",
            )
            rows = [[pct(v), f"`{f}`"] for f, v in prof["inclusive"] if not any(k in f for k in skip)][:22]
            L += table(["share", "function (file)"], rows)
            offp = prof.get("offline")
            if offp:
                L += [
                    "",
                    f"`rater rate` under py-spy ({offp['samples']:,} samples at 200 Hz, a subset of the input), by area and top self frames:",  # noqa: E501
                    "",
                ]
                L += table(["area", "share"], [[a, pct(v)] for a, v in offp["areas"][:6]])
                L += [""]
                L += table(["share", "function (file)"], [[pct(v), f"`{f}`"] for f, v in offp["self"][:12]])
            L += [""]
    L += authorize_section([full, quick, auth])
    L += grid_section(grid)
    L += worker_grid_section(wgrid)
    if ANALYSIS.exists():
        L += [ANALYSIS.read_text().strip(), ""]
    # commands
    c = res["commands"]
    L += [
        "## Commands",
        "",
        "```sh",
        "make bench                    # = python -m bench.run (full size)",
        "python -m bench.run --quick   # smoke size",
        f"{res['argv']:<29} # this run",
        "```",
        "",
        "What the harness ran (`$BROKER`, `$WORK`, `$ID` stand for the broker, the temp dir and the run's id):",
        "",
        "```sh",
    ]
    for k in ("worker", "relay_batch", "relay_send", "pacer", "offline"):
        if k in c:
            prefix = "RATER_DEBUG_BATCHES=1 " if k == "worker" else ""
            L.append(f"{prefix}{c[k]}")
    L += [
        c.get("profile", "py-spy record --pid <worker pid> --rate 100 --duration N --format raw --function --nonblocking --output F"),
        "```",
        "",
    ]
    L += [
        "Settings of this run: "
        + ", ".join(
            f"`--{k.replace('_', '-')} {v}`"
            for k, v in st.items()
            if k
            in (
                "cdrs",
                "tenants",
                "runs",
                "worker_cap",
                "latency_seconds",
                "latency_drain",
                "latency_tenants",
                "restart_accounts",
                "profile_seconds",
                "batch_size",
            )
        )
        + ".",
        "",
    ]
    if quick and full:
        qs = summary(quick)
        L += ["## Latest smoke run (`--quick`)", ""]
        lat = qs["latency"]
        L += [
            f"{quick['started']}, {quick['elapsed_s']} s, {quick['input']['records']:,} records: worker "
            f"{n0(qs['worker']['rate'])} rec/s, relay batch {n0(qs['relay_batch']['rate'])} rec/s "
            f"(ratio {qs['ratio_batch']:.3f}), `rater rate` {n0(qs['offline']['rate'])} rec/s; p99 at "
            + ", ".join(f"{r:,}/s {ms(v['p99_ms'])}" for r, v in lat.items())
            + (
                f"; ready after restart with {quick['restart']['accounts']:,} accounts {med(quick['restart']['ready_s']):.2f} s, "
                f"{quick['restart']['bytes_per_account']:,.0f} bytes/account."
                if quick.get("restart")
                else "."
            ),
            "",
        ]
    return "\n".join(L)


def worker_grid(full: dict | None, lone: dict | None) -> dict | None:
    """The worker's grid to show: the full run's (``make bench``), or the one measured alone
    (``python -m bench.run --only grid``) when that is the newer. Either as ``{"argv",
    "started", "grid"}``."""
    runs = [r for r in (full, lone) if r and r.get("grid")]
    if not runs:
        return None
    r = max(runs, key=lambda r: r["started"])  # "YYYY-MM-DD HH:MM UTC" sorts as it reads
    return {"argv": r["argv"], "started": r["started"], "grid": r["grid"]}


def write() -> list[Path]:
    full, quick = load("full"), load("quick")
    res = full or quick
    if res is None:
        raise SystemExit("no results in bench/results/")
    DOC.write_text(render(full, quick, load("authorize"), load("batchstep"), worker_grid(full, load("grid"))))
    plot(res, summary(res), PLOT)
    return [DOC, PLOT]


if __name__ == "__main__":
    for p in write():
        print(p)
