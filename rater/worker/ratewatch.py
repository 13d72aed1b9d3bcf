"""Rate-table reloads: on SIGHUP, and when a ``.csv`` file of the rates directory changes.

A reload that does not load keeps the tables in use (one ERROR line with the problems);
one that does replaces the batch processor's tables between two batches (the event loop
runs one thing at a time, and a batch reads ``processor.tables`` only while it is rated).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from rater.core.rates import check_rate_tables
from rater.worker.metrics import WorkerStats

log = logging.getLogger("rater")


class RateTableWatcher:
    def __init__(self, rates_dir: str, processor: Any, stats: WorkerStats):
        self.rates_dir = rates_dir
        self.processor = processor  # its ``tables`` is replaced
        self.stats = stats
        self.reload_requested = False
        self._signature_seen = self._signature()

    def _signature(self) -> tuple:
        try:
            names = sorted(n for n in os.listdir(self.rates_dir) if n.endswith(".csv"))
            stats = [os.stat(os.path.join(self.rates_dir, n)) for n in names]
            return tuple((n, st.st_mtime_ns, st.st_size) for n, st in zip(names, stats))
        except OSError:
            return ()

    def request_reload(self) -> None:
        log.info("SIGHUP: reloading rate tables")
        self.reload_requested = True
        self.maybe_reload()

    def maybe_reload(self) -> None:
        signature = self._signature()
        if signature == self._signature_seen and not self.reload_requested:
            return
        self.reload_requested = False
        self._signature_seen = signature
        tables, problems = check_rate_tables(self.rates_dir)
        if tables is None:
            log.error(
                "rate tables in %s not reloaded, keeping version %s: %s",
                self.rates_dir,
                self.stats.rate_tables_version,
                "; ".join(problems[:20]),
            )
            return
        if tables.version != self.stats.rate_tables_version:
            self.processor.tables = tables
            self.stats.rate_tables_version = tables.version
            self.stats.rate_tables_loaded_at = time.time()
            log.info("rate tables reloaded: version %s, %d plan(s)", tables.version, len(tables.plans))
