"""Table records of a batch whose step 4 has not finished: what the next batch must read.

The worker rates batch n+1 while batch n's outputs and accounts are still on their way
to Kafka (``rater/worker/pipeline.py``, the commit protocol). Batch n+1 must see the accounts and
id segments exactly as batch n left them, but the local store has them only once batch
n's step 4 is done. The account cache usually has them; it is bounded, though, and may
be off (``--account-cache 0``), so every record batch n writes is also kept here, by
key, from the moment batch n is handed to its commit until its local write is done.
The writes come as the changelog records ``send_all`` takes (``rater/worker/sending.py``).

``get`` answers ``(True, value)`` for a key in flight (``value`` None: a deletion), else
``(False, None)``: ask the store. ``done`` forgets a batch's records, except where a
later batch has put a newer value for the same key since (compared by identity: every
write is a fresh ``bytes`` object).
"""

from __future__ import annotations

from typing import Iterable

from rater.worker.sending import Record  # topic, partition, key, value (None deletes), headers


class InFlight:
    def __init__(self) -> None:
        self._values: dict[bytes, bytes | None] = {}

    def __len__(self) -> int:
        return len(self._values)

    def put(self, writes: Iterable[Record]) -> None:
        values = self._values
        for _topic, _partition, key, value, _headers in writes:
            values[key] = value  # type: ignore[index]

    def get(self, key: bytes) -> tuple[bool, bytes | None]:
        values = self._values
        if key in values:
            return True, values[key]
        return False, None

    def done(self, writes: Iterable[Record]) -> None:
        values = self._values
        for _topic, _partition, key, value, _headers in writes:
            if key in values and values[key] is value:
                del values[key]
