"""When the worker rests (its store's write buffers flushed) and gives freed heap back
(rater/worker/heaptrim.py): a clock, a trim and a rest of our own, so each expected time is
worked out from IDLE (1 s) and EVERY (30 s)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from rater.worker.heaptrim import EVERY, IDLE, HeapTrim, libc_trim


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tick(heap: HeapTrim) -> bool:
    return asyncio.run(heap.tick())


def _steady(heap: HeapTrim, clock: Clock, until: float) -> None:
    """A batch every half second from 100.0 to ``until``, the timer every second in
    between (a quarter of a second after every other batch: 100.75, 101.75, ...)."""
    for step in range(int((until - 100.0) * 2) + 1):
        clock.now = 100.0 + step * 0.5
        heap.worked()
        if step % 2 == 1:
            clock.now += 0.25
            tick(heap)


def _heap() -> tuple[HeapTrim, Clock, list[float]]:
    clock = Clock()
    trims: list[float] = []
    return HeapTrim(lambda: trims.append(clock.now), clock), clock, trims


def test_the_constants_the_expectations_below_are_worked_out_from():
    assert (IDLE, EVERY) == (1.0, 30.0)


def test_no_trim_without_work_then_one_a_second_after_the_last_batch():
    heap, clock, trims = _heap()
    clock.now = 150.0
    assert tick(heap) is False  # nothing ran since the start
    heap.worked()  # a batch at 150.0
    clock.now = 150.9
    assert tick(heap) is False  # 0.9 s idle: the work may go on (50 s after the start)
    clock.now = 151.0
    assert tick(heap) is True
    clock.now = 160.0
    assert tick(heap) is False  # nothing ran since that trim
    assert trims == [151.0]


def test_steady_work_is_trimmed_every_30_seconds():
    heap, clock, trims = _heap()
    _steady(heap, clock, until=170.0)
    # The ticks fall at 100.75, 101.75, ... The first trim is at the first tick 30 s after
    # the first batch (100.0): 130.75. The work after it starts with the batch at 131.0,
    # so the next trim is at 161.75. The work never paused for a second.
    assert trims == [130.75, 161.75]
    clock.now = 171.0  # one second after the last batch (170.0)
    assert tick(heap) is True
    assert trims == [130.75, 161.75, 171.0]
    assert heap.trims == 3


def _resting() -> tuple[HeapTrim, Clock, list[tuple[str, float]]]:
    clock = Clock()
    done: list[tuple[str, float]] = []

    async def rest() -> None:
        done.append(("rest", clock.now))

    return HeapTrim(lambda: done.append(("trim", clock.now)), clock, rest=rest), clock, done


def test_a_pause_rests_once_then_trims():
    heap, clock, done = _resting()
    clock.now = 150.0
    tick(heap)
    assert done == []  # no work since the start: nothing to rest or trim
    heap.worked()  # a batch at 150.0
    for now in (150.5, 151.0, 152.0, 153.0):
        clock.now = now
        tick(heap)
    # 151.0: a second after the batch, the rest and then the trim; nothing more until
    # the next work.
    assert done == [("rest", 151.0), ("trim", 151.0)]
    assert (heap.rests, heap.trims) == (1, 1)


def test_steady_work_is_trimmed_but_not_rested_until_it_pauses():
    heap, clock, done = _resting()
    # The ticks at 100.75, 101.75, ...: the first tick 30 s after the first batch trims.
    _steady(heap, clock, until=140.0)
    assert done == [("trim", 130.75)]
    clock.now = 141.0  # one second after the last batch (140.0)
    tick(heap)
    assert done == [("trim", 130.75), ("rest", 141.0), ("trim", 141.0)]


def test_a_rest_that_fails_is_logged_and_the_trim_goes_on(caplog):
    clock = Clock()
    trims: list[float] = []

    async def rest() -> None:
        raise OSError("IO error: No space left on device")

    heap = HeapTrim(lambda: trims.append(clock.now), clock, rest=rest)
    heap.worked()
    clock.now += 1.0
    with caplog.at_level("WARNING", logger="rater"):
        assert tick(heap) is True
    assert trims == [101.0]
    assert "giving memory back at rest failed (IO error: No space left on device); going on" in caplog.text
    clock.now += 1.0
    assert tick(heap) is False  # not tried again until the next work
    assert heap.rests == 1


def test_without_malloc_trim_a_pause_still_rests():
    clock = Clock()
    rests: list[float] = []

    async def rest() -> None:
        rests.append(clock.now)

    heap = HeapTrim(None, clock, rest=rest)
    heap.worked()
    clock.now += 1.0
    assert tick(heap) is False  # nothing trimmed
    clock.now += 5.0
    tick(heap)
    assert (rests, heap.trims) == ([101.0], 0)


def test_without_malloc_trim_nothing_is_trimmed():
    clock = Clock()
    heap = HeapTrim(None, clock)
    heap.worked()
    clock.now += 60
    assert tick(heap) is False
    assert heap.trims == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_glibc_malloc_trim_is_found_and_answers_0_or_1():
    trim = libc_trim()
    assert trim is not None
    assert trim() in (0, 1)
