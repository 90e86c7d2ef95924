"""The agent's planning core and journal (pure, no server)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tycoon.agent.journal import Journal
from tycoon.agent.planner import (
    PlannerConfig,
    Quote,
    damped,
    make_plan,
    should_replan,
    switch_or_stay,
    utility_of,
)

CFG = PlannerConfig(min_balance=1)

quotes_st = st.lists(
    st.tuples(st.floats(1, 1e4), st.floats(0, 1e6)), min_size=1, max_size=12
).map(lambda rows: [Quote(f"h{i}", c, p) for i, (c, p) in enumerate(rows)])


@given(quotes=quotes_st, money=st.integers(1_000, 10**12), seconds=st.floats(1, 1e5))
@settings(max_examples=200, deadline=None)
def test_plan_never_spends_more_than_it_has(quotes, money, seconds) -> None:
    plan = make_plan(quotes, money, seconds, CFG)
    assert sum(plan.balances.values()) <= money
    assert all(isinstance(b, int) and b > 0 for b in plan.balances.values())
    for host, balance in plan.balances.items():
        assert plan.rates[host] == pytest.approx(balance / seconds)
    assert all(0 <= s <= 1 for s in plan.shares.values())


def test_plan_prefers_cheap_capacity() -> None:
    quotes = [Quote("cheap", 1000, 1e5), Quote("dear", 1000, 1e7)]
    plan = make_plan(quotes, 100_000_000, 100.0, CFG)
    assert plan.balances["cheap"] > plan.balances.get("dear", 0)


def test_free_hosts_get_a_reserve_priced_slice_not_everything() -> None:
    quotes = [Quote("free", 1000, 0.0), Quote("busy", 1000, 1e6)]
    plan = make_plan(quotes, 10**9, 1000.0, CFG)
    assert 0 < plan.balances["free"] < plan.balances["busy"]


def test_hysteresis_ignores_noise_and_follows_real_moves() -> None:
    quotes = [Quote(f"h{i}", 1000, 1e5) for i in range(4)]
    current = make_plan(quotes, 10**9, 1000.0, CFG)
    own = {q.host: current.rates[q.host] for q in quotes}
    rng = np.random.default_rng(1)
    noisy = [Quote(q.host, q.capacity, (1e5 + own[q.host]) * (1 + rng.normal(0, 0.01)),
                   own_rate=own[q.host]) for q in quotes]
    go, why = should_replan(current, make_plan(noisy, 10**9, 1000.0, CFG), noisy, CFG)
    assert not go, why
    jumped = [Quote(q.host, q.capacity, (50e5 if q.host == "h0" else 1e5) + own[q.host],
                    own_rate=own[q.host]) for q in quotes]
    go, why = should_replan(current, make_plan(jumped, 10**9, 1000.0, CFG), jumped, CFG)
    assert go, why
    assert should_replan(current, current, quotes[1:], CFG)[0]  # a host in play vanished


def test_new_hosts_must_buy_more_than_the_hosts_held() -> None:
    held_quotes = [Quote("a", 1000, 1e6), Quote("b", 1000, 1e6)]
    held = make_plan(held_quotes, 10**9, 1000.0, PlannerConfig(min_balance=1, max_hosts=2))

    def target(new_price: float):
        quotes = [*held_quotes, Quote("c", 1000, new_price)]
        return make_plan(quotes, 10**9, 1000.0, PlannerConfig(min_balance=1, max_hosts=2))

    slightly = target(0.95e6)  # a little cheaper: the switch is not worth its money moves
    assert "c" in slightly.hosts and slightly.utility < held.utility * 1.1
    assert switch_or_stay(slightly, held, 0.1) is held
    much = target(0.2e6)  # far cheaper: worth it, unless a dwell runs
    assert much.utility > held.utility * 1.1
    assert switch_or_stay(much, held, 0.1) is much
    assert switch_or_stay(much, held, 0.1, dwelling=True) is held


def test_damping_moves_part_of_the_way() -> None:
    quotes = [Quote("a", 1000, 1e5), Quote("b", 1000, 1e5)]
    old = make_plan([Quote("a", 1000, 1e5)], 10**9, 1000.0, CFG)
    new = make_plan(quotes, 10**9, 1000.0, CFG)
    half = damped(old, new, quotes, 0.5, 1)
    assert half.rates["b"] == pytest.approx(new.rates["b"] / 2, rel=1e-6)
    assert sum(half.balances.values()) <= round(new.spend_rate * new.seconds_left)
    assert half.utility == pytest.approx(utility_of(half.rates, quotes))
    assert half.rates["a"] == pytest.approx(new.rates["a"], rel=1e-6)  # decreases: at once
    assert damped(None, new, quotes, 0.5, 1) is new


def test_nothing_to_spend_is_an_empty_plan() -> None:
    assert not make_plan([], 10, 10.0, CFG).hosts
    assert not make_plan([Quote("a", 1, 1.0)], 0, 10.0, CFG).hosts
    assert not make_plan([Quote("a", 1, 1.0)], 10, 0.0, CFG).hosts


def test_journal_is_idempotent_and_durable(tmp_path) -> None:
    journal = Journal(tmp_path / "j.db")
    assert journal.setdefault("deadline", "100.0") == "100.0"
    assert journal.setdefault("deadline", "999.0") == "100.0"
    epoch = journal.next_epoch()
    move = journal.begin("a.1.h.f", epoch, "h", "UPAYEE", "fund", 500)
    again = journal.begin("a.1.h.f", epoch, "h", "UPAYEE", "fund", 999)
    assert again == move and again.amount == 500
    assert journal.pending() == [move]
    journal.finish(move.id, receipt=b"r")
    refund = journal.begin("a.2.h.r", 2, "h", "UPAYEE", "refund", 0)
    journal.finish(refund.id, amount=120)
    journal.close()
    reopened = Journal(tmp_path / "j.db")
    assert reopened.pending() == [] and reopened.net_paid_out() == 380
    # past the counter (1) and every epoch a move carries (2): the counter itself is
    # written without an fsync, the moves with one
    assert reopened.next_epoch() == 3 and reopened.hosts_funded() == {"h"}
    reopened.db.execute("DELETE FROM meta WHERE key = 'epoch'")  # as if lost
    assert reopened.next_epoch() == 3
