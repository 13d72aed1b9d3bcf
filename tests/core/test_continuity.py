"""The continuity check of fetched input records (rater/core/continuity.py), one test per rule."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rater.core.continuity import Continuity


@dataclass
class Rec:
    offset: int


def recs(*offsets: int) -> list[Rec]:
    return [Rec(o) for o in offsets]


def offsets_of(records) -> list[int]:
    return [r.offset for r in records]


TP = ("cdrs", 0)


def started(at: int) -> Continuity:
    c = Continuity()
    c.start(TP, at)
    return c


def test_a_run_from_the_committed_offset_is_taken_whole_and_moves_the_expected_offset():
    c = started(353)
    v = c.judge(TP, recs(353, 354, 355))
    assert offsets_of(v.take) == [353, 354, 355]
    assert v.seek_to is None and v.hole is None
    assert c.expected[TP] == 356


def test_records_below_the_expected_offset_were_applied_and_are_dropped():
    c = started(10)
    c.judge(TP, recs(10, 11, 12))
    v = c.judge(TP, recs(11, 12, 13, 14))  # a refetch that overlaps what was applied
    assert offsets_of(v.take) == [13, 14]
    assert c.expected[TP] == 15


def test_a_run_that_starts_past_the_expected_offset_is_refused_and_sought_back():
    # The full-size kill loop's case: committed 353, the fetch began at 2,353.
    c = started(353)
    v = c.judge(TP, recs(2353, 2354))
    assert v.take == []
    assert v.seek_to == 353 and v.found == 2353
    assert c.expected[TP] == 353
    assert c.seeks == 1


def test_a_hole_inside_a_run_keeps_the_records_before_it_and_seeks_back_to_it():
    c = started(0)
    v = c.judge(TP, recs(0, 1, 2, 5, 6))
    assert offsets_of(v.take) == [0, 1, 2]
    assert v.seek_to == 3 and v.found == 5
    assert c.expected[TP] == 3


def test_after_the_seek_the_missing_records_are_taken_when_they_come():
    c = started(0)
    c.judge(TP, recs(0, 1, 2, 5, 6))
    v = c.judge(TP, recs(3, 4, 5, 6, 7))
    assert offsets_of(v.take) == [3, 4, 5, 6, 7]
    assert v.hole is None and c.holes_accepted == 0


def test_the_same_hole_fetched_again_is_not_in_the_log_and_is_accepted():
    # A transaction marker at offset 3: the refetch shows the same hole.
    c = started(0)
    c.judge(TP, recs(0, 1, 2, 4))
    v = c.judge(TP, recs(4, 5))
    assert offsets_of(v.take) == [4, 5]
    assert v.hole == (3, 4) and v.seek_to is None
    assert c.expected[TP] == 6
    assert (c.seeks, c.holes_accepted) == (1, 1)


def test_a_later_hole_at_another_offset_is_sought_back_again():
    c = started(0)
    c.judge(TP, recs(0, 2))  # hole at 1: seek
    c.judge(TP, recs(2, 3))  # same hole: accepted
    v = c.judge(TP, recs(7))  # a new hole at 4
    assert v.take == [] and v.seek_to == 4
    assert c.seeks == 2


def test_a_new_assignment_forgets_every_expected_offset():
    c = started(100)
    c.judge(TP, recs(100, 101))
    c.reset()
    assert not c.knows(TP)
    c.start(TP, 50)  # another worker committed less? the broker's word is taken
    assert offsets_of(c.judge(TP, recs(50, 51)).take) == [50, 51]


def test_partitions_are_judged_independently():
    c = Continuity()
    other = ("tenant-commands", 0)
    c.start(TP, 5)
    c.start(other, 9)
    assert c.judge(TP, recs(9)).seek_to == 5
    assert offsets_of(c.judge(other, recs(9, 10)).take) == [9, 10]
    assert (c.expected[TP], c.expected[other]) == (5, 11)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 3), max_size=12),
    st.integers(0, 6),
    st.integers(0, 12),
    st.sampled_from([None, 0, 3, 6]),
)
@example([1, 1, 1], 2, 2, None)  # the shortcut: offsets 2 to 5 expected from 2
@example([1, 2], 2, 2, 2)  # a hole at 4, sought before: accepted
def test_judging_a_whole_run_at_once_agrees_with_judging_each_record(steps, first, expected, sought):
    """The shortcut for a run of exactly the next offsets gives what the rules give
    record by record, for any strictly increasing run (gaps of 1 to 3) and any state."""
    offsets = [first + sum(steps[:i]) for i in range(len(steps) + 1)] if steps else []
    verdicts = []
    for judge in (Continuity.judge, Continuity.judge_each):
        c = started(expected)
        if sought is not None:
            c._sought[TP] = sought
        v = judge(c, TP, recs(*offsets))
        verdicts.append((offsets_of(v.take), v.seek_to, v.found, v.hole, c.expected[TP], c.seeks, c.holes_accepted))
    assert verdicts[0] == verdicts[1]
