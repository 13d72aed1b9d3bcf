"""Worker settings: command-line flags over ``RATER_*`` environment variables over defaults."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from .batch import Topics


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"RATER_{name}", default)


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
    sweep_interval: float = 30.0
    reload_interval: float = 5.0
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
    engine: str | None = None  # "native" or "python"; None: python for the worker (rater/native_engine.py)


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    d = WorkerConfig()
    e = _env
    p.add_argument("--broker", default=e("BROKER", d.broker), help="bootstrap servers, host:port[,host:port] (RATER_BROKER)")
    p.add_argument("--app-id", default=e("APP_ID", d.app_id), help="consumer group and changelog prefix (RATER_APP_ID)")
    p.add_argument("--partitions", type=int, default=int(e("PARTITIONS", str(d.partitions))),
                   help="partitions of the input topics, created when missing (RATER_PARTITIONS)")
    p.add_argument("--replication", type=int, default=int(e("REPLICATION", str(d.replication))),
                   help="replication factor of created topics (RATER_REPLICATION)")
    p.add_argument("--rates", dest="rates_dir", default=e("RATES_DIR", d.rates_dir), help="rate-table directory (RATER_RATES_DIR)")
    p.add_argument("--state-dir", default=e("STATE_DIR", d.state_dir), help="local state (RocksDB) directory (RATER_STATE_DIR)")
    p.add_argument("--store", choices=("rocksdb", "memory"), default=e("STORE", d.store), help="table store (RATER_STORE)")
    p.add_argument("--web-host", default=e("WEB_HOST", d.web_host), help="address the HTTP server binds (RATER_WEB_HOST)")
    p.add_argument("--web-port", type=int, default=int(e("WEB_PORT", str(d.web_port))), help="HTTP port (RATER_WEB_PORT)")
    p.add_argument("--advertised-host", default=e("ADVERTISED_HOST"),
                   help="host other workers use to reach this one (RATER_ADVERTISED_HOST; default: the web host)")
    p.add_argument("--engine", choices=("native", "python"), default=e("ENGINE"),
                   help="rating core: python (the worker's default) or native (Rust, when built) (RATER_ENGINE)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=int(e("BATCH_SIZE", str(d.batch_size))), help="most records in one batch: one fetch of the inputs (RATER_BATCH_SIZE)")
    p.add_argument("--account-cache", type=int, default=int(e("ACCOUNT_CACHE", str(d.account_cache))),
                   help="decoded accounts kept in memory between batches; 0 reads every one from the store (RATER_ACCOUNT_CACHE)")
    p.add_argument("--sweep-interval", type=float, default=float(e("SWEEP_INTERVAL", str(d.sweep_interval))),
                   help="seconds between wall-clock expiry sweeps (RATER_SWEEP_INTERVAL)")
    p.add_argument("--log-format", choices=("text", "json"), default=e("LOG_FORMAT", d.log_format), help="(RATER_LOG_FORMAT)")
    p.add_argument("--log-level", default=e("LOG_LEVEL", d.log_level), help="(RATER_LOG_LEVEL)")
    p.add_argument("--security-protocol", default=e("SECURITY_PROTOCOL", d.security_protocol),
                   choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"), help="(RATER_SECURITY_PROTOCOL)")
    p.add_argument("--sasl-mechanism", default=e("SASL_MECHANISM", d.sasl_mechanism),
                   choices=("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"), help="(RATER_SASL_MECHANISM)")
    p.add_argument("--sasl-username", default=e("SASL_USERNAME"), help="(RATER_SASL_USERNAME)")
    p.add_argument("--sasl-password", default=e("SASL_PASSWORD"), help="(RATER_SASL_PASSWORD; prefer the variable to the flag)")
    p.add_argument("--ssl-cafile", default=e("SSL_CAFILE"), help="(RATER_SSL_CAFILE)")
    p.add_argument("--ssl-certfile", default=e("SSL_CERTFILE"), help="(RATER_SSL_CERTFILE)")
    p.add_argument("--ssl-keyfile", default=e("SSL_KEYFILE"), help="(RATER_SSL_KEYFILE)")
    p.add_argument("--standby-replicas", type=int, default=int(e("STANDBY_REPLICAS", str(d.standby_replicas))),
                   help="standby copies of each table partition on other workers (RATER_STANDBY_REPLICAS)")
    for name, attr in (("cdrs", "cdrs"), ("commands", "commands"), ("rated", "rated"), ("events", "events"),
                       ("requests", "requests"), ("rejects", "rejects")):  # fmt: skip
        p.add_argument(f"--topic-{name}", dest=f"topic_{attr}", default=e(f"TOPIC_{name.upper()}", getattr(d.topics, attr)),
                       help=f"(RATER_TOPIC_{name.upper()})")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    topics = Topics(
        cdrs=args.topic_cdrs, commands=args.topic_commands, rated=args.topic_rated,
        events=args.topic_events, requests=args.topic_requests, rejects=args.topic_rejects,
    )  # fmt: skip
    return WorkerConfig(
        broker=args.broker, app_id=args.app_id, partitions=args.partitions, replication=args.replication,
        rates_dir=args.rates_dir, state_dir=args.state_dir, store=args.store, web_host=args.web_host,
        web_port=args.web_port, advertised_host=args.advertised_host, topics=topics,
        batch_size=args.batch_size, account_cache=args.account_cache, sweep_interval=args.sweep_interval, log_format=args.log_format,
        log_level=args.log_level, security_protocol=args.security_protocol,
        sasl_mechanism=args.sasl_mechanism, sasl_username=args.sasl_username,
        sasl_password=args.sasl_password, ssl_cafile=args.ssl_cafile, ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile, standby_replicas=args.standby_replicas, engine=args.engine,
    )  # fmt: skip
