"""The ``rater`` command line. Errors are one line naming the file or value, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .ledger import DEFAULT_HORIZON
from .timeutil import SECOND, TimeError, parse_time


class UsageError(Exception):
    """A problem with what the user asked for, printed as ``rater: <message>``."""


def _now_arg(value: str | None) -> int:
    if value is None:
        return time.time_ns() // 1000
    try:
        return parse_time(value)
    except TimeError as exc:
        raise UsageError(f"--now {exc}") from None


def cmd_rate(args: argparse.Namespace) -> int:
    from . import offline
    from .rates import check_rate_tables

    for path in args.inputs:
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such input file")
    tables, problems = check_rate_tables(args.rates)
    if tables is None:
        for p in problems:
            print(f"rater: {p}", file=sys.stderr)
        raise UsageError(f"{args.rates}: the rate tables do not load ({len(problems)} problem(s))")
    now = _now_arg(args.now)
    from .native_engine import EngineUnavailable, choose
    from .state import StateError

    try:
        engine = choose(args.engine)
    except EngineUnavailable as exc:
        raise UsageError(str(exc)) from None

    try:
        result = offline.run(
            args.inputs, tables, args.out, now, args.state, args.horizon_days * 86400 * SECOND,
            engine_name=engine,
        )
    except StateError as exc:
        raise UsageError(str(exc)) from None
    print(offline.summary(result), file=sys.stderr)
    return 0


def cmd_rates_check(args: argparse.Namespace) -> int:
    from .rates import check_rate_tables

    tables, problems = check_rate_tables(args.dir)
    if tables is None:
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return 1
    for plan in sorted(tables.plans.values(), key=lambda p: p.plan_id):
        types = ", ".join(f"{ct} {len(v)}" for ct, v in sorted(plan.index.items()))
        print(f"{plan.plan_id}: {plan.currency}, {plan.rows} rows ({types} prefixes)")
    print(f"ok: {len(tables.plans)} plan(s), version {tables.version}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rater", description="Kafka-native usage rater for telephony prepaid credit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("rate", help="rate JSON-lines files offline (SPEC 9)")
    p.add_argument("--rates", required=True, metavar="DIR", help="rate-table directory")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="output directory")
    p.add_argument("--state", metavar="FILE", help="read accounts from and save them to FILE")
    p.add_argument("--now", metavar="TIME", help="processing clock (RFC 3339); default: the wall clock")
    p.add_argument("--horizon-days", type=int, default=DEFAULT_HORIZON // (86400 * SECOND),
                   help="how long ids are remembered for duplicates (default 7)")  # fmt: skip
    p.add_argument("--engine", choices=("native", "python"), default=None,
                   help="rating core: native (Rust, the default when built) or python; env RATER_ENGINE")  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="INPUT.jsonl")
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
    from . import cli_kafka

    cli_kafka.register(sub)


def main(argv: list[str] | None = None) -> int:
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
