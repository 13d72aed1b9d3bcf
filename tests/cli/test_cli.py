"""The command line (rater/cli/main.py, rater/cli/kafka.py): a problem is one line naming the
file, flag or address, exit status 2, no traceback; and nothing is rated when its
results could not be saved."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rater.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
WORKED = str(ROOT / "examples" / "worked-example.jsonl")
RATES = str(ROOT / "rate_tables")


def _fails(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err.strip()


def test_rate_out_naming_a_file_is_one_line(capsys, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    assert _fails(capsys, ["rate", "--rates", RATES, "--out", str(f), WORKED]) == (f"rater: --out {f}: exists and is not a directory")


def test_rate_out_that_cannot_be_created_is_one_line(capsys, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    out = f / "sub"  # under a file: ENOTDIR
    assert _fails(capsys, ["rate", "--rates", RATES, "--out", str(out), WORKED]) == (
        f"rater: --out {out}: cannot create the directory (Not a directory)"
    )


def test_state_in_a_missing_directory_is_refused_before_anything_is_written(capsys, tmp_path):
    out = tmp_path / "out"
    state = tmp_path / "nowhere" / "state.json"
    assert _fails(capsys, ["rate", "--rates", RATES, "--out", str(out), "--state", str(state), WORKED]) == (
        f"rater: --state {state}: the directory {tmp_path / 'nowhere'} does not exist"
    )
    assert not (out / "rated-cdrs.jsonl").exists()


def test_an_input_that_is_a_directory_says_so(capsys, tmp_path):
    assert _fails(capsys, ["rate", "--rates", RATES, "--out", str(tmp_path / "o"), str(tmp_path)]) == (
        f"rater: {tmp_path}: is a directory, not an input file"
    )


def test_worker_on_a_port_in_use_is_one_line(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert _fails(capsys, ["worker", "--web-host", "127.0.0.1", "--web-port", str(port)]) == (
            f"rater: cannot listen on 127.0.0.1:{port} (--web-host, --web-port): Address already in use"
        )


def test_dev_broker_help_prints_its_usage_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["dev-broker", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rater dev-broker") and "start" in out


def test_version_is_the_packages(capsys):
    import tomllib

    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"rater {expected}\n"


def test_a_dash_reads_standard_input(capsys, tmp_path, monkeypatch):
    import io
    import json
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(Path(WORKED).read_bytes())))
    out = tmp_path / "out"
    assert cli.main(["rate", "--rates", RATES, "--out", str(out), "--now", "2026-11-25T00:00:00Z", "-"]) == 0
    expected = ROOT / "examples" / "worked-example.expected"
    assert json.loads((out / "balances.json").read_text()) == json.loads((expected / "balances.json").read_text())
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["source"]["line"] for r in rejects) == sorted(
        json.loads(line)["source"]["line"] for line in (expected / "rejects.jsonl").read_text().splitlines()
    )
    assert {r["source"]["file"] for r in rejects} == {"-"}


def test_every_worker_flag_is_in_the_readme_configuration_table():
    import re

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Configuration") : readme.index("### HTTP endpoints")]
    parser = cli.build_parser()
    worker = parser._subparsers._group_actions[0].choices["worker"]  # argparse has no public accessor
    flags = {s for a in worker._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    documented = set(re.findall(r"`(--[a-z-]+)", table))
    # The topic flags are one row: `--topic-cdrs` ... `--topic-rejects`.
    missing = {f for f in flags - documented if not f.startswith("--topic-")}
    assert missing == set()
    for flag in flags:
        if flag.startswith("--topic-"):
            continue
        variable = "RATER_" + flag[2:].upper().replace("-", "_")
        if flag == "--rates":
            variable = "RATER_RATES_DIR"
        assert variable in table or flag.startswith(("--sasl-", "--ssl-")), flag


def test_dev_broker_where_rater_dev_is_left_out_is_one_line(capsys, monkeypatch):
    # The Docker image removes rater/dev; an import of it then fails (None in sys.modules does that).
    import sys

    import rater.dev

    monkeypatch.setitem(sys.modules, "rater.dev.broker", None)
    monkeypatch.delattr(rater.dev, "broker", raising=False)
    assert cli.main(["dev-broker", "status"]) == 2
    assert capsys.readouterr().err == ("rater: dev-broker is development tooling, not installed here (run it from a checkout)\n")
