"""`rater notify` settings: flags over ``RATER_NOTIFY_*`` (and the shared ``RATER_*`` Kafka
connection variables) over defaults."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

from rater.connection import add_connection_arguments, client_kwargs, settings_from_args

from .channels import SmtpSettings
from .messages import ALL_TYPES, DEFAULT_TYPES


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


@dataclass
class NotifyConfig:
    broker: str = "127.0.0.1:9092"
    group_id: str = "rater-notify"
    topic_events: str = "balance-events"
    topic_dead_letter: str = "notify-dead-letter"
    replication: int = 1
    types: frozenset[str] = frozenset(DEFAULT_TYPES)
    contacts: str | None = None
    smtp: SmtpSettings | None = None
    webhook_url: str | None = None
    webhook_timeout: float = 10.0
    state_dir: str = ".rater-notify"
    horizon_days: float = 7.0
    attempts: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0
    max_in_flight: int = 10_000
    commit_interval: float = 1.0
    web_host: str = "127.0.0.1"
    web_port: int = 6068
    log_format: str = "text"
    log_level: str = "info"
    kafka: dict[str, Any] = field(default_factory=dict)  # security settings for aiokafka


def parse_types(text: str) -> frozenset[str]:
    types = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(types - set(ALL_TYPES))
    if unknown:
        raise ValueError(f"--types: {', '.join(unknown)} not a balance event type (one of {', '.join(ALL_TYPES)})")
    if not types:
        raise ValueError("--types: name at least one event type")
    return frozenset(types)


def add_notify_arguments(p: argparse.ArgumentParser) -> None:
    # Types that check a value from the environment as the flag's (rater/worker/config.py):
    # a bad variable is one line from `rater notify`, and no other command sees it.
    from rater.worker.config import non_negative_float, one_of, port, positive_float, positive_int

    d = NotifyConfig()
    e = _env
    p.add_argument("--group-id", default=e("RATER_NOTIFY_GROUP_ID", d.group_id), help="consumer group (RATER_NOTIFY_GROUP_ID)")
    p.add_argument("--topic-events", default=e("RATER_TOPIC_EVENTS", d.topic_events), help="(RATER_TOPIC_EVENTS)")
    p.add_argument(
        "--topic-dead-letter",
        default=e("RATER_NOTIFY_DEAD_LETTER_TOPIC", d.topic_dead_letter),
        help="where events go after the last try (RATER_NOTIFY_DEAD_LETTER_TOPIC)",
    )
    p.add_argument(
        "--replication",
        type=positive_int("--replication", "RATER_REPLICATION"),
        default=e("RATER_REPLICATION") or "1",
        help="replication factor of the dead-letter topic when it is created (RATER_REPLICATION)",
    )
    p.add_argument(
        "--types",
        default=e("RATER_NOTIFY_TYPES", ",".join(DEFAULT_TYPES)),
        help="comma-separated balance event types to notify about (RATER_NOTIFY_TYPES; default: " + ",".join(DEFAULT_TYPES) + ")",
    )
    p.add_argument(
        "--contacts", default=e("RATER_NOTIFY_CONTACTS"), help="tenant_id,email CSV; reloaded when it changes (RATER_NOTIFY_CONTACTS)"
    )
    p.add_argument("--smtp-host", default=e("RATER_NOTIFY_SMTP_HOST"), help="SMTP server; email is off without it (RATER_NOTIFY_SMTP_HOST)")
    p.add_argument(
        "--smtp-port",
        type=port("--smtp-port", "RATER_NOTIFY_SMTP_PORT", 1),
        default=e("RATER_NOTIFY_SMTP_PORT") or "25",
        help="(RATER_NOTIFY_SMTP_PORT)",
    )
    p.add_argument("--smtp-from", default=e("RATER_NOTIFY_SMTP_FROM", "rater@localhost"), help="sender address (RATER_NOTIFY_SMTP_FROM)")
    p.add_argument(
        "--smtp-security",
        choices=("none", "starttls", "ssl"),
        default=e("RATER_NOTIFY_SMTP_SECURITY", "none"),
        type=one_of("--smtp-security", "RATER_NOTIFY_SMTP_SECURITY", ("none", "starttls", "ssl")),
        help="(RATER_NOTIFY_SMTP_SECURITY)",
    )
    p.add_argument("--smtp-username", default=e("RATER_NOTIFY_SMTP_USERNAME"), help="(RATER_NOTIFY_SMTP_USERNAME)")
    p.add_argument("--smtp-password", default=e("RATER_NOTIFY_SMTP_PASSWORD"), help="(RATER_NOTIFY_SMTP_PASSWORD; prefer the variable)")
    p.add_argument(
        "--webhook-url", default=e("RATER_NOTIFY_WEBHOOK_URL"), help="POST every event here; off without it (RATER_NOTIFY_WEBHOOK_URL)"
    )  # noqa: E501
    p.add_argument(
        "--webhook-timeout",
        type=positive_float("--webhook-timeout", "RATER_NOTIFY_WEBHOOK_TIMEOUT"),
        default=e("RATER_NOTIFY_WEBHOOK_TIMEOUT") or "10",
        help="seconds (RATER_NOTIFY_WEBHOOK_TIMEOUT)",
    )
    p.add_argument(
        "--state-dir",
        default=e("RATER_NOTIFY_STATE_DIR", d.state_dir),
        help="where the ids of handled events are kept (RATER_NOTIFY_STATE_DIR)",
    )
    p.add_argument(
        "--horizon-days",
        type=positive_float("--horizon-days", "RATER_NOTIFY_HORIZON_DAYS"),
        default=e("RATER_NOTIFY_HORIZON_DAYS") or "7",
        help="how long handled ids are kept (RATER_NOTIFY_HORIZON_DAYS)",
    )
    p.add_argument(
        "--attempts",
        type=positive_int("--attempts", "RATER_NOTIFY_ATTEMPTS"),
        default=e("RATER_NOTIFY_ATTEMPTS") or "5",
        help="tries of one delivery before the dead letter (RATER_NOTIFY_ATTEMPTS)",
    )
    p.add_argument(
        "--backoff",
        type=non_negative_float("--backoff", "RATER_NOTIFY_BACKOFF"),
        default=e("RATER_NOTIFY_BACKOFF") or "1",
        help="seconds before the 2nd try, doubled for each next one (RATER_NOTIFY_BACKOFF)",
    )
    p.add_argument(
        "--backoff-max",
        type=non_negative_float("--backoff-max", "RATER_NOTIFY_BACKOFF_MAX"),
        default=e("RATER_NOTIFY_BACKOFF_MAX") or "60",
        help="longest wait between tries (RATER_NOTIFY_BACKOFF_MAX)",
    )
    p.add_argument(
        "--max-in-flight",
        type=positive_int("--max-in-flight", "RATER_NOTIFY_MAX_IN_FLIGHT"),
        default=e("RATER_NOTIFY_MAX_IN_FLIGHT") or "10000",
        help="events read but not yet handled before reading pauses (RATER_NOTIFY_MAX_IN_FLIGHT)",
    )
    p.add_argument("--web-host", default=e("RATER_NOTIFY_WEB_HOST", d.web_host), help="(RATER_NOTIFY_WEB_HOST)")
    p.add_argument(
        "--web-port",
        type=port("--web-port", "RATER_NOTIFY_WEB_PORT"),
        default=e("RATER_NOTIFY_WEB_PORT") or str(d.web_port),
        help="/healthz and /metrics (RATER_NOTIFY_WEB_PORT)",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=e("RATER_LOG_FORMAT", "text"),
        help="(RATER_LOG_FORMAT)",
        type=one_of("--log-format", "RATER_LOG_FORMAT", ("text", "json")),
    )
    p.add_argument("--log-level", default=e("RATER_LOG_LEVEL", "info"), help="(RATER_LOG_LEVEL)")
    add_connection_arguments(p)  # --broker, --security-protocol, --sasl-*, --ssl-*: as the worker (rater/connection.py)


def config_from_args(args: argparse.Namespace) -> NotifyConfig:
    """Raises ValueError with a one-line message for a setting that cannot work."""
    types = parse_types(args.types)
    smtp = None
    if args.smtp_host:
        smtp = SmtpSettings(
            host=args.smtp_host,
            port=args.smtp_port,
            sender=args.smtp_from,
            security=args.smtp_security,
            username=args.smtp_username,
            password=args.smtp_password,
        )
        if not args.contacts:
            raise ValueError("--smtp-host needs --contacts (who receives the email of which tenant)")
    if not smtp and not args.webhook_url:
        raise ValueError("no channel: give --smtp-host with --contacts, or --webhook-url, or both")
    if args.webhook_url and not args.webhook_url.startswith(("http://", "https://")):
        raise ValueError(f"--webhook-url {args.webhook_url!r} must start with http:// or https://")
    if args.attempts < 1:
        raise ValueError("--attempts must be at least 1")
    kafka = client_kwargs(settings_from_args(args))  # rater/connection.py, as the worker's clients
    del kafka["bootstrap_servers"]  # given as cfg.broker
    return NotifyConfig(
        broker=args.broker,
        group_id=args.group_id,
        topic_events=args.topic_events,
        topic_dead_letter=args.topic_dead_letter,
        replication=args.replication,
        types=types,
        contacts=args.contacts if smtp else None,
        smtp=smtp,
        webhook_url=args.webhook_url,
        webhook_timeout=args.webhook_timeout,
        state_dir=args.state_dir,
        horizon_days=args.horizon_days,
        attempts=args.attempts,
        backoff=args.backoff,
        backoff_max=args.backoff_max,
        max_in_flight=args.max_in_flight,
        web_host=args.web_host,
        web_port=args.web_port,
        log_format=args.log_format,
        log_level=args.log_level,
        kafka=kafka,
    )
