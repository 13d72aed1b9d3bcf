"""The tenant index of the worker's partitions: when each tenant's wall-clock sweep is next
due (``rater/worker/sweeper.py``) and its balance state (the ``rater_tenants`` gauge).

Noted for every account a batch or the sweep writes (the account store's ``plan``) and
rebuilt from the table after a rebalance (``Sweeper._rescan``). The Python engine's store
keeps it here, in two dicts (``TenantIndex``); the native one keeps it in Rust beside its
held accounts (``native/src/index.rs``, through ``HeldIndex``), where each account a batch
changed is noted as it is planned, with no Python object per account: about 55 bytes a
tenant against about 124 in the two dicts, not counting the tenant strings the dicts
keep (100,000 tenants, measured in process). The differential tests (``tests/worker/test_native_store.py``) hold the two
equal.
"""

from __future__ import annotations

from typing import Any

STATES = ("ok", "low", "negative")


def tenant_state(balance: int, threshold: int) -> str:
    """A tenant's balance state: below zero, below its low-balance threshold, or ok
    (``native/src/index.rs`` ``state``)."""
    if balance < 0:
        return "negative"
    if threshold > 0 and balance < threshold:
        return "low"
    return "ok"


class TenantIndex:
    """The index in Python: tenant -> when its sweep is due (µs of wall time), tenant ->
    its state."""

    def __init__(self) -> None:
        self._due: dict[str, int] = {}
        self._state: dict[str, str] = {}

    def note(self, tenant: str, due: int | None, balance: int, threshold: int) -> None:
        """An account as written: its next sweep (None: nothing is due) and its state."""
        if due is not None:
            self._due[tenant] = due
        else:
            self._due.pop(tenant, None)
        self._state[tenant] = tenant_state(balance, threshold)

    def forget_due(self, tenant: str) -> None:
        self._due.pop(tenant, None)

    def due_by(self, now: int) -> list[str]:
        """The tenants whose sweep is due at ``now``, earliest first (then by name)."""
        return [t for at, t in sorted((at, t) for t, at in self._due.items() if at <= now)]

    def clear(self) -> None:
        self._due.clear()
        self._state.clear()

    def state_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state in self._state.values():
            counts[state] += 1
        return counts

    def dues(self) -> dict[str, int]:
        return dict(self._due)

    def states(self) -> dict[str, str]:
        return dict(self._state)


class HeldIndex:
    """The same index held natively, in the native store's ``rater_native.Held``."""

    def __init__(self, held: Any):
        self._held = held

    def note(self, tenant: str, due: int | None, balance: int, threshold: int) -> None:
        self._held.note_tenant(tenant, due, balance, threshold)

    def forget_due(self, tenant: str) -> None:
        self._held.forget_due(tenant)

    def due_by(self, now: int) -> list[str]:
        return self._held.due_by(now)

    def clear(self) -> None:
        self._held.clear_index()

    def state_counts(self) -> dict[str, int]:
        return dict(zip(STATES, self._held.state_counts()))

    def dues(self) -> dict[str, int]:
        return self._held.dues()

    def states(self) -> dict[str, str]:
        return {t: STATES[s] for t, s in self._held.states().items()}
