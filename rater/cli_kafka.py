"""Kafka-side commands (worker, produce, simulate, dev-broker), registered into ``rater``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys


def register(sub) -> None:
    from .config import add_worker_arguments

    p = sub.add_parser("worker", help="run the Kafka worker (faust-streaming)")
    add_worker_arguments(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("produce", help="publish CDRs and commands from JSON-lines files to Kafka")
    p.add_argument("files", nargs="+", metavar="FILE.jsonl")
    p.add_argument("--broker", default=os.environ.get("RATER_BROKER", "127.0.0.1:9092"))
    p.add_argument("--topic", help="publish every line to this one topic, keeping their order")
    p.add_argument("--cdrs-topic", default=os.environ.get("RATER_TOPIC_CDRS", "cdrs"))
    p.add_argument("--commands-topic", default=os.environ.get("RATER_TOPIC_COMMANDS", "tenant-commands"))
    p.add_argument("--partitioner", choices=("murmur2", "random", "crc32"), default="murmur2",
                   help="how to pick partitions: murmur2 (the Java client's, SPEC 2), or a wrong one "
                        "to exercise the worker's re-routing")  # fmt: skip
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("simulate", help="generate telephony traffic and answer recharge requests")
    from .simulate import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("notify", help="email and webhook notifications from balance events (SPEC 11)")
    from .notify.config import add_notify_arguments

    add_notify_arguments(p)
    p.set_defaults(func=cmd_notify)

    p = sub.add_parser("dev-broker", help="run a local Apache Kafka broker from Maven Central jars",
                       add_help=False)  # fmt: skip
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_dev_broker)


def cmd_worker(args: argparse.Namespace) -> int:
    from .config import config_from_args
    from .worker import run

    return run(config_from_args(args))


def cmd_notify(args: argparse.Namespace) -> int:
    from .cli import UsageError
    from .notify.config import config_from_args
    from .notify.service import run

    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        raise UsageError(f"notify: {exc}") from None
    return run(cfg)


def cmd_dev_broker(args: argparse.Namespace) -> int:
    from . import devbroker

    return devbroker.cli(args.args)


def cmd_produce(args: argparse.Namespace) -> int:
    from .cli import UsageError
    from .producer import produce_files

    for path in args.files:
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such input file")
    counts = asyncio.run(produce_files(args.files, args.broker, args.topic, args.cdrs_topic,
                                       args.commands_topic, args.partitioner))  # fmt: skip
    print(", ".join(f"{n:,} to {topic}" for topic, n in sorted(counts.items())) or "nothing to publish",
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import run

    return run(args)
