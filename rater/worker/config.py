"""Worker settings: command-line flags over ``RATER_*`` environment variables over defaults."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field

from rater.connection import add_connection_arguments, settings_from_args
from rater.core.batch import Topics
from rater.core.bounds import DEFAULT_MAX_RECORD_BYTES
from rater.worker.catchup import LEAST as BULK_RECOVERY_LEAST
from rater.worker.watchdog import DEFAULT_LIMIT as DEFAULT_STALL_LIMIT


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"RATER_{name}", default)


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each flag's default (taken from the environment when set there),
    except for flags without one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text or not action.option_strings:
            return text
        if "password" in action.dest:  # from the environment: never printed
            return f"{text} (default: set)"
        return f"{text} (default: %(default)s)"


def positive_int(flag: str, variable: str, minimum: int = 1):
    """An argparse ``type`` for a whole number >= ``minimum``. argparse also applies it to
    a string default, so a value from the environment is checked like the flag's."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ({flag} or {variable})") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum} ({flag} or {variable})")
        return value

    convert.__name__ = "whole number"
    return convert


def add_topic_creation_arguments(p: argparse.ArgumentParser) -> None:
    """``--partitions`` and ``--replication`` of the topics a command creates because they
    are missing (``rater produce``, ``rater simulate``; ``rater/worker/topics.py``)."""
    e = os.environ.get
    p.add_argument(
        "--partitions",
        type=positive_int("--partitions", "RATER_PARTITIONS"),
        default=e("RATER_PARTITIONS", "8"),
        help="partitions of a topic created because it is missing; the worker's --partitions (RATER_PARTITIONS, default %(default)s)",
    )
    p.add_argument(
        "--replication",
        type=positive_int("--replication", "RATER_REPLICATION"),
        default=e("RATER_REPLICATION", "1"),
        help="replication factor of created topics (RATER_REPLICATION, default %(default)s)",
    )


def _finite_float(flag: str, variable: str, zero_ok: bool):
    bound = ">= 0" if zero_ok else "> 0"

    def convert(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number ({flag} or {variable})") from None
        if not (value >= 0 if zero_ok else value > 0) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be a number {bound} ({flag} or {variable})")
        return value

    convert.__name__ = "number"
    return convert


def positive_float(flag: str, variable: str):
    return _finite_float(flag, variable, zero_ok=False)


def non_negative_float(flag: str, variable: str):
    return _finite_float(flag, variable, zero_ok=True)


def one_of(flag: str, variable: str, options: tuple[str, ...], fold=None):
    """An argparse ``type`` for one of ``options``. argparse checks ``choices`` only on the
    command line, never on a default, so a value from the environment is checked here."""

    def convert(text: str) -> str:
        value = fold(text) if fold else text
        if value not in options:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(options)} ({flag} or {variable})")
        return value

    convert.__name__ = "choice"
    return convert


@dataclass
class WorkerConfig:
    broker: str = "127.0.0.1:9092"
    app_id: str = "rater"
    partitions: int = 8
    replication: int = 1
    rates_dir: str = "rate_tables"
    state_dir: str = ".rater-state"
    store: str = "rocksdb"  # or "memory"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    advertised_host: str | None = None
    topics: Topics = field(default_factory=Topics)
    batch_size: int = 5000
    account_cache: int = 50_000
    account_format: int = 2  # the stored format of account values (rater/core/codec.py); 1 for a rolling upgrade
    sweep_interval: float = 30.0
    reload_interval: float = 5.0
    recovery_stall_timeout: float = DEFAULT_STALL_LIMIT  # rater/worker/watchdog.py; 0: never
    bulk_recovery_least: int = BULK_RECOVERY_LEAST  # rater/worker/catchup.py; 0: never
    log_format: str = "text"
    log_level: str = "info"
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    standby_replicas: int = 1
    engine: str | None = None  # "native" or "python"; None: native when built (rater/core/native_engine.py)
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    # RocksDB memory per table partition (rater/worker/app.py rocksdb_options): two write
    # buffers of this size, and a block cache.
    rocksdb_write_buffer_mib: int = 8
    rocksdb_block_cache_mib: int = 16


def port(flag: str, variable: str, minimum: int = 0):
    """An argparse ``type`` for a TCP port number, checked like ``positive_int``."""

    def convert(text: str) -> int:
        value = positive_int(flag, variable, minimum)(text)
        if value > 65535:
            raise argparse.ArgumentTypeError(f"{text!r} is not a port number, {minimum} to 65535 ({flag} or {variable})")
        return value

    convert.__name__ = "port"
    return convert


port_number = port("--web-port", "RATER_WEB_PORT")


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    d = WorkerConfig()
    e = _env
    add_connection_arguments(p)  # --broker, --security-protocol, --sasl-*, --ssl-* (rater/connection.py)
    p.add_argument("--app-id", default=e("APP_ID", d.app_id), help="consumer group and changelog prefix (RATER_APP_ID)")
    p.add_argument(
        "--partitions",
        type=positive_int("--partitions", "RATER_PARTITIONS"),
        default=e("PARTITIONS", str(d.partitions)),
        help="partitions of the input topics, created when missing (RATER_PARTITIONS)",
    )
    p.add_argument(
        "--replication",
        type=positive_int("--replication", "RATER_REPLICATION"),
        default=e("REPLICATION", str(d.replication)),
        help="replication factor of created topics (RATER_REPLICATION)",
    )
    p.add_argument("--rates", dest="rates_dir", default=e("RATES_DIR", d.rates_dir), help="rate-table directory (RATER_RATES_DIR)")
    p.add_argument("--state-dir", default=e("STATE_DIR", d.state_dir), help="local state (RocksDB) directory (RATER_STATE_DIR)")
    p.add_argument(
        "--store",
        type=one_of("--store", "RATER_STORE", ("rocksdb", "memory")),
        choices=("rocksdb", "memory"),
        default=e("STORE", d.store),
        help="table store: memory replays the changelog at start (RATER_STORE)",
    )
    p.add_argument("--web-host", default=e("WEB_HOST", d.web_host), help="address the HTTP server binds (RATER_WEB_HOST)")
    p.add_argument("--web-port", type=port_number, default=e("WEB_PORT", str(d.web_port)), help="HTTP port (RATER_WEB_PORT)")
    p.add_argument(
        "--advertised-host",
        default=e("ADVERTISED_HOST"),
        help="host other workers use to reach this one (RATER_ADVERTISED_HOST; default: the web host)",
    )
    p.add_argument(
        "--engine",
        choices=("native", "python"),
        default=e("ENGINE"),
        help="rating core: native (Rust; the default when built) or python (the reference) (RATER_ENGINE)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int("--batch-size", "RATER_BATCH_SIZE"),
        default=e("BATCH_SIZE", str(d.batch_size)),
        help="most records in one batch: one fetch of the inputs (RATER_BATCH_SIZE)",
    )  # noqa: E501
    p.add_argument(
        "--account-cache",
        type=positive_int("--account-cache", "RATER_ACCOUNT_CACHE", 0),
        default=e("ACCOUNT_CACHE", str(d.account_cache)),  # noqa: E501
        help="decoded accounts kept in memory between batches; 0 reads every one from the store (RATER_ACCOUNT_CACHE)",
    )
    p.add_argument(
        "--account-format",
        type=one_of("--account-format", "RATER_ACCOUNT_FORMAT", ("1", "2")),
        choices=("1", "2"),
        default=e("ACCOUNT_FORMAT", str(d.account_format)),
        help="stored format of the account values this worker writes: 2 (binary, the default) or 1 (JSON, "
        "read by every release) while workers of a release before format 2 still run (RATER_ACCOUNT_FORMAT)",
    )
    p.add_argument(
        "--sweep-interval",
        type=positive_float("--sweep-interval", "RATER_SWEEP_INTERVAL"),
        default=e("SWEEP_INTERVAL", str(d.sweep_interval)),  # noqa: E501
        help="seconds between wall-clock expiry sweeps (RATER_SWEEP_INTERVAL)",
    )
    p.add_argument(
        "--recovery-stall-timeout",
        type=non_negative_float("--recovery-stall-timeout", "RATER_RECOVERY_STALL_TIMEOUT"),
        default=e("RECOVERY_STALL_TIMEOUT", str(d.recovery_stall_timeout)),  # noqa: E501
        help="seconds a rebalance or table recovery may go without progress before the worker exits "
        "(code 75) for its supervisor to restart it; 0 never (RATER_RECOVERY_STALL_TIMEOUT)",
    )
    p.add_argument(
        "--bulk-recovery-least",
        type=positive_int("--bulk-recovery-least", "RATER_BULK_RECOVERY_LEAST", 0),
        default=e("BULK_RECOVERY_LEAST", str(d.bulk_recovery_least)),
        help="changelog records behind the local store (all newly assigned partitions together) from which "
        "they are read in bulk before table recovery; 0 never (RATER_BULK_RECOVERY_LEAST)",
    )
    p.add_argument(
        "--log-format",
        type=one_of("--log-format", "RATER_LOG_FORMAT", ("text", "json")),
        choices=("text", "json"),
        default=e("LOG_FORMAT", d.log_format),
        help="json: one JSON object per line (RATER_LOG_FORMAT)",
    )
    levels = ("debug", "info", "warning", "error", "critical")
    p.add_argument(
        "--log-level",
        type=one_of("--log-level", "RATER_LOG_LEVEL", levels, str.lower),
        choices=levels,
        default=e("LOG_LEVEL", d.log_level),
        help="(RATER_LOG_LEVEL)",
    )
    p.add_argument(
        "--standby-replicas",
        type=positive_int("--standby-replicas", "RATER_STANDBY_REPLICAS", 0),
        default=e("STANDBY_REPLICAS", str(d.standby_replicas)),
        help="standby copies of each table partition on other workers (RATER_STANDBY_REPLICAS)",
    )
    p.add_argument(
        "--max-record-bytes",
        type=positive_int("--max-record-bytes", "RATER_MAX_RECORD_BYTES", 1024),
        default=e("MAX_RECORD_BYTES", str(d.max_record_bytes)),
        help="larger input records are rejected (invalid_record, record too large) before they are "
        "decoded; keep it well under the broker's message.max.bytes (RATER_MAX_RECORD_BYTES)",
    )
    p.add_argument(
        "--rocksdb-write-buffer",
        dest="rocksdb_write_buffer_mib",
        metavar="MIB",
        type=positive_int("--rocksdb-write-buffer", "RATER_ROCKSDB_WRITE_BUFFER"),
        default=e("ROCKSDB_WRITE_BUFFER", str(d.rocksdb_write_buffer_mib)),
        help="MiB of each of the two RocksDB write buffers of a table partition (RATER_ROCKSDB_WRITE_BUFFER)",
    )
    p.add_argument(
        "--rocksdb-block-cache",
        dest="rocksdb_block_cache_mib",
        metavar="MIB",
        type=positive_int("--rocksdb-block-cache", "RATER_ROCKSDB_BLOCK_CACHE"),
        default=e("ROCKSDB_BLOCK_CACHE", str(d.rocksdb_block_cache_mib)),
        help="MiB of RocksDB block cache of a table partition: serves the accounts the account cache "
        "does not hold (RATER_ROCKSDB_BLOCK_CACHE)",
    )
    for name, attr in (
        ("cdrs", "cdrs"),
        ("commands", "commands"),
        ("rated", "rated"),
        ("events", "events"),
        ("requests", "requests"),
        ("rejects", "rejects"),
    ):
        p.add_argument(
            f"--topic-{name}",
            dest=f"topic_{attr}",
            default=e(f"TOPIC_{name.upper()}", getattr(d.topics, attr)),
            help=f"(RATER_TOPIC_{name.upper()})",
        )


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    topics = Topics(
        cdrs=args.topic_cdrs,
        commands=args.topic_commands,
        rated=args.topic_rated,
        events=args.topic_events,
        requests=args.topic_requests,
        rejects=args.topic_rejects,
    )
    return WorkerConfig(
        **dataclasses.asdict(settings_from_args(args)),
        app_id=args.app_id,
        partitions=args.partitions,
        replication=args.replication,
        rates_dir=args.rates_dir,
        state_dir=args.state_dir,
        store=args.store,
        web_host=args.web_host,
        web_port=args.web_port,
        advertised_host=args.advertised_host,
        topics=topics,
        batch_size=args.batch_size,
        account_cache=args.account_cache,
        account_format=int(args.account_format),
        sweep_interval=args.sweep_interval,
        recovery_stall_timeout=args.recovery_stall_timeout,
        bulk_recovery_least=args.bulk_recovery_least,
        log_format=args.log_format,
        log_level=args.log_level,
        standby_replicas=args.standby_replicas,
        max_record_bytes=args.max_record_bytes,
        engine=args.engine,
        rocksdb_write_buffer_mib=args.rocksdb_write_buffer_mib,
        rocksdb_block_cache_mib=args.rocksdb_block_cache_mib,
    )
