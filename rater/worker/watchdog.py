"""A worker stuck on its way to ready ends itself, so that a restart gets it going.

Between a rebalance and ``/readyz`` 200 the worker waits on things that end by
themselves: the group's join (bounded by the rebalance timeout, 60 s) and the table's
recovery, which reads the changelog partitions it was given up to their highwater. A
recovery that receives nothing never ends: faust keeps the group membership alive (it
heartbeats) and logs "No event received for active tp ..." every 5 seconds, so the
partitions stay assigned to a worker that does not rate them, for good. It was seen in
the test suite, after two partitions went from one worker to another and back; its
cause (a fetch faust drops during a rebalance, a changelog partition not sought back) is
mended in ``adapter.BulkConsumer._hand_back`` (``docs/faust-notes.md``), and the watch
stays for whatever else might stop a recovery.

``StallWatch`` is the rule, with no I/O: the worker is *stalled* while it is not ready
for a reason that should pass (a rebalance, table recovery) and nothing moved (the
consumer group generation, the changelog offsets recovery has read) for ``limit``
seconds. The worker then exits with code 75 (``EX_TEMPFAIL``) and one line naming the
changelog partitions still behind; its supervisor starts it again, and a new process
joins the group and recovers afresh. A recovery that reads (a worker rebuilding a large
table from the changelog) is never stalled, however long it takes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

# ``RaterWorker.ready``'s reasons (``/readyz``) that wait for something that should pass;
# "no partitions assigned" is a spare worker, not a stall.
REBALANCING = "rebalancing"
RECOVERING = "recovering tables"
WAITING = frozenset((REBALANCING, RECOVERING))

# The default limit: three rebalance timeouts, so a slow group join alone never trips it.
DEFAULT_LIMIT = 180.0
CHECK_EVERY = 5.0  # seconds between looks (less for a limit under 10 s: ``check_every``)

EXIT_CODE = 75  # EX_TEMPFAIL: a restart is expected to succeed


def check_every(limit: float) -> float:
    """Seconds between two looks: ``CHECK_EVERY``, or half the limit when that is less. A
    stall is reported less than ``limit + 2 * check_every(limit)`` after it began (the
    default: within 10 s past the limit; a short limit: within two limits)."""
    return min(CHECK_EVERY, limit / 2)


class StallWatch:
    """``observe`` every few seconds; it returns how long the worker has been stalled once
    that reaches ``limit`` (else None). A ``limit`` of 0 watches nothing."""

    def __init__(self, limit: float):
        self.limit = limit
        self._since: float | None = None  # when the current stretch without progress began
        self._progress: Hashable = None

    def observe(self, now: float, reason: str, progress: Hashable) -> float | None:
        """``reason``: why the worker is not ready ("ready" when it is); ``progress``: any
        value that changes whenever the rebalance or the recovery moves on."""
        if self.limit <= 0 or reason not in WAITING:
            self._since = None
            return None
        if self._since is None or progress != self._progress:
            self._since, self._progress = now, progress
            return None
        stalled = now - self._since
        return stalled if stalled >= self.limit else None


def behind_text(behind: Callable[[], list[str]]) -> str:
    """The exit line's changelog partitions still to read: ``behind()`` joined ("none"
    when it names none), or, when reading them fails, the exception's name; the worker
    exits all the same."""
    try:
        return ", ".join(behind()) or "none"
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"
