"""Which offsets may be committed: the lowest offset of a partition not yet handled.

Pure state. Records of one partition are handled out of order (each tenant has its own
queue), so the committed offset of a partition is the first offset still in flight, or
one past the last offset taken when none is: everything below it is sent or dead-lettered.
"""

from __future__ import annotations


class PartitionProgress:
    def __init__(self) -> None:
        self._pending: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}  # one past the highest offset taken, per partition
        self._committed: dict[int, int] = {}

    def taken(self, partition: int, offset: int) -> None:
        self._pending.setdefault(partition, set()).add(offset)
        if offset + 1 > self._next.get(partition, 0):
            self._next[partition] = offset + 1

    def done(self, partition: int, offset: int) -> None:
        self._pending.get(partition, set()).discard(offset)

    def in_flight(self) -> int:
        return sum(len(s) for s in self._pending.values())

    def committable(self) -> dict[int, int]:
        """Partitions whose commit point moved since :meth:`committed` was last told."""
        out = {}
        for p, nxt in self._next.items():
            pending = self._pending.get(p)
            point = min(pending) if pending else nxt
            if point > self._committed.get(p, -1):
                out[p] = point
        return out

    def committed(self, points: dict[int, int]) -> None:
        for p, point in points.items():
            if point > self._committed.get(p, -1):
                self._committed[p] = point

    def forget(self, partitions: set[int]) -> None:
        """The partitions were revoked: their records will be read again by their new owner."""
        for p in partitions:
            self._pending.pop(p, None)
            self._next.pop(p, None)
            self._committed.pop(p, None)
