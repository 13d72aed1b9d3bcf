"""Which fetched input records the worker may apply: every offset once, in order, no holes.

The worker takes its input records in bulk from the consumer (``rater/worker/adapter.py``, ``BulkConsumer``), so
nothing stands between Kafka and the commit protocol that could skip a record. This
module is the check that nothing did: it knows, for every input partition of the
current assignment, the next offset the worker must apply, and judges each fetched run
of records against it. No I/O: the worker asks the broker for the committed offset and
does the seeks this module asks for.

Rules, for one partition with expected offset ``e``:

1. A partition starts at its committed offset (or, never committed, the log start): the
   first record applied must be that offset. The expected offset is forgotten at every
   new assignment, so it always comes from the broker, never from an older generation.
2. Records below ``e`` were applied already in this assignment (a re-fetch after a
   seek): they are dropped.
3. A record above ``e`` is a hole. The first time a hole is seen at ``e`` the run is
   refused from there and the partition is sought back to ``e``: whatever lost the
   records (a fetch raced with a rebalance or a seek) fetches them again. If the same
   hole is fetched again, the offsets are not in the log (transaction markers, aborted
   transactions, records deleted by retention): it is accepted, logged, and counted.
4. ``e`` moves only over records handed to the commit protocol, so the offsets the worker
   commits (``e`` of each partition) never pass a record it did not apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Hashable, Sequence, TypeVar

R = TypeVar("R")  # a fetched record; only its ``offset`` is read


@dataclass(slots=True)
class Verdict(Generic[R]):
    # records to apply, contiguous from the expected offset: the fetched run itself when
    # all of it is (a ``rater_native.Records`` stays one), else a list
    take: Sequence[R] = field(default_factory=list)
    seek_to: int | None = None  # seek the partition here and fetch again (rule 3)
    found: int | None = None  # with seek_to: the offset fetched where seek_to was expected
    hole: tuple[int, int] | None = None  # an accepted hole: offsets [from, to) not in the log


class Continuity:
    def __init__(self) -> None:
        self.expected: dict[Hashable, int] = {}
        # partition -> the expected offset it was last sought back to; e only grows, so an
        # equal e means the refetch showed the very same hole
        self._sought: dict[Hashable, int] = {}
        self.seeks = 0
        self.holes_accepted = 0

    def reset(self) -> None:
        """A new assignment: every partition starts again from what the broker says (rule 1)."""
        self.expected.clear()
        self._sought.clear()

    def start(self, tp: Hashable, offset: int) -> None:
        self.expected[tp] = offset

    def knows(self, tp: Hashable) -> bool:
        return tp in self.expected

    def judge(self, tp: Hashable, records: Sequence[R]) -> Verdict[R]:
        """``records``: one fetched run of the partition, offsets strictly increasing (as
        a Kafka consumer returns them)."""
        verdict: Verdict[R] = Verdict()
        e = self.expected[tp]
        n = len(records)
        # The usual run: exactly the next n offsets. Offsets strictly increasing, a first
        # offset of e and a last of e + n - 1 leave no room for a hole or an old record.
        if n and records[0].offset == e and records[-1].offset == e + n - 1:  # type: ignore[attr-defined]
            verdict.take = records
            self.expected[tp] = e + n
            return verdict
        return self.judge_each(tp, records)

    def judge_each(self, tp: Hashable, records: Sequence[R]) -> Verdict[R]:
        """``judge``, record by record (rules 2 and 3)."""
        verdict: Verdict[R] = Verdict()
        e = self.expected[tp]
        take: list[R] = []
        verdict.take = take
        for rec in records:
            off = rec.offset  # type: ignore[attr-defined]
            if off < e:
                continue  # rule 2
            if off > e:  # rule 3
                if self._sought.get(tp) != e:
                    self._sought[tp] = e
                    self.seeks += 1
                    verdict.seek_to = e
                    verdict.found = off
                    break
                verdict.hole = (e, off)
                self.holes_accepted += 1
            take.append(rec)
            e = off + 1
        self.expected[tp] = e
        return verdict
