"""Development tooling, left out of the Docker image: the local Kafka broker
(``broker``, ``rater dev-broker``), ``make demo`` (``demo``) and the JSON Schemas loader
of the wire contract for tests (``schemas``).

May import: any ``rater`` package. Nothing in ``rater.core``, ``rater.worker``,
``rater.sim`` or ``rater.notify`` imports it (``rater dev-broker`` imports it lazily).
"""
