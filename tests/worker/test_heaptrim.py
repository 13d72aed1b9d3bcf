"""When the worker gives freed heap back (rater/worker/heaptrim.py): a clock and a trim of
our own, so each expected trim time is worked out from IDLE (1 s) and EVERY (30 s)."""

from __future__ import annotations

import sys

import pytest

from rater.worker.heaptrim import EVERY, IDLE, HeapTrim, libc_trim


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _heap() -> tuple[HeapTrim, Clock, list[float]]:
    clock = Clock()
    trims: list[float] = []
    return HeapTrim(lambda: trims.append(clock.now), clock), clock, trims


def test_the_constants_the_expectations_below_are_worked_out_from():
    assert (IDLE, EVERY) == (1.0, 30.0)


def test_no_trim_without_work_then_one_a_second_after_the_last_batch():
    heap, clock, trims = _heap()
    clock.now = 150.0
    assert heap.tick() is False  # nothing ran since the start
    heap.worked()  # a batch at 150.0
    clock.now = 150.9
    assert heap.tick() is False  # 0.9 s idle: the work may go on (50 s after the start)
    clock.now = 151.0
    assert heap.tick() is True
    clock.now = 160.0
    assert heap.tick() is False  # nothing ran since that trim
    assert trims == [151.0]


def test_steady_work_is_trimmed_every_30_seconds():
    heap, clock, trims = _heap()
    # A batch every half second from 100.0 to 170.0, the timer every second in between.
    for step in range(141):
        clock.now = 100.0 + step * 0.5
        heap.worked()
        if step % 2 == 1:
            clock.now += 0.25
            heap.tick()
    # The ticks fall at 100.75, 101.75, ... The first trim is at the first tick 30 s after
    # the first batch (100.0): 130.75. The work after it starts with the batch at 131.0,
    # so the next trim is at 161.75. The work never paused for a second.
    assert trims == [130.75, 161.75]
    clock.now = 171.0  # one second after the last batch (170.0)
    assert heap.tick() is True
    assert trims == [130.75, 161.75, 171.0]
    assert heap.trims == 3


def test_without_malloc_trim_nothing_is_trimmed():
    clock = Clock()
    heap = HeapTrim(None, clock)
    heap.worked()
    clock.now += 60
    assert heap.tick() is False
    assert heap.trims == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_glibc_malloc_trim_is_found_and_answers_0_or_1():
    trim = libc_trim()
    assert trim is not None
    assert trim() in (0, 1)
