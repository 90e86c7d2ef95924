"""The store's SQLite state (pure: no server): proof budgets survive a reopen, a resent
chunk counts once, the oldest proofs are forgotten first, buckets made are counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tycoon.bundles.state import StoreState, charge
from tycoon.errors import Rejected


def test_charge_counts_a_resent_chunk_once_and_refuses_past_the_limit() -> None:
    assert charge(0, ("", -1), ("u", 0), 10, 20) == (10, ("u", 0))
    assert charge(10, ("u", 0), ("u", 0), 10, 20) == (10, ("u", 0))
    with pytest.raises(Rejected, match="bundle_too_large"):
        charge(15, ("u", 0), ("u", 1), 10, 20)


def test_budgets_and_buckets_survive_a_reopen(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    state = StoreState(db, kept=2)
    state.spend(b"p1", ("u", 0), 100, 150)
    state.made_bucket("a")
    state.close()
    state = StoreState(db, kept=2)
    try:
        assert state.spent(b"p1") == 100 and state.has_bucket("a") and state.buckets() == 1
        with pytest.raises(Rejected, match="bundle_too_large"):
            state.spend(b"p1", ("v", 0), 100, 150)
        assert state.spent(b"p1") == 100  # a refused chunk is not counted
        state.spend(b"p2", ("u", 0), 1, 150)
        state.spend(b"p3", ("u", 0), 1, 150)
        assert state.spent(b"p1") == 0 and state.spent(b"p3") == 1  # p1, the oldest, forgotten
    finally:
        state.close()
