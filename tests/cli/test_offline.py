"""`rater rate` end to end: the worked example of the README, the CLI's errors, big inputs."""

import os
import subprocess
import sys

import orjson
import pytest

from rater import offline
from rater.cli.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")


def _read_jsonl(path):
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f]


@pytest.fixture(params=["native", "python"])
def worked(request, tmp_path, monkeypatch):
    """The worked example rated by each engine (native skipped when it is not built)."""
    from rater.core.native_engine import available

    if request.param == "native" and not available():
        pytest.skip("the native engine is not built")
    monkeypatch.chdir(EXAMPLES)
    out = tmp_path / "out"
    assert (
        main(
            [
                "rate",
                "--engine",
                request.param,
                "--rates",
                "../rate_tables",
                "--out",
                str(out),
                "--now",
                "2026-11-25T00:00:00Z",
                "worked-example.jsonl",
            ]
        )
        == 0
    )
    return out


@pytest.mark.parametrize("name", offline.OUTPUT_FILES)
def test_worked_example_matches_the_expected_files_field_by_field(worked, name):
    got = _read_jsonl(worked / name)
    expected = _read_jsonl(os.path.join(EXAMPLES, "worked-example.expected", name))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert sorted(g) == sorted(e)
        for field in e:
            assert g[field] == e[field], (name, e.get("cdr_id") or e.get("type") or e.get("reason"), field)


def test_worked_example_balances_match_the_expected_file(worked):
    with open(worked / "balances.json", "rb") as f, open(os.path.join(EXAMPLES, "worked-example.expected", "balances.json"), "rb") as g:
        assert orjson.loads(f.read()) == orjson.loads(g.read())


def test_worked_example_charges_are_the_ones_worked_out_by_hand(worked):
    # standard-usd: dial-out UK 0.022/min 60/60; India 0.03 60/60; domestic US 0.01 6/6 with
    # 100 included minutes; toll-free 1800 0.02 6/6; UK mobile 0.05 60/60.
    charges = {r["cdr_id"]: (r["billable_seconds"], r["charge"], r["balance_after"]) for r in _read_jsonl(worked / "rated-cdrs.jsonl")}
    assert charges == {
        "acme-0001": (1800, "0.660000", "19.340000"),  # 30 min * 0.022
        "acme-0002": (180, "0.090000", "19.250000"),  # 125 s -> 3 min * 0.03
        "acme-0003": (3000, "0.000000", "19.250000"),  # 50 min, inside 100 included
        "acme-0004": (4002, "1.334000", "17.916000"),  # 6 + 666*6 s; 0.02 * 4002/60
        "acme-0005": (36000, "30.000000", "-12.084000"),  # 600 min * 0.05
        "g-1": (120, "0.092000", "-0.092000"),  # FR mobile 0.046 EUR, 2 min
    }
    events = [(e["tenant_id"], e["type"], e["balance"]) for e in _read_jsonl(worked / "balance-events.jsonl")]
    assert events == [
        ("acme", "funds_added", "20.000000"),
        ("acme", "low_balance", "-12.084000"),
        ("acme", "below_zero", "-12.084000"),
        ("acme", "auto_recharge_requested", "-12.084000"),
        ("acme", "auto_recharge_succeeded", "12.916000"),  # 25 - 12.084 of debt
        ("acme", "balance_restored", "12.916000"),
        ("globex", "below_zero", "-0.092000"),
    ]
    assert [(r["reason"], r["source"]["line"]) for r in _read_jsonl(worked / "rejects.jsonl")] == [
        ("invalid_json", 13),
        ("unknown_tenant", 14),
        ("no_rate", 15),
    ]


def test_the_summary_counts_outcomes_rejects_charges_and_negative_tenants(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rater",
            "rate",
            "--rates",
            "../rate_tables",
            "--out",
            str(tmp_path / "o"),
            "--now",
            "2026-11-25T00:00:00Z",
            "worked-example.jsonl",
        ],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stderr.splitlines()
    assert lines[0].startswith("15 records in ") and lines[0].endswith("11 applied, 1 duplicate, 3 rejected")
    assert lines[1:] == [
        "rejects: invalid_json 1, no_rate 1, unknown_tenant 1",
        "charged: 0.092000 EUR, 32.084000 USD",
        "tenants below zero: 1 (globex)",
    ]


def test_a_missing_input_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    code = main(["rate", "--rates", os.path.join(ROOT, "rate_tables"), "--out", str(tmp_path), "nope.jsonl"])
    assert code == 2
    assert capsys.readouterr().err == "rater: nope.jsonl: no such input file\n"


def test_a_broken_rate_table_stops_the_run_with_file_and_line(tmp_path, capsys):
    rates = tmp_path / "rates"
    rates.mkdir()
    (rates / "p.csv").write_text("call_type,prefix,currency,rate_per_minute\ninternational,x1,USD,0.1\n")
    (tmp_path / "in.jsonl").write_text("")
    code = main(["rate", "--rates", str(rates), "--out", str(tmp_path / "o"), str(tmp_path / "in.jsonl")])
    err = capsys.readouterr().err
    assert code == 2
    assert "rater: p.csv:2: prefix 'x1' must be 1 to 15 digits without '+'" in err
    assert "Traceback" not in err


def test_a_corrupt_state_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "state.json").write_text("{not json")
    (tmp_path / "in.jsonl").write_text("")
    code = main(
        [
            "rate",
            "--rates",
            os.path.join(ROOT, "rate_tables"),
            "--out",
            str(tmp_path / "o"),
            "--state",
            str(tmp_path / "state.json"),
            str(tmp_path / "in.jsonl"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"rater: {tmp_path / 'state.json'}: not a rater state file")


def test_invalid_utf8_lands_in_rejects_as_base64(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(b'{"cdr_id":"\xff"}\n')
    main(["rate", "--rates", os.path.join(ROOT, "rate_tables"), "--out", str(tmp_path / "o"), str(tmp_path / "in.jsonl")])
    [reject] = _read_jsonl(tmp_path / "o" / "rejects.jsonl")
    assert (reject["reason"], reject["raw"], reject["raw_encoding"]) == ("invalid_json", "eyJjZHJfaWQiOiL/In0=", "base64")


def test_a_second_run_with_state_continues_the_first(tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLES)
    lines = open("worked-example.jsonl", "rb").read().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_bytes(b"".join(lines[:7]))
    (tmp_path / "b.jsonl").write_bytes(b"".join(lines[7:]))
    state = str(tmp_path / "state.json")
    for part in ("a", "b"):
        main(
            [
                "rate",
                "--rates",
                "../rate_tables",
                "--out",
                str(tmp_path / part),
                "--state",
                state,
                "--now",
                "2026-11-25T00:00:00Z",
                str(tmp_path / f"{part}.jsonl"),
            ]
        )
    with open(tmp_path / "b" / "balances.json", "rb") as f:
        got = orjson.loads(f.read())
    with open(os.path.join(EXAMPLES, "worked-example.expected", "balances.json"), "rb") as f:
        assert got == orjson.loads(f.read())
