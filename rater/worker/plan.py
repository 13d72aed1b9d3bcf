"""Every write of steps 3 and 4 of one batch, worked out in memory: ``plan_writes``.

Pure: no I/O, no clock, no faust. The commit pipeline (``rater/worker/pipeline.py``)
carries a ``Writes`` out, in order: ``produce`` and ``outputs`` (step 3), ``segments`` (step 4A), then
``accounts`` (step 4B, with the applied marks of step 4C last in their partition).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from rater.core import applied
from rater.core.batch import BatchResult


@dataclass(slots=True, eq=False)
class Writes:
    """One batch's writes, as bytes; the commit pipeline carries them out."""

    produce: list = field(default_factory=list)  # step 3: the forwards (send_all records)
    # step 3: the outputs, (topic, key, value) each to its key's partition: the batch's
    # ``BatchResult.outputs`` as it is (the native step's stay native, ``rater_native.BatchOutputs``)
    outputs: Sequence = ()
    forwarded: list = field(default_factory=list)  # the input Message of each forward
    # the input Message of each output (``BatchResult.origins``; the sweep's outputs have none)
    origins: Sequence = ()
    segments: list = field(default_factory=list)  # step 4, phase A: id segments
    accounts: list = field(default_factory=list)  # step 4, phase B (and C): the changed accounts, the marks
    positions: dict = field(default_factory=dict)  # (topic, partition) -> last offset
    records: Counter = field(default_factory=Counter)
    messages: int = 0
    arrived: float = 0.0
    t0: float = 0.0
    t1: float = 0.0
    handed: float = 0.0
    ages: tuple = (0, 0)  # ms, the newest and the oldest record at the start (RATER_DEBUG_BATCHES)


def judged_by_partition(positions: dict[tuple[str, int], int] | None) -> dict[int, dict[str, int]]:
    """Per input partition, the batch's last offset of each topic there: what each account
    value of that partition says its batch judged (step 4B, ``rater/core/applied.py``)."""
    judged: dict[int, dict[str, int]] = {}
    for (topic, partition), offset in (positions or {}).items():
        judged.setdefault(partition, {})[topic] = offset
    return judged


def plan_writes(
    result: BatchResult,
    changelog: str,
    segments: list,
    accounts: list,
    positions: dict[tuple[str, int], int] | None = None,
) -> Writes:
    """Every write of steps 3 and 4 for ``result``, as bytes.

    ``segments`` and ``accounts``: the changelog records of the changed accounts, already
    encoded by the account store (``AccountStore.plan``: id segments for phase A, the
    accounts with how far their batch judged their partition for phase B);
    ``positions``: the batch's last offset of each input partition (none for the sweep),
    written as applied marks after the accounts (step 4, phase C)."""
    w = Writes()
    if positions:
        w.positions = positions
    w.records = result.records
    produce = w.produce
    for msg, partition, key in result.forwards:
        headers = [("rater-forwarded-from", f"{msg.topic}/{msg.partition}/{msg.offset}".encode())]
        produce.append((msg.topic, partition, key, msg.value, headers))
    w.outputs = result.outputs
    w.forwarded = [msg for msg, _p, _k in result.forwards]
    w.origins = result.origins
    w.segments = segments
    w.accounts = accounts
    # Phase C: how far each input partition is applied (``rater/core/applied.py``), in the
    # same changelog partition as the accounts and after them, so a mark that is
    # durable vouches for every account written before it. Sent with phase B.
    for (topic, partition), offset in w.positions.items():
        w.accounts.append((changelog, partition, applied.mark_key(topic, partition), applied.encode_mark(offset), None))
    return w
