"""The account store: what the ledger reads, between the local table and the batches.

Owns the account cache (per tenant, the value its last step 4 wrote, with the ids that
value holds: its *durable* ids), the in-flight overlay (``rater/worker/inflight.py``: the
table records of the batch being written, which the next batch must read), the id
segments (``rater/core/idsegments.py``) and the sweep index (``due``). Reads go to the
table through the Kafka port (``table_get``); writes are the commit pipeline's.
"""

from __future__ import annotations

from typing import Any, Callable

from rater.core import ledger
from rater.core.codec import decode_account, decode_judged
from rater.core.idsegments import SEP as SEGMENT_SEP
from rater.core.idsegments import IdSegments
from rater.core.partitioning import partition_for
from rater.worker.inflight import InFlight

# Called with (tenant, the offsets its stored value was judged through) on every read
# from the table while a replay range is open (step 1c); None otherwise.
JudgedNote = Callable[[str, dict], None]


class AccountStore:
    def __init__(self, port: Any, partitions: int, cache_limit: int):
        self.port = port  # table_get(partition, key)
        self.partitions = partitions
        self.cache_limit = cache_limit
        self.cache: dict[str, tuple[ledger.Account, dict]] = {}  # tenant -> (account, its durable ids)
        self.durable: dict[str, dict] = {}  # tenant -> durable ids, of the accounts the batch read
        self.segments = IdSegments(self.get_raw)
        self.in_flight = InFlight()  # table records of the batch being written
        self.due: dict[str, int] = {}  # tenant -> wall time (µs) its next sweep is due
        self.note_judged: JudgedNote | None = None

    def forget(self) -> None:
        """Another worker may change these accounts from now on, or a batch cut short
        changed some in memory: read them from the table again."""
        self.cache.clear()
        self.segments.clear()

    def load(self, tenant: str) -> ledger.Account | None:
        """An account for the ledger: its recent ids in the record, older ones in
        segments (``rater/core/idsegments.py``), with the recent ids noted as durable.

        From the cache when it is there: the cache holds, per account, the value its
        last step 4 wrote (or the store held), so it equals the store between batches.
        A batch that does not reach the end of step 4 ends the process, and every
        rebalance empties the cache, so a cached account is never one that another
        worker may have changed since."""
        hit = self.cache.pop(tenant, None)
        if hit is not None:
            self.cache[tenant] = hit  # most recently used last
            acct, durable = hit
            self.durable[tenant] = durable
            return acct
        raw = self.get_raw(tenant.encode())
        if raw is None:
            return None
        note = self.note_judged
        if note is not None:
            acct, judged = decode_judged(raw)
            note(tenant, judged)
        else:
            acct = decode_account(raw)
        durable = self.segments.wrap(acct)
        self.durable[tenant] = durable
        self.remember(tenant, acct, durable)
        return acct

    def remember(self, tenant: str, acct: ledger.Account, durable: dict) -> None:
        limit = self.cache_limit
        if limit <= 0:
            return
        cache = self.cache
        cache[tenant] = (acct, durable)
        while len(cache) > limit:
            del cache[next(iter(cache))]

    def read(self, tenant: str) -> ledger.Account | None:
        """An account to show, not to change: as stored (a batch still being written is
        not shown until its step 4 is done)."""
        raw = self.get_stored(tenant.encode())
        return decode_account(raw) if raw is not None else None

    def get_raw(self, key: bytes) -> bytes | None:
        """A table record for the ledger: as the last batch handed over wrote it."""
        found, value = self.in_flight.get(key)
        if found:
            return value
        return self.get_stored(key)

    def get_stored(self, key: bytes) -> bytes | None:
        # A segment record lives beside its account, in the tenant's partition
        # (``rater/core/idsegments.py``): the partition of the part before its separator.
        home = key.split(SEGMENT_SEP, 1)[0]
        return self.port.table_get(partition_for(home, self.partitions), key)

    def get_in_partition(self, partition: int, key: bytes) -> bytes | None:
        """A record of a given table partition (an applied mark): in flight, else stored."""
        found, value = self.in_flight.get(key)
        return value if found else self.port.table_get(partition, key)

    def hand_over(self, segments: list, accounts: list, changed: dict[str, tuple[int, ledger.Account]]) -> None:
        """A batch's writes become what the next batch reads (in flight, and the cache)."""
        self.in_flight.put(segments)
        self.in_flight.put(accounts)
        # The cached accounts are the values this batch writes: their recent ids count as
        # durable for the next batch's plan, whose segment writes go out only after these.
        for tenant, (_partition, acct) in changed.items():
            self.remember(tenant, acct, self.segments.wrap(acct))

    def written(self, segments: list, accounts: list) -> None:
        """A batch's step 4 is done: the table holds its records."""
        self.in_flight.done(segments)
        self.in_flight.done(accounts)

    def note_due(self, tenant: str, acct: ledger.Account) -> None:
        due = []
        if acct.lots:
            due.append(acct.lots[0].expires_at)
        if acct.pending_request_id is not None:
            due.append(acct.pending_requested_at + ledger.RECHARGE_TIMEOUT + 1)
        if due:
            self.due[tenant] = min(due)
        else:
            self.due.pop(tenant, None)
