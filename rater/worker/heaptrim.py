"""Memory given back when the worker goes quiet, and after long stretches of work.

When the worker has gone ``IDLE`` seconds without a batch after some work it *rests*:
the store's write buffers that hold at least ``REST_FLUSH_BYTES`` are flushed, on a
thread of their own (``FaustPort.flush_store``), then the heap is trimmed. Without the
rest a quiet worker kept every value it had written since the last flush in RocksDB's
write buffers (up to 2 x 8 MiB per partition; at 100,000 accounts just built, about 600
bytes per account, measured with ``python -m bench.run --only restart``:
``bench/analysis.md``). A pause after less than ``REST_FLUSH_BYTES`` written flushes
nothing, so a worker that sees a record every few seconds does not write a small file
each time.

The heap that batches freed goes back to the system with glibc's ``malloc_trim``. A batch
allocates its records, outputs and changelog values and frees them when it is
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
import logging
import time
from typing import Awaitable, Callable

IDLE = 1.0  # seconds without a batch, after work, before a rest and a trim
EVERY = 30.0  # seconds of steady work between two trims at most
REST_FLUSH_BYTES = 1 << 20  # a partition's write buffers flushed at a rest from this size

log = logging.getLogger("rater")


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
    """``worked()`` after each batch; ``tick()`` every second (the worker's timer).
    ``rest``: what gives memory back when the work pauses, before the trim (the store's
    write buffers flushed)."""

    def __init__(
        self,
        trim: Callable[[], object] | None,
        clock: Callable[[], float] = time.monotonic,
        rest: Callable[[], Awaitable[object]] | None = None,
    ):
        self.trim = trim
        self.clock = clock
        self.rest = rest
        self.pending = False  # a batch ran since the last trim
        self.restless = False  # a batch ran since the last rest
        self.first_work = self.last_work = clock()  # of the work since the last trim
        self.trims = 0
        self.rests = 0

    def worked(self) -> None:
        now = self.clock()
        if not self.pending:
            self.pending = True
            self.first_work = now
        self.restless = True
        self.last_work = now

    async def tick(self) -> bool:
        """When the work has paused for ``IDLE`` seconds: rest (once per pause), then trim.
        When it has gone on for ``EVERY`` seconds since the last trim: trim. True when it
        trimmed."""
        now = self.clock()
        quiet = now - self.last_work >= IDLE
        if quiet and self.restless and self.rest is not None:
            self.restless = False
            self.rests += 1
            try:
                await self.rest()
            except Exception as exc:
                # Only memory is at stake: RocksDB flushes a full buffer by itself, and a
                # failing disk shows in the next batch's write, which stops the worker.
                log.warning("giving memory back at rest failed (%s); going on", exc)
        if self.trim is None or not self.pending:
            return False
        if not quiet and now - self.first_work < EVERY:
            return False
        self.trim()
        self.pending = False
        self.trims += 1
        return True
