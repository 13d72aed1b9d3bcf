"""Which notifications were already handled, kept on local disk (SPEC 11: dedup by event_id).

A small SQLite file: one row per (event_id, channel) with the outcome (``sent`` or
``dead_lettered``) and the wall-clock time it was written. A row is committed (SQLite's
journal, ``synchronous=FULL``) before the consumer treats the delivery as done, so it
survives a crash or SIGKILL of the process and a restart on the same disk. Rows older than
the horizon (default 7 days, the rater's id horizon) are deleted: an event replayed later
than that would be sent again.

Why not a compacted Kafka topic: the store is read before every send and written after it;
a local file answers in microseconds, needs no read-your-writes reasoning across a
producer and a consumer, and `rater notify` keeps one consumer group whose partitions stay
on one instance in the normal case. The cost is stated in docs/notify.md: a second instance
that takes over a partition (after a rebalance) does not see the first one's rows.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

SENT = "sent"
DEAD_LETTERED = "dead_lettered"


class DedupStore:
    def __init__(self, path: str, horizon_seconds: float = 7 * 86400):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.path = path
        self.horizon = horizon_seconds
        # Written from the event loop and from the SMTP threads (a delivery is recorded in the
        # thread that saw the server accept it): one connection behind a lock.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit is in the OS once it returns, so it survives the
        # process being killed; a power loss may lose the last commits, which can only
        # repeat a notification, never lose one (offsets are committed after the store).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS handled ("
            " event_id TEXT NOT NULL, channel TEXT NOT NULL, outcome TEXT NOT NULL,"
            " at REAL NOT NULL, PRIMARY KEY (event_id, channel))"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS handled_at ON handled (at)")

    def outcome(self, event_id: str, channel: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT outcome FROM handled WHERE event_id = ? AND channel = ?", (event_id, channel)).fetchone()
        return row[0] if row else None

    def record(self, event_id: str, channel: str, outcome: str, at: float | None = None) -> None:
        """Write the outcome durably; returns once SQLite has committed it."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO handled (event_id, channel, outcome, at) VALUES (?, ?, ?, ?)",
                (event_id, channel, outcome, time.time() if at is None else at),
            )

    def prune(self, now: float | None = None) -> int:
        """Forget rows older than the horizon; returns how many."""
        cutoff = (time.time() if now is None else now) - self.horizon
        with self._lock:
            return self._db.execute("DELETE FROM handled WHERE at < ?", (cutoff,)).rowcount

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM handled").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
