"""The ``rater`` command line. Errors are one line naming the file or value, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import time

from rater.cli.errors import UsageError
from rater.core.ledger import DEFAULT_HORIZON
from rater.core.timeutil import SECOND, TimeError, parse_time


def _now_arg(value: str | None) -> int:
    if value is None:
        return time.time_ns() // 1000
    try:
        return parse_time(value)
    except TimeError as exc:
        raise UsageError(f"--now {exc}") from None


def cmd_rate(args: argparse.Namespace) -> int:
    from rater import offline
    from rater.core.rates import check_rate_tables

    if args.inputs.count("-") > 1:
        raise UsageError("-: standard input can be read once")
    for path in args.inputs:
        if path == "-":
            continue
        if os.path.isdir(path):
            raise UsageError(f"{path}: is a directory, not an input file")
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such input file")
    _check_out_dir(args.out)
    if args.state:
        _check_state_path(args.state)
    tables, problems = check_rate_tables(args.rates)
    if tables is None:
        for p in problems:
            print(f"rater: {p}", file=sys.stderr)
        raise UsageError(f"{args.rates}: the rate tables do not load ({len(problems)} problem(s))")
    now = _now_arg(args.now)
    from rater.core.native_engine import EngineUnavailable, choose
    from rater.statefile import StateError

    try:
        engine = choose(args.engine)
    except EngineUnavailable as exc:
        raise UsageError(str(exc)) from None

    try:
        result = offline.run(
            args.inputs,
            tables,
            args.out,
            now,
            args.state,
            args.horizon_days * 86400 * SECOND,
            engine_name=engine,
        )
    except StateError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # a disk that fills up, a file removed under us
        raise UsageError(f"{exc.filename or args.out}: {exc.strerror or exc}") from None
    print(offline.summary(result), file=sys.stderr)
    return 0


def _check_out_dir(out: str) -> None:
    """Before anything is rated: OUTDIR is (or can be made) a writable directory."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out}: exists and is not a directory")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the directory ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: the directory is not writable")


def _check_state_path(state: str) -> None:
    """Before anything is rated: the state can be saved at the end (else the run's
    accounts would be lost after its outputs were written)."""
    if os.path.isdir(state):
        raise UsageError(f"--state {state}: is a directory, not a state file")
    directory = os.path.dirname(os.path.abspath(state))
    if not os.path.isdir(directory):
        raise UsageError(f"--state {state}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--state {state}: the directory {directory} is not writable")
    if os.path.exists(state) and not os.access(state, os.R_OK):
        raise UsageError(f"--state {state}: the file is not readable")


def cmd_rates_check(args: argparse.Namespace) -> int:
    from rater.core.rates import check_rate_tables

    tables, problems = check_rate_tables(args.dir)
    if tables is None:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return 1
    for plan in sorted(tables.plans.values(), key=lambda p: p.plan_id):
        types = ", ".join(f"{ct} {len(v)}" for ct, v in sorted(plan.index.items()))
        print(f"{plan.plan_id}: {plan.currency}, {plan.rows} rows ({types} prefixes)")
    print(f"ok: {len(tables.plans)} plan(s), version {tables.version}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rater")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rater", description="Kafka-native usage rater for telephony prepaid credit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("rate", help="rate JSON-lines files offline (SPEC 9)")
    p.add_argument("--rates", required=True, metavar="DIR", help="rate-table directory")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="output directory")
    p.add_argument("--state", metavar="FILE", help="read accounts from and save them to FILE")
    p.add_argument("--now", metavar="TIME", help="processing clock (RFC 3339); default: the wall clock")
    p.add_argument(
        "--horizon-days",
        type=int,
        default=DEFAULT_HORIZON // (86400 * SECOND),
        help="how long ids are remembered for duplicates (default 7)",
    )
    p.add_argument(
        "--engine",
        choices=("native", "python"),
        default=None,
        help="rating core: native (Rust, the default when built) or python; env RATER_ENGINE",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT.jsonl", help="JSON-lines files, applied in order; - is standard input")
    p.set_defaults(func=cmd_rate)

    p = sub.add_parser("rates", help="rate-table tools")
    rs = p.add_subparsers(dest="rates_command", required=True, metavar="SUBCOMMAND")
    c = rs.add_parser("check", help="validate a rate-table directory")
    c.add_argument("dir", metavar="DIR")
    c.set_defaults(func=cmd_rates_check)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub) -> None:
    """Commands of the Kafka side, registered by their own modules."""
    from rater.cli import kafka as cli_kafka

    cli_kafka.register(sub)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["dev-broker"]:
        # Its own parser, flags and all: argparse's REMAINDER does not take a leading
        # "--help" (it would be refused as an unknown argument of `rater`).
        try:
            from rater.dev import broker as devbroker
        except ImportError:  # the Docker image leaves rater/dev out
            print("rater: dev-broker is development tooling, not installed here (run it from a checkout)", file=sys.stderr)
            return 2
        return devbroker.cli(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"rater: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rater: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
