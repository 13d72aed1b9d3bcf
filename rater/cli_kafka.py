"""Kafka-side commands (worker, produce, simulate, dev-broker), registered into ``rater``."""

from __future__ import annotations


def register(sub) -> None:
    return None
