"""Which output stream each part of an outcome goes to: the one copy of that rule.

SPEC 6: a rated CDR to ``rated-cdrs``, balance events to ``balance-events``, recharge
requests to ``recharge-requests``, a reject to ``rater-rejects``; in that order. The worker
maps a kind to its topic (``Topics``: the field of the same name), ``rater rate`` to its
file, the sweep (events and requests only) to its topic.
"""

from __future__ import annotations

from typing import Any, NamedTuple

KINDS = ("rated", "events", "requests", "rejects")


class Encoded(NamedTuple):
    """An outcome whose outputs are already bytes (the native engine's), for ``outputs_of``."""

    rated: bytes | None
    events: list
    recharge_requests: list


def outputs_of(outcome: Any, reject: dict | None = None) -> list[tuple[str, dict]]:
    """(kind, body) of every output of ``outcome`` (a ledger ``Outcome`` or a sweep's
    result: ``rated`` if it has one, ``events``, ``recharge_requests``) and ``reject``."""
    out: list[tuple[str, dict]] = []
    rated = getattr(outcome, "rated", None)
    if rated is not None:
        out.append(("rated", rated))
    out.extend(("events", e) for e in outcome.events)
    out.extend(("requests", r) for r in outcome.recharge_requests)
    if reject is not None:
        out.append(("rejects", reject))
    return out
