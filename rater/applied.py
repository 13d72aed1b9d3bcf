"""How far each input partition has been applied: a mark in the accounts table.

Why: the committed offset of an input partition trails the accounts. A batch's accounts
are written (commit protocol step 4) before its offsets are committed (step 5), so after
a crash between the two the input is consumed again from the older committed offset. An
*applied* record of that range is found among its account's ids and changes nothing; a
*rejected* one is not remembered anywhere, and judged again against the newer state it
may come out otherwise: a CDR for a tenant whose account a later record of the batch
created gets charged, a ``payment_result`` that came before its request is applied, a
record that was too far in the future is no longer, and a reject's ``detail`` changes.

So the worker remembers, per input topic-partition, the offset of the last record it has
judged, in the state it writes anyway: with step 4 of every batch, after the batch's
accounts in the same changelog partition (the input partition: the table is
co-partitioned with the inputs), one record keyed ``\\x00applied\\x00<topic>\\x00<partition>``
whose value is that offset in decimal. Kafka keeps a partition's records in order (the producer is
idempotent), and the local store takes a partition's writes in one atomic batch, so
wherever the mark is, the accounts written before it are too. A worker that starts on a
partition (a restart, a rebalance, a new machine rebuilding the table from the
changelog, ``--store memory``) resumes after the mark when the mark is past the committed
offset (``resume_offset``): those records' outputs were acknowledged in step 3 and their
accounts are durable, so the replay has nothing to do for them and must not judge them.

A crash *inside* step 4 can leave some of a batch's accounts on the changelog and no mark
(a partition's accounts of one batch can take more than one producer batch). For that,
every account value also carries the batch's last offsets of its partition (``"in"``,
``rater/state.py``), and the worker skips a record of the replayed range whose tenant's
stored account was judged at or past it (``RaterWorker._judged_before``).

No I/O here: the worker reads and writes the records.
"""

from __future__ import annotations

PREFIX = b"\x00applied\x00"


def mark_key(topic: str, partition: int) -> bytes:
    """The mark's key; the record lives in the changelog partition of the input partition
    (the partition is in the key too: the memory store keeps every partition in one dict)."""
    return PREFIX + topic.encode() + b"\x00" + str(partition).encode()


def is_mark_key(key: bytes) -> bool:
    return key.startswith(PREFIX)


def encode_mark(offset: int) -> bytes:
    return str(offset).encode()


def decode_mark(value: bytes | None) -> int | None:
    """The last applied offset, or None: no mark (never written, or not readable)."""
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def resume_offset(committed: int, mark: int | None) -> int:
    """The first offset of a partition to apply: the committed offset, or the one after
    the mark when the mark is past it (a crash between step 4 and step 5)."""
    if mark is None or mark < committed:
        return committed
    return mark + 1
