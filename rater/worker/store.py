"""The account store: what the ledger reads, between the local table and the batches.

Owns the account cache (per tenant, the value its last step 4 wrote, with the ids that
value holds: its *durable* ids), the in-flight overlay (``rater/worker/inflight.py``: the
table records of the batch being written, which the next batch must read), the id
segments (``rater/core/idsegments.py``) and the tenant index (``index``: when each
tenant's sweep is due, its balance state; ``rater/worker/tenants.py``). Reads go to the
table through the Kafka port (``table_get``); writes are the commit pipeline's.
"""

from __future__ import annotations

from typing import Any, Callable

from rater.core import codec, idsegments, ledger
from rater.core.codec import decode_account, decode_judged, encode_account, judged_of
from rater.core.idsegments import SEP as SEGMENT_SEP
from rater.core.idsegments import IdSegments, is_segment_key
from rater.core.native_engine import rater_native
from rater.core.partitioning import partition_for
from rater.worker.inflight import InFlight
from rater.worker.tenants import HeldIndex, TenantIndex

# Called with (tenant, the offsets its stored value was judged through) on every read
# from the table while a replay range is open (step 1c); None otherwise.
JudgedNote = Callable[[str, dict], None]

# The writes of a batch's changed accounts, in the order they changed (``AccountStore.plan``):
# segment records (step 4A), account records (4B), both as changelog records (topic,
# partition, key, value, headers). Each account is noted in the tenant index meanwhile.
Planned = tuple[list, list]


def due_of(acct: ledger.Account) -> int | None:
    """When the wall-clock sweep is next due for ``acct``: its first lot's expiry or its
    pending request's timeout, whichever comes first (None: neither)."""
    due = []
    if acct.lots:
        due.append(acct.lots[0].expires_at)
    if acct.pending_request_id is not None:
        due.append(acct.pending_requested_at + ledger.RECHARGE_TIMEOUT + 1)
    return min(due) if due else None


class AccountStore:
    def __init__(self, port: Any, partitions: int, cache_limit: int, account_format: int = codec.FORMAT):
        self.port = port  # table_get(partition, key)
        self.account_format = account_format  # of the values written (``--account-format``)
        self.partitions = partitions
        self.cache_limit = cache_limit
        self.cache: dict[str, tuple[ledger.Account, dict]] = {}  # tenant -> (account, its durable ids)
        self.durable: dict[str, dict] = {}  # tenant -> durable ids, of the accounts the batch read
        self.segments = IdSegments(self.get_raw)
        self.in_flight = InFlight()  # table records of the batch being written
        self.index = TenantIndex()  # tenant -> when its next sweep is due, its balance state
        self.note_judged: JudgedNote | None = None

    def forget(self) -> None:
        """Another worker may change these accounts from now on, or a batch cut short
        changed some in memory: read them from the table again."""
        self.clear_cache()
        self.segments.clear()

    def clear_cache(self) -> None:
        """Hold no account: the next batch reads each from the table."""
        self.cache.clear()

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

    def plan(
        self, changed: dict[str, tuple[int, ledger.Account]], changelog: str, judged: dict[int, dict[str, int]], horizon: int
    ) -> Planned:
        """The writes of the accounts a batch (or the sweep) changed, taken from the accounts
        now (the next batch changes the same objects while these are written). ``judged``:
        per partition, how far the batch judged each input topic there (step 1c), written
        into each account value of that partition (none for the sweep)."""
        segments: list = []
        records: list = []
        durable = self.durable
        # Phase A: id segments the accounts will stop holding (``IdSegments.plan``).
        for tenant, (partition, acct) in changed.items():
            for key, value in self.segments.plan(acct, durable.pop(tenant, {}), horizon):
                segments.append((changelog, partition, key, value, None))
        # Phase B: the accounts, each with how far its batch judged its partition.
        for tenant, (partition, acct) in changed.items():
            records.append((changelog, partition, tenant.encode(), encode_account(acct, judged.get(partition), self.account_format), None))
            self.note(tenant, acct)
        return segments, records

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

    def note(self, tenant: str, acct: ledger.Account) -> None:
        """``acct`` as written, in the tenant index."""
        self.index.note(tenant, due_of(acct), acct.balance, acct.low_balance_threshold)

    def note_stored(self, tenant: str, value: bytes) -> None:
        """A stored account (the rescan after a rebalance), in the tenant index."""
        self.note(tenant, decode_account(value))


class NativeAccountStore(AccountStore):
    """``AccountStore`` for the native batch step: the accounts are held natively
    (``rater_native.Held``, ``native/src/held.rs``) between batches, as compact structs
    (an account no batch used for a while in its stored form), bounded by the same cache
    limit and emptied exactly when the Python cache is (``forget``, ``clear_cache``). The native engine rates a batch against them and, at
    the end of the batch, hands back each changed account's changelog value and segment
    writes as bytes (``plan``): no Python ``Account`` on the hot path.

    The rarer paths decode the one account they need: the sweep (``load``, then ``plan``
    takes the swept ``Account`` back), the replay check (``hold``: it reads the account
    through ``read``, which notes its judged offsets) and the views (``read``, the table).
    The id segments are read, planned and cached natively too, by the rules of
    ``IdSegments``; ``segments`` (the Python one) stays unused."""

    def __init__(self, port: Any, partitions: int, cache_limit: int, idle_after: int | None = None, account_format: int = codec.FORMAT):
        super().__init__(port, partitions, cache_limit, account_format)
        if rater_native is None:
            raise RuntimeError("the native engine is not built")
        # idle_after: batches a held account may go unused before it is held in its stored
        # form (native/src/held.rs IDLE_AFTER); tests set it small.
        extra = {} if idle_after is None else {"idle_after": idle_after}
        # The least segment size is Python's (rater/core/idsegments.py), read here: a test
        # that sets it small sets it for both engines.
        self.held = rater_native.Held(max(cache_limit, 0), self._read, segment_least=idsegments.SEGMENT_AT, format=account_format, **extra)
        self.index = HeldIndex(self.held)  # noted natively by ``Held.plan``

    def _read(self, key: bytes) -> bytes | None:
        """A table record for the native step (``get_raw``); an account read while a replay
        range is open has its judged offsets noted (step 1c), as ``load`` does."""
        raw = self.get_raw(key)
        note = self.note_judged
        if raw is not None and note is not None and not is_segment_key(key):
            note(key.decode(), judged_of(raw))
        return raw

    def forget(self) -> None:
        super().forget()
        self.held.clear()

    def clear_cache(self) -> None:
        super().clear_cache()
        self.held.clear_accounts()

    def note_stored(self, tenant: str, value: bytes) -> None:
        self.held.note_stored(tenant, value)  # decoded natively

    def load(self, tenant: str) -> ledger.Account | None:
        """A copy of the account, for a change outside the batch step (the sweep): the change
        counts once ``plan`` has it back (in ``changed``)."""
        raw = self.held.get(tenant)
        return decode_account(raw) if raw is not None else None

    def plan(
        self, changed: dict[str, tuple[int, ledger.Account]], changelog: str, judged: dict[int, dict[str, int]], horizon: int
    ) -> Planned:
        for _tenant, (partition, acct) in changed.items():
            self.held.put(encode_account(acct), partition)
        pairs = {partition: list(offsets.items()) for partition, offsets in judged.items()}
        return self.held.plan(changelog, pairs, horizon)

    def hand_over(self, segments: list, accounts: list, changed: dict[str, tuple[int, ledger.Account]]) -> None:
        # The held accounts are the planned values already (``plan``).
        self.in_flight.put(segments)
        self.in_flight.put(accounts)
