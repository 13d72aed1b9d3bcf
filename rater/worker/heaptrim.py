"""Giving the heap that batches freed back to the system (glibc's ``malloc_trim``).

A batch allocates its records, outputs and changelog values and frees them when it is
written; glibc keeps most of what was freed inside the heap, between live blocks, where
the process's RSS still counts it. Measured with ``python -m bench.run --only restart``
(100,000 accounts built by one worker, RSS 3 s after the last batch): 1,945 bytes per
account without trimming, 1,727 with a trim after every batch; 1,340 and 1,094 at 200,000
accounts (``bench/analysis.md``). A trim walks the whole heap: about 17 ms on a fragmented
300 MB heap, during which the worker's thread does nothing else, so the worker trims
when it has gone a second without a batch after some work, and at least every
``EVERY`` seconds of steady work (one 17 ms pause per 30 s).

Only where the C library has ``malloc_trim`` (glibc); elsewhere nothing is trimmed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Callable

IDLE = 1.0  # seconds without a batch, after work, before a trim
EVERY = 30.0  # seconds of steady work between two trims at most


def libc_trim() -> Callable[[], object] | None:
    """``malloc_trim(0)`` of this process's C library, or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrim:
    """``worked()`` after each batch; ``tick()`` every second (the worker's timer)."""

    def __init__(self, trim: Callable[[], object] | None, clock: Callable[[], float] = time.monotonic):
        self.trim = trim
        self.clock = clock
        self.pending = False  # a batch ran since the last trim
        self.first_work = self.last_work = clock()  # of the work since the last trim
        self.trims = 0

    def worked(self) -> None:
        now = self.clock()
        if not self.pending:
            self.pending = True
            self.first_work = now
        self.last_work = now

    def tick(self) -> bool:
        """Trim if the work since the last trim has paused for ``IDLE`` seconds, or has gone
        on for ``EVERY``; True when it trimmed."""
        if self.trim is None or not self.pending:
            return False
        now = self.clock()
        if now - self.last_work < IDLE and now - self.first_work < EVERY:
            return False
        self.trim()
        self.pending = False
        self.trims += 1
        return True
