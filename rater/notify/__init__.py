"""`rater notify`: email and webhook notifications from balance events (SPEC 11).

Modules: ``messages`` (pure: event -> email text), ``progress`` (pure: committable
offsets), ``contacts`` (the tenant_id,email CSV), ``channels`` (SMTP, webhook), ``dedup``
(handled ids on disk), ``metrics``, ``config`` and ``service`` (the consumer, its delivery
protocol, ``Notifier``). Nothing is imported here, so the pure modules load without
aiokafka or aiohttp.
"""
