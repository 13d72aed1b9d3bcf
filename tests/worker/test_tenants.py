"""The tenant index (rater/worker/tenants.py), in Python and held natively: the same
answers. The differential tests (test_native_store.py) compare the two on generated
streams; these pin the rules."""

from __future__ import annotations

import pytest

from rater.core.native_engine import available, rater_native
from rater.worker.tenants import HeldIndex, TenantIndex, tenant_state


def _native() -> HeldIndex:
    return HeldIndex(rater_native.Held(10, lambda key: None))


KINDS = ["python", pytest.param("native", marks=pytest.mark.skipif(not available(), reason="native engine not built"))]


@pytest.fixture(params=KINDS)
def index(request):
    return TenantIndex() if request.param == "python" else _native()


def test_the_state_is_negative_below_zero_low_below_a_positive_threshold_else_ok():
    assert tenant_state(-1, 0) == "negative"
    assert tenant_state(-1, 5_000_000) == "negative"
    assert tenant_state(4_999_999, 5_000_000) == "low"
    assert tenant_state(5_000_000, 5_000_000) == "ok"
    assert tenant_state(0, 0) == "ok"  # no threshold: never low
    assert tenant_state(0, 1) == "low"


def test_due_tenants_come_earliest_first_then_by_name(index):
    index.note("b", 20, 1, 0)
    index.note("a", 20, 1, 0)
    index.note("c", 10, 1, 0)
    index.note("d", 31, 1, 0)
    index.note("e", None, -5, 0)
    assert index.due_by(30) == ["c", "a", "b"]
    assert index.due_by(9) == []
    assert index.dues() == {"a": 20, "b": 20, "c": 10, "d": 31}


def test_a_forgotten_due_or_an_account_written_with_none_due_keeps_its_state(index):
    index.note("a", 20, 1, 0)
    index.note("b", 20, 3, 5)
    index.note("c", 5, -1, 0)
    index.forget_due("c")
    index.forget_due("nobody")
    index.note("a", None, 1, 0)
    assert index.due_by(100) == ["b"]
    assert index.states() == {"a": "ok", "b": "low", "c": "negative"}
    assert index.state_counts() == {"ok": 1, "low": 1, "negative": 1}
    index.note("b", 20, 5, 5)  # written again: its state follows
    assert index.state_counts() == {"ok": 2, "low": 0, "negative": 1}
    index.clear()
    assert (index.dues(), index.states(), index.state_counts()) == ({}, {}, {"ok": 0, "low": 0, "negative": 0})


def test_a_tenant_id_outside_ascii_sorts_by_code_point_in_both(index):
    for t in ("é", "z", "a", "\U0001f600"):
        index.note(t, 7, 1, 0)
    assert index.due_by(7) == ["a", "z", "é", "\U0001f600"]
