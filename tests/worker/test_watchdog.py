"""The stall rule of ``rater/worker/watchdog.py``: not ready for a reason that should pass,
and nothing moved, for the limit."""

from rater.worker.watchdog import StallWatch, behind_text, check_every


def test_a_worker_waiting_with_no_progress_is_stalled_once_the_limit_has_passed():
    watch = StallWatch(30.0)
    assert watch.observe(100.0, "recovering tables", ("gen", 1)) is None  # the stretch begins
    assert watch.observe(129.0, "recovering tables", ("gen", 1)) is None
    assert watch.observe(130.0, "recovering tables", ("gen", 1)) == 30.0
    assert watch.observe(137.5, "rebalancing", ("gen", 1)) == 37.5  # either waiting reason


def test_progress_or_readiness_starts_the_count_again():
    watch = StallWatch(30.0)
    watch.observe(0.0, "rebalancing", (3, ()))
    assert watch.observe(25.0, "rebalancing", (4, ())) is None  # a new generation: moved
    assert watch.observe(54.0, "rebalancing", (4, ())) is None  # 29 s since it moved
    assert watch.observe(55.0, "rebalancing", (4, ())) == 30.0
    watch = StallWatch(30.0)
    watch.observe(0.0, "recovering tables", (4, (("c", 0, 5),)))
    assert watch.observe(20.0, "ready", (4, (("c", 0, 5),))) is None
    assert watch.observe(40.0, "recovering tables", (4, (("c", 0, 5),))) is None  # waiting again: from here
    assert watch.observe(69.0, "recovering tables", (4, (("c", 0, 5),))) is None
    assert watch.observe(70.0, "recovering tables", (4, (("c", 0, 5),))) == 30.0


def test_a_spare_worker_and_a_limit_of_0_are_never_stalled():
    spare = StallWatch(30.0)
    off = StallWatch(0.0)
    for t in (0.0, 100.0, 1000.0):
        assert spare.observe(t, "no partitions assigned", None) is None
        assert off.observe(t, "recovering tables", None) is None


def test_the_watch_looks_every_5_s_or_twice_within_a_shorter_limit():
    assert (check_every(180.0), check_every(10.0), check_every(6.0), check_every(1.0)) == (5.0, 5.0, 3.0, 0.5)


def test_the_exit_line_names_the_partitions_behind_or_why_it_cannot():
    behind = ["accounts-changelog[0] read to offset 3 of 9 (asked for by faust)", "accounts-changelog[2] read to offset -1 of 4"]
    assert behind_text(lambda: behind) == (
        "accounts-changelog[0] read to offset 3 of 9 (asked for by faust), accounts-changelog[2] read to offset -1 of 4"
    )
    assert behind_text(list) == "none"

    def between_two_steps_of_a_rebalance() -> list[str]:
        raise KeyError("accounts-changelog[1]")

    assert behind_text(between_two_steps_of_a_rebalance) == "unknown (KeyError)"
