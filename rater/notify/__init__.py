"""`rater notify`: email and webhook notifications from balance events (SPEC 11).

Modules: ``messages`` (pure: event -> email text), ``contacts`` (the tenant_id,email CSV),
``channels`` (SMTP, webhook), ``dedup`` (handled ids on disk), ``progress`` (committable
offsets), ``metrics``, ``config`` and ``service`` (the consumer and its protocol).
"""

from .service import Notifier

__all__ = ["Notifier"]
