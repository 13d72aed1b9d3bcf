"""Kafka-side commands (worker, produce, simulate, dev-broker), registered into ``rater``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from rater.cli.errors import UsageError


def register(sub) -> None:
    from rater.connection import add_connection_arguments
    from rater.worker.config import DefaultsFormatter, add_topic_creation_arguments, add_worker_arguments

    p = sub.add_parser(
        "worker",
        help="run the Kafka worker (faust-streaming)",
        formatter_class=DefaultsFormatter,
        description="Rate the input topics on Kafka. Every flag has a RATER_* variable; a "
        "default shown below comes from that variable when it is set.",
    )
    add_worker_arguments(p)
    p.set_defaults(func=cmd_worker)

    e = os.environ.get
    p = sub.add_parser(
        "produce",
        help="publish CDRs and commands from JSON-lines files to Kafka",
        description="Publish the lines of JSON-lines files to Kafka, keyed by tenant. By default "
        "every line goes to the CDR topic, in file order: SPEC 2 lets either input "
        "topic carry either kind, and one topic keeps a tenant's commands and CDRs "
        "in order. Missing topics are created with --partitions.",
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE.jsonl", help="JSON-lines files, published in order")
    add_connection_arguments(p)  # --broker, --security-protocol, --sasl-*, --ssl-*: as the worker (rater/connection.py)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--topic", help="publish every line to this topic (default: --cdrs-topic)")
    where.add_argument(
        "--split",
        action="store_true",
        help="publish commands to --commands-topic and CDRs to --cdrs-topic; the worker then applies them in arrival order, not file order",
    )
    p.add_argument("--cdrs-topic", default=e("RATER_TOPIC_CDRS", "cdrs"), help="the CDR topic (RATER_TOPIC_CDRS)")
    p.add_argument(
        "--commands-topic",
        default=e("RATER_TOPIC_COMMANDS", "tenant-commands"),
        help="the command topic, used with --split (RATER_TOPIC_COMMANDS)",
    )
    add_topic_creation_arguments(p)
    p.add_argument(
        "--partitioner",
        choices=("murmur2", "random", "crc32"),
        default="murmur2",
        help="how to pick partitions: murmur2 (the Java client's, SPEC 2), or a wrong one to exercise the worker's re-routing",
    )
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("simulate", help="generate telephony traffic and answer recharge requests")
    from rater.sim.simulate import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("notify", help="email and webhook notifications from balance events (SPEC 11)")
    from rater.notify.config import add_notify_arguments

    add_notify_arguments(p)
    p.set_defaults(func=cmd_notify)

    p = sub.add_parser("dev-broker", help="run a local Apache Kafka broker from Maven Central jars", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_dev_broker)


def cmd_worker(args: argparse.Namespace) -> int:
    from rater.worker.config import config_from_args

    cfg = config_from_args(args)
    problem = _cannot_listen(cfg.web_host, cfg.web_port)
    if problem:  # faust would find out after joining the group, with a traceback
        raise UsageError(f"cannot listen on {cfg.web_host}:{cfg.web_port} (--web-host, --web-port): {problem}")
    from rater.worker import weblog
    from rater.worker.app import run

    weblog.install()
    return run(cfg)


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the HTTP server could not bind ``host:port``, or None when it can."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"unknown host ({exc.strerror})"
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            s.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def cmd_notify(args: argparse.Namespace) -> int:
    from rater.notify.config import config_from_args
    from rater.notify.service import run

    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        raise UsageError(f"notify: {exc}") from None
    return run(cfg)


def cmd_dev_broker(args: argparse.Namespace) -> int:
    from rater.dev import broker as devbroker

    return devbroker.cli(args.args)


def cmd_produce(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from rater.connection import kafka_errors_kept, settings_from_args
    from rater.sim.produce import produce_files

    for path in args.files:
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such input file")
    topic = None if args.split else (args.topic or args.cdrs_topic)
    with kafka_errors_kept() as last:
        try:
            counts = asyncio.run(
                produce_files(
                    args.files,
                    settings_from_args(args),
                    topic,
                    args.cdrs_topic,
                    args.commands_topic,
                    args.partitioner,
                    args.partitions,
                    args.replication,
                )
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            # aiokafka's own reason (a refused SASL login, say) is in its log, not in the exception.
            why = last.message or " ".join(str(exc).split())
            raise UsageError(f"cannot publish to Kafka at {args.broker}: {type(exc).__name__}: {why}"[:400]) from None
    print(", ".join(f"{n:,} to {topic}" for topic, n in sorted(counts.items())) or "nothing to publish", file=sys.stderr)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from rater.sim.simulate import run

    return run(args)
