"""The agent's sans-IO core and move planning: driven with times passed in, no server."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_agent_discovery import StubBus, StubSLS
from test_allocator import Clock, FakeHost, FakeReceipt

from tycoon.agent import core as core_module
from tycoon.agent import moves as moves_module
from tycoon.agent import tasks as tasks_module
from tycoon.agent.agent import Agent
from tycoon.agent.allocator import Allocator
from tycoon.agent.books import Holding
from tycoon.agent.core import WATCHED, AgentConfig, AgentCore, Reading
from tycoon.agent.journal import Journal
from tycoon.agent.moves import Fund, Rebid, drops, funding, host_move, parks, top_ups
from tycoon.agent.parts import AgentParts
from tycoon.agent.planner import Plan
from tycoon.bus.keys import Identity, subject_id
from tycoon.money import MICRO

BUDGET = 1_000_000_000
NOW = 1_000.0


def core(**overrides: Any) -> AgentCore:
    config = AgentConfig(budget=BUDGET, deadline_s=1_000, refund_margin_s=0.0, **overrides)
    return AgentCore(config, deadline=NOW + 1_000)


def market(agent: AgentCore, prices: dict[str, float], capacity: float = 1_000.0) -> None:
    for host, price in prices.items():
        agent.offer(host, capacity, price)


def replan(agent: AgentCore, at: float, *, money: int = BUDGET, force: bool = False,
           held: dict[str, int] | None = None, exact: bool = False) -> Plan | None:
    """One replan as a runner does it, with no money at hosts unless ``held``."""
    agent.take_change()
    evaluation = agent.evaluate({}, NOW)
    decision = agent.decide(evaluation, Reading(held or {}, money, BUDGET - money, exact),
                            at, force=force)
    if decision.plan is not None:
        agent.adopt(decision.plan)
    return decision.plan


def test_the_core_does_no_io_and_reads_no_clock() -> None:
    for module in (core_module, moves_module, tasks_module):
        tree = ast.parse(inspect.getsource(module))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        assert not imported & {"asyncio", "nats", "time", "random", "socket"}, imported
        assert "tycoon.bus.connection" not in inspect.getsource(module)


def test_first_plan_is_forced_and_price_noise_moves_nothing() -> None:
    agent = core()
    market(agent, {"a": 1e5, "b": 1e5, "c": 1e5})
    first = replan(agent, at=0.0, force=True)
    assert first is not None and first.hosts == {"a", "b", "c"}
    # the same market a moment later: within hysteresis, the plan stays
    assert replan(agent, at=0.1) is None
    assert agent.plan is first


def test_a_move_on_a_host_in_play_counts_either_way_elsewhere_only_down() -> None:
    agent = core()
    market(agent, {"a": 1e5, "b": 1e5})
    replan(agent, at=0.0, force=True)
    agent.offer("x", 1.0, 1e9)  # a candidate out of play, not in the baseline yet
    agent.evaluate({}, NOW)
    assert agent.plan is not None and "x" not in agent.plan.hosts
    assert not agent.price("a", None, 1e5 * 1.04, {}, NOW, at=5.0)  # within 5 %
    assert agent.changed_at is None
    assert agent.price("a", None, 1e5 * 1.2, {}, NOW, at=6.0)  # up on a host in play
    assert agent.price("b", None, 1e5 * 0.5, {}, NOW, at=7.0)
    assert agent.changed_at == 6.0  # the first unanswered move
    assert not agent.price("x", None, 2e9, {}, NOW, at=8.0)  # dearer elsewhere: no
    assert agent.price("x", None, 1e8, {}, NOW, at=9.0)  # cheaper elsewhere: yes
    assert agent.take_change() == 6.0 and agent.take_change() is None
    # while our own move is in flight there, an update is recorded but not judged
    assert not agent.price("a", None, 1e7, {}, NOW, at=10.0, own_move=True)
    assert agent.quotes["a"].price == 1e7
    assert not agent.price("unknown", None, 1.0, {}, NOW, at=11.0)


def test_our_rate_is_the_newest_word_of_the_allocation_stream_or_the_books() -> None:
    agent = core()
    market(agent, {"a": 1e5})
    books = {"a": Holding(balance=10_000, expires=NOW + 100, at=NOW)}
    assert agent.own_rate("a", books, NOW) == pytest.approx(100.0)
    agent.allocation("a", 40.0, NOW + 1)  # the host's word, newer than the books
    assert agent.own_rate("a", books, NOW + 1) == 40.0
    newer = {"a": Holding(balance=5_000, expires=NOW + 52, at=NOW + 2)}
    assert agent.own_rate("a", newer, NOW + 2) == pytest.approx(100.0)
    assert agent.quote("a", newer, NOW + 2).others == pytest.approx(1e5 - 100.0)


def test_a_new_host_waits_for_the_dwell_and_must_gain_the_switch_gain() -> None:
    agent = core(max_hosts=2, switch_dwell_s=2.0)
    market(agent, {"a": 1e6, "b": 1e6})
    replan(agent, at=0.0, force=True)
    assert agent.plan is not None and agent.plan.hosts == {"a", "b"}
    agent.offer("c", 1_000.0, 0.2e6)  # far cheaper: worth a switch
    assert replan(agent, at=1.0) is None  # dwelling: the plan on a and b stands
    switched = replan(agent, at=2.5)
    assert switched is not None and "c" in switched.hosts
    assert agent.switched_at == 2.5
    # a slightly cheaper new host is not worth the money moves of a switch
    other = core(max_hosts=2)
    market(other, {"a": 1e6, "b": 1e6})
    replan(other, at=0.0, force=True)
    other.offer("c", 1_000.0, 0.95e6)
    assert replan(other, at=100.0) is None


def test_the_money_is_the_budget_left_or_the_bank_whichever_less_plus_the_hosts() -> None:
    agent = core()
    market(agent, {"a": 1e5})
    evaluation = agent.evaluate({}, NOW)
    # 600 of the budget paid out; the bank has only 300 of the 400 left; 50 at a host
    decision = agent.decide(evaluation, Reading({"a": 50_000_000}, 300_000_000, 600_000_000,
                                                exact=True), 0.0, force=True)
    assert decision.plan is not None
    assert sum(decision.plan.balances.values()) <= 350_000_000
    assert decision.plan.spend_rate == pytest.approx(350_000_000 / 1_000, rel=1e-6)
    assert [w.message for w in decision.warnings] == ["funds will not last to the deadline"]
    assert decision.warnings[0].detail == {"bank_balance": 300_000_000,
                                           "budget_left": 400_000_000}
    # estimated (not exact) readings never warn
    again = agent.decide(evaluation, Reading({}, 1, 600_000_000), 0.0, force=True)
    assert again.warnings == ()


def test_leaving_a_host_warns_priced_out() -> None:
    agent = core()
    market(agent, {"a": 1e5, "b": 1e5})
    replan(agent, at=0.0, force=True)
    assert agent.plan is not None and agent.plan.hosts == {"a", "b"}
    agent.offer("b", 1_000.0, 1e12)  # b became hopelessly dear
    decision = agent.decide(agent.evaluate({}, NOW), Reading({}, BUDGET, 0), 10.0)
    assert decision.plan is not None and decision.dropped == {"b"}
    assert decision.warnings[0].message == "priced out of 1 host(s)"
    assert agent.plan.hosts == {"a", "b"}  # adopted only once carried out


def test_the_horizon_ends_a_refund_margin_before_the_deadline() -> None:
    agent = AgentCore(AgentConfig(budget=BUDGET, deadline_s=100, refund_margin_s=2.0),
                      deadline=NOW + 100)
    evaluation = agent.evaluate({}, NOW)
    assert evaluation.end == NOW + 98 and evaluation.seconds == 98


def test_candidates_refuse_forged_rows_and_keep_followed_prices() -> None:
    honest, thief = Identity.generate(), Identity.generate()
    host = subject_id(honest.public_key)
    agent = core()
    row = {"host": host, "public_key": honest.public_key, "capacity": 10, "price": 5.0}
    forged = {**row, "public_key": thief.public_key}
    assert agent.candidates([row, forged, "junk"], followed=set()) == 2
    assert agent.payees == {host: honest.public_key}
    agent.quotes[host] = agent.quotes[host].__class__(host, 10, 7.0)  # a streamed price
    agent.candidates([{**row, "price": 1.0}], followed={host})
    assert agent.quotes[host].price == 7.0  # the followed stream's price is newer
    agent.candidates([{**row, "price": 1.0}], followed=set())
    assert agent.quotes[host].price == 1.0


def test_followed_hosts_are_those_in_play_and_the_best_others() -> None:
    agent = core(max_hosts=2)
    market(agent, {f"h{i}": 1e5 * (i + 1) for i in range(12)})
    assert len(agent.followed()) == WATCHED
    replan(agent, at=0.0, force=True)
    assert agent.plan is not None
    wanted = agent.followed()
    assert agent.plan.hosts <= wanted and len(wanted) == len(agent.plan.hosts) + WATCHED


def test_a_bid_reply_sets_the_price_only_when_it_is_a_number() -> None:
    agent = core()
    market(agent, {"a": 1e5})
    agent.bid_reply("a", float("nan"))
    agent.bid_reply("a", "cheap")
    assert agent.quotes["a"].price == 1e5
    agent.bid_reply("a", -3)
    assert agent.quotes["a"].price == 0.0


# -- the allocator's moves -------------------------------------------------------------

def plan_of(rates: dict[str, float], seconds: float = 100.0) -> Plan:
    balances = {h: int(r * seconds) for h, r in rates.items()}
    return Plan(rates, balances, {}, 0.0, sum(rates.values()), seconds)


def test_host_moves_rebid_where_money_is_and_fund_where_none() -> None:
    assert host_move("a", 0, 0.0, 10.0, 0.25) == Fund("a")
    assert host_move("a", 1_000, 10.0, 11.0, 0.25) is None  # within slack
    assert host_move("a", 1_000, 10.0, 20.0, 0.25) == Rebid("a", 50.0)


def test_parks_only_live_bids_left_by_the_plan() -> None:
    books = {"kept": Holding(100, NOW + 10, NOW), "left": Holding(100, NOW + 10, NOW),
             "idle": Holding(100, 0.0, NOW), "parked": Holding(100, NOW + 365 * 86_400, NOW)}
    assert parks(plan_of({"kept": 1.0}), books, NOW) == ["left"]


def test_settling_refunds_the_hosts_left_then_tops_up() -> None:
    plan = plan_of({"a": 10.0, "b": 10.0})
    assert drops(plan, {"a": 5, "gone": 7, "empty": 0}) == ["gone"]
    step = top_ups(plan, {"a": 1_000, "b": 950}, end=NOW + 100, now=NOW, allowance=10_000,
                   slack=0.1, refund_slack=0.5)
    assert step.targets == {"a": 1_000, "b": 1_000}
    assert step.needs == {} and not step.short  # b's 50 is within slack


def test_surpluses_pay_the_top_ups_the_bank_cannot() -> None:
    plan = plan_of({"a": 10.0, "b": 10.0, "c": 10.0})
    held = {"a": 0, "b": 5_000, "c": 2_000}  # target 1,000 each
    step = top_ups(plan, held, NOW + 100, NOW, allowance=200, slack=0.1, refund_slack=0.5)
    assert step.short and step.needs == {"a": 1_000}
    assert step.surplus == ("b",)  # the largest surplus covers the shortfall alone
    roomy = top_ups(plan, held, NOW + 100, NOW, allowance=None, slack=0.1, refund_slack=0.5)
    assert not roomy.short and roomy.surplus == ()


@given(rate=st.floats(0.01, 1e6), seconds=st.floats(1, 1e5), left=st.integers(0, 10**12),
       allowance=st.none() | st.integers(-10**6, 10**12))
@settings(max_examples=200, deadline=None)
def test_a_funding_never_exceeds_the_allowance_nor_the_target(
        rate: float, seconds: float, left: int, allowance: int | None) -> None:
    need = funding(rate, NOW + seconds, NOW, left, allowance, 0.1)
    assert isinstance(need, int) and need >= 0
    assert left + need <= max(int(rate * seconds), left)
    if allowance is not None:
        assert need <= max(allowance, 0)


# -- the runner with injected parts (no server) ----------------------------------------

class Bank:
    """An in-memory bank: our balance and each transfer's receipt, once per id."""

    def __init__(self, money: int) -> None:
        self.money = money
        self.receipts: dict[str, FakeReceipt] = {}

    async def balance(self) -> int:
        return self.money

    async def transfer(self, payee: str, amount: int, *, transfer_id: str,
                       memo: str = "") -> FakeReceipt:
        if transfer_id not in self.receipts:
            self.money -= amount
            self.receipts[transfer_id] = FakeReceipt(transfer_id, amount)
        return self.receipts[transfer_id]


async def test_the_runner_carries_out_the_cores_plan_with_injected_parts(
        tmp_path: Path) -> None:
    clock, ticks = Clock(), iter(range(10**6))
    identities = [Identity.generate() for _ in range(3)]
    hosts = {subject_id(i.public_key): FakeHost(clock, None) for i in identities}  # type: ignore[arg-type]
    bank = Bank(100 * MICRO)
    journal = Journal(tmp_path / "agent.db")
    allocator = Allocator("agent", bank, hosts.__getitem__, journal,  # type: ignore[arg-type]
                          clock=clock, timer=lambda: float(next(ticks)))
    rows = [{"host": subject_id(i.public_key), "public_key": i.public_key, "capacity": 1000,
             "price": 0.0} for i in identities]
    bus = StubBus()
    config = AgentConfig(budget=10 * MICRO, deadline_s=100)
    agent = Agent.from_parts(bus, config, AgentParts(journal, bank, StubSLS(rows),  # type: ignore[arg-type]
                                                     allocator),
                             clock=clock, timer=lambda: float(next(ticks)))
    assert agent.deadline == clock.now + 100  # the injected clock, kept in the journal
    await agent._discover()
    await agent._replan("start", force=True)
    assert agent.plan is not None and agent.plan.hosts == set(hosts)
    assert all(host.balance > 0 and host.expires > clock.now for host in hosts.values())
    assert bank.money + sum(h.balance for h in hosts.values()) == 100 * MICRO
    assert sum(h.balance for h in hosts.values()) <= config.budget
    kinds = [kind for _, kind, _ in bus.published]
    assert kinds[:2] == ["agent.plan", "agent.rebid"]
    await agent._settle_now_and_wait(supersede=True)
    journal.close()
