"""Kafka connection settings (bootstrap servers, SASL, SSL) in one place.

Every Kafka client of the product is built from these: the worker's faust app
(``broker_credentials``), its producer and admin client, ``rater notify``'s clients,
``rater produce`` and ``rater simulate`` (``client_kwargs``).
The four commands take the same flags (``add_connection_arguments``: ``--broker``,
``--security-protocol``, ``--sasl-*``, ``--ssl-*``, each with its ``RATER_*`` variable,
checked like the flag) and read them back with ``settings_from_args``.
``settings`` is duck-typed: anything with ``broker``, ``security_protocol``,
``sasl_mechanism``, ``sasl_username``, ``sasl_password``, ``ssl_cafile``, ``ssl_certfile``
and ``ssl_keyfile`` (``WorkerConfig`` has them).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Connection settings for a client that has no flags of its own for them."""

    broker: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None


PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_BROKER = "127.0.0.1:9092"
DEFAULT_MECHANISM = "SCRAM-SHA-512"


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    """The Kafka connection flags of ``worker``, ``notify``, ``produce`` and ``simulate``, in a
    group of their own. Each defaults to its ``RATER_*`` variable; a bad protocol or mechanism
    from the environment is refused like the flag's (one line naming flag and variable). The
    password is never printed: ``--help`` (``DefaultsFormatter``) says only that it is set."""
    from rater.worker.config import one_of  # imports no faust (rater/worker/__init__.py)

    e = os.environ.get
    g = p.add_argument_group("Kafka connection")
    g.add_argument("--broker", default=e("RATER_BROKER", DEFAULT_BROKER), help="bootstrap servers, host:port[,host:port] (RATER_BROKER)")
    g.add_argument(
        "--security-protocol",
        default=e("RATER_SECURITY_PROTOCOL", "PLAINTEXT"),
        choices=PROTOCOLS,
        type=one_of("--security-protocol", "RATER_SECURITY_PROTOCOL", PROTOCOLS),
        help="(RATER_SECURITY_PROTOCOL)",
    )
    g.add_argument(
        "--sasl-mechanism",
        default=e("RATER_SASL_MECHANISM", DEFAULT_MECHANISM),
        choices=MECHANISMS,
        type=one_of("--sasl-mechanism", "RATER_SASL_MECHANISM", MECHANISMS),
        help="(RATER_SASL_MECHANISM)",
    )
    g.add_argument("--sasl-username", default=e("RATER_SASL_USERNAME"), help="(RATER_SASL_USERNAME)")
    g.add_argument("--sasl-password", default=e("RATER_SASL_PASSWORD"), help="(RATER_SASL_PASSWORD; prefer the variable to the flag)")
    g.add_argument("--ssl-cafile", default=e("RATER_SSL_CAFILE"), help="(RATER_SSL_CAFILE)")
    g.add_argument("--ssl-certfile", default=e("RATER_SSL_CERTFILE"), help="(RATER_SSL_CERTFILE)")
    g.add_argument("--ssl-keyfile", default=e("RATER_SSL_KEYFILE"), help="(RATER_SSL_KEYFILE)")


def settings_from_args(args: argparse.Namespace) -> KafkaSettings:
    """The settings of the flags ``add_connection_arguments`` added."""
    return KafkaSettings(
        broker=args.broker,
        security_protocol=args.security_protocol,
        sasl_mechanism=args.sasl_mechanism,
        sasl_username=args.sasl_username,
        sasl_password=args.sasl_password,
        ssl_cafile=args.ssl_cafile,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )


class LastKafkaError(logging.Handler):
    """Keeps the last error aiokafka logged (the reason of a failed connection, such as
    "SaslAuthenticationFailed", is only in its log) instead of printing it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.message = " ".join(record.getMessage().split())


@contextlib.contextmanager
def kafka_errors_kept() -> Iterator[LastKafkaError]:
    """For a command without logging of its own (``produce``, ``simulate``): aiokafka's
    warnings and errors are not printed as loose lines; the last error is kept for the
    command's one-line message."""
    logger = logging.getLogger("aiokafka")
    handler = LastKafkaError()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def ssl_context(settings: Any) -> ssl.SSLContext | None:
    """The TLS context of an SSL or SASL_SSL connection, else None."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(cafile=settings.ssl_cafile)
    if getattr(settings, "ssl_certfile", None):
        ctx.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    return ctx


def client_kwargs(settings: Any) -> dict[str, Any]:
    """Connection settings for aiokafka clients (producers, consumers, the admin)."""
    kwargs: dict[str, Any] = {"bootstrap_servers": settings.broker, "security_protocol": settings.security_protocol}
    ctx = ssl_context(settings)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    if settings.security_protocol.startswith("SASL"):
        kwargs.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    return kwargs


def broker_credentials(settings: Any) -> Any:
    """The same settings as faust wants them (``broker_credentials`` of ``faust.App``)."""
    import faust

    ctx = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism,
            ssl_context=ctx,
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None
