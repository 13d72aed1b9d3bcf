"""Kafka connection settings (bootstrap servers, SASL, SSL) in one place.

Every Kafka client of the product is built from these: the worker's faust app
(``broker_credentials``), its producer and admin client, ``rater notify``'s clients,
``rater produce`` and ``rater simulate`` (``client_kwargs``; the last two connect in
plain text for now: ``KafkaSettings(broker)``).
``settings`` is duck-typed: anything with ``broker``, ``security_protocol``,
``sasl_mechanism``, ``sasl_username``, ``sasl_password``, ``ssl_cafile``, ``ssl_certfile``
and ``ssl_keyfile`` (``WorkerConfig`` has them).
"""

from __future__ import annotations

import ssl
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
