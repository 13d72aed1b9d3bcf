"""The cycle collector's settings for ``rater worker``.

CPython starts a young-generation collection after 700 net allocations of container
objects. A batch of 5,000 CDRs allocates several hundred thousand (records, outputs,
tuples), many of which live until the batch ends, so the default settings collected about
25 times per batch and promoted each batch's objects until a full collection ran, every
two seconds or so, for 100-200 ms each (measured in the worker: 11 full collections and
2.2 s in the collector per 225,004 records). Almost nothing the rater allocates is part of
a reference cycle; freeing is by reference count. With the young threshold at 50,000 the
same run spends about 0.5 s in the collector and three full collections, for 6-7 % more
records a second (``docs/benchmarks.md``). ``rater rate`` spends about 2 % of its time
in the collector and is left at the defaults (the same setting there was below the noise).

``gc.freeze()`` once the worker has started moves what start-up built (modules, faust's
app, the rate tables) out of the collector's view; full collections then scan only what
was allocated since.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune() -> None:
    """Collect young objects after 50,000 net allocations (default 700); the older
    generations keep their default ratios."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def freeze_startup() -> None:
    """Call once, after start-up: what exists now is never scanned again."""
    gc.collect()
    gc.freeze()
