"""Steps 1b and 1c of the commit protocol: a replay judges nothing again.

After a crash between step 4 and step 5 the input is consumed again from an older
committed offset. A partition newly assigned resumes after its applied mark
(``rater/core/applied.py``) when that is past the committed offset (1b); up to the
partition's end at that start, a record whose tenant's stored account was written by a
batch that had judged the record is skipped (1c). Pure bookkeeping: the commit pipeline
asks the port for the mark and the high watermark.
"""

from __future__ import annotations

from typing import Any, Callable

from rater.core import applied
from rater.core.partitioning import partition_for
from rater.core.records import TENANT_RE

NO_END = 2**62  # a suspect range whose end the broker did not say


class ReplayGuard:
    def __init__(self, partitions: int):
        self.partitions = partitions
        # Input partitions that may hold records a crashed batch judged and partly wrote
        # (step 1c): (topic, partition) -> (first, last) offsets where a record may be one.
        self.suspect: dict[tuple[str, int], tuple[int, int]] = {}
        self.judged_in: dict[str, dict] = {}  # tenant -> offsets its stored value was judged through, if suspect

    def reset(self) -> None:
        self.suspect.clear()
        self.judged_in.clear()

    def resume_at(self, key: tuple[str, int], committed: int, mark: int | None, high: int | None) -> int:
        """Step 1b: where a newly assigned partition resumes. Its committed offset, unless
        the applied mark is at or past it: the worker that wrote the mark crashed between
        step 4 and step 5, the records up to the mark have their outputs acknowledged
        (step 3) and their accounts durable (step 4), and judging them again against the
        newer state could change their outcome. They are skipped (the continuity check
        drops them: below the expected offset) and their offsets become committable.

        Step 1c: a batch past the mark may have written some of its accounts before a
        crash (step 4 sends more than one producer batch to a partition when its accounts
        pass 1 MB). Each account value says how far its batch had judged its partition;
        up to ``high`` (what Kafka held at this start), a record whose tenant's stored
        account was judged past it is skipped (``judged_before``)."""
        start = applied.resume_offset(committed, mark)
        if high is None or start < high:
            self.suspect[key] = (start, high - 1 if high is not None else NO_END)
        return start

    def note_judged(self, tenant: str, judged: dict) -> None:
        """Step 1c, on reading an account from the store: remember how far the batch that
        wrote it had judged, if that may be past where its partition resumed (or the
        other input topic's partition has not started yet). Keeping more is harmless: a
        value written by a batch that finished step 4 was judged only up to the mark,
        below every record of the suspect range."""
        partition = partition_for(tenant.encode(), self.partitions)
        for topic, offset in judged.items():
            span = self.suspect.get((topic, partition))
            if span is None or offset >= span[0]:
                self.judged_in[tenant] = judged
                return

    def judged_before(self, msg: Any, key: bytes, load: Callable[[str], Any]) -> bool:
        """Step 1c, per record of a suspect range: judged by the crashed batch whose write
        of this tenant's account landed (its outputs were acknowledged in step 3 before)."""
        span = self.suspect.get((msg.topic, msg.partition))
        if span is None or msg.offset > span[1]:
            return False
        tenant = key.decode("utf-8", "replace")
        if not TENANT_RE.fullmatch(tenant):
            return False  # not a tenant's key (the record is rejected, whatever the state)
        load(tenant)  # read it now (the store notes its offsets)
        judged = self.judged_in.get(tenant)
        return judged is not None and judged.get(msg.topic, -1) >= msg.offset

    def passed(self, positions: dict[tuple[str, int], int]) -> None:
        """A batch reached these offsets: a suspect range it passed the end of is closed."""
        if not self.suspect:
            return
        for key, offset in positions.items():
            span = self.suspect.get(key)
            if span is not None and offset >= span[1]:
                del self.suspect[key]
        if not self.suspect:
            self.judged_in.clear()


class Judged:
    """``BatchProcessor.judged`` while a replay range is open: ``guard.judged_before``
    with the batch step's own account read (``accounts.get``, the processor's
    ``engine.accounts``). The native batch step (``NativeBatchProcessor.feed``) runs the
    same check inside its one call per fetch, on ``guard``'s ``suspect`` and
    ``judged_in`` dicts."""

    __slots__ = ("guard", "accounts")

    def __init__(self, guard: ReplayGuard, accounts: Any):
        self.guard = guard
        self.accounts = accounts

    def __call__(self, msg: Any, key: bytes) -> bool:
        return self.guard.judged_before(msg, key, self.accounts.get)
