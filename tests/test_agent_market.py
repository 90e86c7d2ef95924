"""Agents against a real market: bank, SLS and five simulated auctioneers over nats-server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from polling import until

from tycoon.agent.agent import Agent, AgentConfig
from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.views import account_view
from tycoon.bank.client import BankClient
from tycoon.bus import subjects
from tycoon.bus.envelope import Message
from tycoon.money import MICRO
from tycoon.testing.localmarket import start_market

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def wait_for_hosts(market, n: int, timeout: float = 10.0) -> None:
    await until(lambda: len(market.sls.registry.live_hosts(time.time_ns())) >= n,
                timeout=timeout, every=0.1, what=f"{n} live hosts")


async def host_money(market) -> int:
    """Unspent host-account balances plus host earnings: money the hosts hold."""
    return sum(h.service.market.funded - h.service.market.refunded for h in market.hosts)


async def test_budgets_1_2_4_buy_shares_in_that_order(nats_url: str, tmp_path: Path) -> None:
    market = await start_market(nats_url, tmp_path, hosts=5, tick_s=0.2, heartbeat_s=0.5)
    try:
        await wait_for_hosts(market, 5)
        budgets = [10 * MICRO, 20 * MICRO, 40 * MICRO]
        users = [await market.fund_user(100 * MICRO) for _ in budgets]
        events: list[Message] = []

        async def on_agent(msg: Message) -> None:
            events.append(msg)

        watcher = await market.bus()
        await watcher.subscribe(subjects.AGENTS_ALL, on_agent)
        agents = [
            Agent(bus, market.bank_key, AgentConfig(budget=b, deadline_s=8.0, replan_every_s=2,
                                                    refund_margin_s=1.0),
                  tmp_path / f"agent-{i}.db")
            for i, (bus, b) in enumerate(zip(users, budgets, strict=True))
        ]
        runs = [asyncio.create_task(a.run()) for a in agents]
        await asyncio.sleep(3.0)
        # mid-run, sampled: the cpu (MHz) each agent holds over all hosts
        totals = [0.0] * len(agents)
        for _ in range(10):
            for n, agent in enumerate(agents):
                me = agent.bus.identity.public_key
                totals[n] += sum(account_view(h.service.market, me)["cpu"]
                                 * h.service.market.capacity.cpu
                                 for h in market.hosts if me in h.service.market.accounts)
            await asyncio.sleep(0.2)
        assert totals[0] < totals[1] < totals[2], totals
        summaries = await asyncio.gather(*runs)
        for summary, budget in zip(summaries, budgets, strict=True):
            assert 0 < summary.paid_out <= budget
        # leftovers came back: no host account of any agent keeps money
        for agent in agents:
            me = agent.bus.identity.public_key
            for h in market.hosts:
                acc = h.service.market.accounts.get(me)
                assert acc is None or acc.balance == 0
        # each spent at most its budget, as the bank sees it
        for bus, budget in zip(users, budgets, strict=True):
            left = await BankClient(bus, market.bank_key).balance()
            assert 100 * MICRO - budget <= left <= 100 * MICRO
        money = market.money()
        assert money["minted"] == money["balances"]
        kinds = {m.kind for m in events}
        assert {"agent.plan", "agent.rebid", "agent.done"} <= kinds
    finally:
        await market.close()


async def test_price_jump_moves_the_agent_within_seconds(nats_url: str, tmp_path: Path) -> None:
    market = await start_market(nats_url, tmp_path, hosts=3, presets=("medium",),
                                tick_s=0.2, heartbeat_s=0.5)
    try:
        await wait_for_hosts(market, 3)
        user = await market.fund_user(100 * MICRO)
        agent = Agent(user, market.bank_key,
                      AgentConfig(budget=20 * MICRO, deadline_s=12.0, replan_every_s=60,
                                  refund_margin_s=1.0), tmp_path / "agent.db")
        run = asyncio.create_task(agent.run())
        await asyncio.sleep(2.5)
        assert agent.plan is not None and len(agent.plan.hosts) == 3
        target = market.hosts[0]
        before = agent.plan.balances[target.id]
        reactions = len(agent.summary.rebid_latencies_ms)
        # a competitor bids on one host about as much as the agent spends there
        rival = await market.fund_user(1000 * MICRO)
        receipt = await BankClient(rival, market.bank_key).transfer(
            target.identity.public_key, 60 * MICRO)
        client = AuctioneerClient(rival, target.id)
        await client.fund(receipt)
        await client.bid("cpu:1,0,1", "60s")
        for _ in range(50):
            await asyncio.sleep(0.1)
            if len(agent.summary.rebid_latencies_ms) > reactions:
                break
        assert len(agent.summary.rebid_latencies_ms) > reactions, "no reaction to the jump"
        assert all(answer >= placed for placed, answer in zip(
            agent.summary.rebid_latencies_ms, agent.summary.answer_latencies_ms, strict=True))
        # Best Response: the others' host stays nearly free, so the money moves to the
        # contested host to win back share there.
        assert agent.plan.balances.get(target.id, 0) > before * 1.1
        await run
    finally:
        await market.close()


async def test_probability_plans_against_price_quantiles(nats_url: str, tmp_path: Path) -> None:
    market = await start_market(nats_url, tmp_path, hosts=2, presets=("medium",),
                                tick_s=0.2, heartbeat_s=0.3)
    try:
        await wait_for_hosts(market, 2)
        first = await market.fund_user(100 * MICRO)
        busy = Agent(first, market.bank_key, AgentConfig(budget=20 * MICRO, deadline_s=10.0,
                                                         refund_margin_s=1.0),
                     tmp_path / "busy.db")
        running = asyncio.create_task(busy.run())
        await asyncio.sleep(3.0)  # price history builds up in the SLS
        plans: list[Message] = []

        async def on_plan(msg: Message) -> None:
            plans.append(msg)

        second = await market.fund_user(100 * MICRO)
        careful = Agent(second, market.bank_key,
                        AgentConfig(budget=10 * MICRO, deadline_s=4.0, refund_margin_s=1.0,
                                    probability=0.9, model="normal"), tmp_path / "careful.db")
        watcher = await market.bus()
        await watcher.subscribe(subjects.agent(careful.id, "plan"), on_plan)
        await careful.run()
        assert careful._predictions, "no price statistics reached the agent"
        assert plans and plans[0].body["probability"] == 0.9
        assert isinstance(plans[0].body["cushion"], int) and plans[0].body["cushion"] >= 0
        await running
    finally:
        await market.close()


async def test_agent_follows_prices_of_hosts_in_play_and_a_few_more(nats_url: str,
                                                                    tmp_path: Path) -> None:
    market = await start_market(nats_url, tmp_path, hosts=12, tick_s=0.5, heartbeat_s=0.5)
    try:
        await wait_for_hosts(market, 12)
        user = await market.fund_user(100 * MICRO)
        agent = Agent(user, market.bank_key,
                      AgentConfig(budget=20 * MICRO, deadline_s=6.0, max_hosts=2,
                                  replan_every_s=60, refund_margin_s=1.0),
                      tmp_path / "agent.db")
        run = asyncio.create_task(agent.run())
        for _ in range(50):
            await asyncio.sleep(0.1)
            if agent.plan is not None:
                break
        assert agent.plan is not None and 1 <= len(agent.plan.hosts) <= 2
        followed = {k for k in agent._subscriptions if not k.startswith("alloc.")}
        assert agent.plan.hosts <= followed
        assert len(followed) == len(agent.plan.hosts) + 5  # the 5 best others besides
        assert len(agent.quotes) == 12  # the rest are known from the SLS
        # the price of each planned host is the one its reply to our bid gave (its price
        # updates of our own doing are dropped unread while the bid is in flight)
        by_id = {h.id: h for h in market.hosts}
        for host in agent.plan.hosts:
            ours = by_id[host].service.market
            assert agent.quotes[host].price == pytest.approx(float(ours.rates[0].sum()),
                                                             rel=0.05)
            assert agent.quotes[host].price > 0
        await run
    finally:
        await market.close()
