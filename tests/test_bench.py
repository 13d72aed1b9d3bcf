"""The benchmark harness's arithmetic (``bench/report.py``, ``bench/procs.py``): the
verdicts ``docs/benchmarks.md`` states are the medians of the runs, each ratio taken
within one run, against the issue's bars. Synthetic results with values worked out by
hand; no benchmark runs here."""

from bench.procs import others_cpu, records_total
from bench.report import grid_section, summary, verdicts, worker_grid, worker_grid_section


def _run(worker: float, relay: float, relay_send: float, offline: float, python: float, p99_at_5000: float | None) -> dict:
    def side(rate: float) -> dict:
        return {"rate": rate, "cpu_s": 1.0}

    return {
        "worker": {**side(worker), "finished": True, "batches": {}, "disk": {}},
        "relay_batch": side(relay),
        "relay_send": side(relay_send),
        "offline": side(offline),
        "offline_python": side(python),
        "latency": [
            {
                "offered_rate": 5000,
                "achieved_rate": 5000.0,
                "p50_ms": 10.0,
                "p99_ms": p99_at_5000,
                "p999_ms": None if p99_at_5000 is None else p99_at_5000 * 2,
                "rated": 100,
                "cdrs": 100,
                "saturated": p99_at_5000 is None,
                "rated_rate": 4000.0,
            }
        ],
    }


def _results() -> dict:
    # Worker / batch relay per run: 0.30, 0.45, 0.40 -> median 0.40 (not the ratio of the
    # medians, 70,000 / 200,000 = 0.35). Native / python offline: 9.0, 12.0, 11.0 -> 11.0.
    return {
        "runs": [
            _run(60_000, 200_000, 100_000, 360_000, 40_000, 30.0),
            _run(90_000, 200_000, 100_000, 360_000, 30_000, 50.0),
            _run(70_000, 175_000, 100_000, 330_000, 30_000, 40.0),
        ],
        "restart": {"accounts": 100_000, "ready_s": [3.0, 9.0, 12.0], "bytes_per_account": 1100.0, "mib_per_100k": 104.9},
    }


def test_the_verdicts_are_the_medians_of_per_run_ratios_against_the_bars():
    res = _results()
    rows = {row[0]: row[1:] for row in verdicts(res, summary(res))}
    assert rows["worker ≥ 0.5 × relay"] == ["0.400 × the batch relay (0.700 × the send relay)", "missed: 1.2× short"]
    assert rows["worker ≥ 30,000 CDRs/s"] == ["70,000 records/s", "met"]
    assert rows["p99 < 100 ms at 5,000/s"] == ["40 ms", "met"]
    assert rows["`rater rate` ≥ 100,000 records/s"] == ["360,000 records/s", "met"]
    assert rows["`rater rate --engine native` ≥ 10 × `--engine python`"] == ["11.0×", "met"]
    assert rows["ready < 10 s after restart, 100k accounts"] == ["9.00 s", "met"]
    assert rows["< 1 KiB RSS per account"] == ["1,100 bytes (104.9 MiB per 100k)", "missed: 1.1× over"]


def test_a_latency_step_unbounded_in_most_runs_is_a_missed_bar():
    res = _results()
    for run in res["runs"][:2]:
        run["latency"][0].update(p99_ms=None, p999_ms=None, saturated=True)
    rows = {row[0]: row[1:] for row in verdicts(res, summary(res))}
    assert rows["p99 < 100 ms at 5,000/s"] == ["unbounded: the worker rates 4,000/s of the 5,000/s offered", "missed: saturated"]


def _grid(native: list[float]) -> dict:
    points = [(50_000, 1_000, "skewed"), (50_000, 10_000, "even"), (300_000, 10_000, "even")]
    return {
        "started": "2026-12-04 15:00 UTC",
        "argv": "python -m bench.batchstep --runs 3",
        "batch": 5000,
        "partitions": 8,
        "cache": 50_000,
        "runs": 3,
        "grid": [
            {"records": r, "tenants": t, "activity": a, "native_us": us, "native_runs": [us, us + 1.0, us - 0.5]}
            for (r, t, a), us in zip(points, native)
        ],
        "native_spread": max(native) / min(native),
    }


def test_the_grid_bar_is_the_native_spread_at_most_one_and_a_half():
    res = _results()
    at_bar = {row[0]: row[1:] for row in verdicts(res, summary(res), _grid([6.0, 7.5, 9.0]))}
    assert at_bar["native batch step within 1.5× across the grid"] == ["1.50× (6.0 to 9.0 µs per record, 3 points)", "met"]
    over = {row[0]: row[1:] for row in verdicts(res, summary(res), _grid([6.5, 8.0, 10.4]))}
    # 10.4 / 6.5 = 1.6, and 1.6 / 1.5 = 1.0667
    assert over["native batch step within 1.5× across the grid"] == ["1.60× (6.5 to 10.4 µs per record, 3 points)", "missed: 1.07× over"]
    no_grid = [row[0] for row in verdicts(res, summary(res))]
    assert "native batch step within 1.5× across the grid" not in no_grid


def test_the_grid_section_shows_each_point_with_its_runs():
    text = "\n".join(grid_section(_grid([6.5, 8.0, 10.4])))
    assert "`python -m bench.batchstep --runs 3`, on 2026-12-04 15:00 UTC" in text
    assert "| 300,000 | 10,000 | even | 10.4 (10.4, 11.4, 9.9) |" in text
    assert "Spread (the largest point over the smallest): native 1.60×." in text
    assert grid_section(None) == []


def _worker_grid(us: list[float]) -> dict:
    points = [(50_000, 1_000, "even", 0.2), (300_000, 10_000, "skewed", 0.5), (300_000, 10_000, "even", 0.75)]
    return {
        "started": "2026-12-05 01:00 UTC",
        "argv": "python -m bench.run --only grid",
        "grid": {
            "batch_size": 5000,
            "partitions": 8,
            "runs": 3,
            "grid": [
                {
                    "records": r,
                    "tenants": t,
                    "activity": a,
                    "worker_us": x,
                    "worker_runs": [x, x + 1.0, x - 0.5],
                    "worker_rate": 120_000.4,
                    "finished": r < 300_000 or a == "skewed",
                    "account_writes_per_record": w,
                }
                for (r, t, a, w), x in zip(points, us)
            ],
            "worker_spread": max(us) / min(us),
        },
    }


def test_the_worker_grid_bar_is_its_spread_at_most_one_and_a_half():
    res = _results()
    at_bar = {row[0]: row[1:] for row in verdicts(res, summary(res), None, _worker_grid([7.0, 8.4, 10.5]))}
    assert at_bar["native worker within 1.5× across the grid (through Kafka)"] == [
        "1.50× (7.0 to 10.5 µs of CPU per record, 3 points)",
        "met",
    ]
    # 11.2 / 7.0 = 1.6, and 1.6 / 1.5 = 1.0667
    over = {row[0]: row[1:] for row in verdicts(res, summary(res), None, _worker_grid([7.0, 9.0, 11.2]))}
    assert over["native worker within 1.5× across the grid (through Kafka)"] == [
        "1.60× (7.0 to 11.2 µs of CPU per record, 3 points)",
        "missed: 1.07× over",
    ]
    assert "native worker within 1.5× across the grid (through Kafka)" not in [row[0] for row in verdicts(res, summary(res))]


def test_the_worker_grid_section_shows_each_point_with_its_runs():
    text = "\n".join(worker_grid_section(_worker_grid([7.0, 9.0, 11.2])))
    assert "`python -m bench.run --only grid`, on 2026-12-05 01:00 UTC" in text
    assert "| 50,000 | 1,000 | even | 7.0 (7.0, 8.0, 6.5) | 120,000 | 0.20 |" in text
    assert "| 300,000 | 10,000 | even | 11.2 (11.2, 12.2, 10.7) | 120,000 (capped) | 0.75 |" in text
    assert "Spread (the largest point over the smallest): 1.60×." in text
    assert worker_grid_section(None) == []


def test_the_rest_of_the_machine_is_its_busy_time_less_the_process_own():
    assert others_cpu(busy=17.25, own=13.7) == 3.55
    assert others_cpu(busy=1.0, own=1.2) == 0.0  # clock ticks apart: never below zero


def test_records_done_is_the_sum_of_the_workers_record_counters():
    text = (
        b"# HELP rater_records_total Records handled\n"
        b"# TYPE rater_records_total counter\n"
        b'rater_records_total{outcome="applied",topic="cdrs"} 1200.0\n'
        b'rater_records_total{outcome="rejected",topic="cdrs"} 3.0\n'
        b'rater_records_total{outcome="applied",topic="tenant-commands"} 40.0\n'
        b"rater_batches_total 7.0\n"
    )
    assert records_total(text) == 1243


def test_the_worker_grid_shown_is_the_newer_of_the_full_runs_and_the_lone_one():
    full = {"argv": "python -m bench.run", "started": "2026-12-05 01:10 UTC", "grid": {"worker_spread": 1.3}}
    lone = {"argv": "python -m bench.run --only grid", "started": "2026-12-05 00:53 UTC", "grid": {"worker_spread": 1.4}}
    assert worker_grid(full, lone) == full
    assert worker_grid(full, {**lone, "started": "2026-12-05 11:00 UTC"})["argv"] == "python -m bench.run --only grid"
    assert worker_grid({"argv": "python -m bench.run --no-grid", "started": "2026-12-06 00:00 UTC"}, lone)["grid"] == {"worker_spread": 1.4}
    assert worker_grid(None, None) is None


def test_the_cold_start_reads_the_bulk_reads_of_the_worker_log():
    from bench.run import _bulk_read

    log = (
        "[2026-12-05 02:21:37,210] [1663] [INFO] Executing _on_partitions_assigned \n"
        "[2026-12-05 02:21:37,331] [1663] [INFO] changelog read in bulk: 3106 records of 4 partition(s) in 0.04 s \n"
        "[2026-12-05 02:21:39,001] [1663] [INFO] changelog read in bulk: 20 records of 1 partition(s) in 1.5 s; "
        "stopped (stall), table recovery reads the rest\n"
    )
    assert _bulk_read(log) == (3126, 1.54)
    assert _bulk_read("[INFO] partitions assigned: [0, 1]\n") is None
