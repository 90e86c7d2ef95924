"""The agent's money comes home: recorded receipts, refunds paid by hosts on their own,
silent hosts as unknown, settling only after the deadline (pure: in-memory hosts and bank,
see test_allocator)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from polling import until
from test_allocator import Market, start

from tycoon.agent.finish import bring_home
from tycoon.bank.client import BankClient
from tycoon.errors import Rejected


def down(host: Any) -> None:
    async def silent(*_: Any, **__: Any) -> dict[str, Any]:
        raise Rejected("unavailable", "no service answers")

    for op in ("account", "fund", "bid", "refund", "status"):
        setattr(host, op, silent)


def up(host: Any) -> None:
    for op in ("account", "fund", "bid", "refund", "status"):
        host.__dict__.pop(op, None)


async def test_a_receipt_is_journalled_before_the_host_sees_it(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    down(m.hosts["h0"])
    await start(m, {"h0": 100.0})
    (move,) = m.journal.pending()
    assert move.receipt is not None  # paid, journalled, not redeemed
    m.bank.down = True  # the receipt alone completes it: no bank needed
    up(m.hosts["h0"])
    assert await m.allocator.recover() == 1
    assert not m.journal.pending() and m.hosts["h0"].balance == 100_000
    assert len(m.bank.settled) == 1


async def test_a_refund_the_host_paid_on_its_own_is_recorded(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    await start(m, {"h0": 100.0})
    host = m.hosts["h0"]
    move = m.journal.begin("agent.9.h0.r", 9, "h0", m.payees["h0"], "refund", 0)
    # the refund request reached the host, the bank was down, the host paid it later
    host.balance, host.expires = 0, 0.0
    m.bank.pay_us(host.key, 100_000, "refund-by-host")
    assert await m.allocator.recover() == 1
    done = m.journal.move(move.id)
    assert done is not None and done.status == "done" and done.amount == 100_000
    assert m.journal.net_paid_out() == 0
    # learnt again (another no_funds), it counts once
    again = m.journal.begin("agent.10.h0.r", 10, "h0", m.payees["h0"], "refund", 0)
    await m.allocator.recover()
    assert m.journal.move(again.id).amount == 0  # type: ignore[union-attr]
    assert m.journal.net_paid_out() == 0


async def test_an_unreachable_host_is_unknown_not_empty(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    await start(m, {"h0": 100.0, "h1": 100.0})
    down(m.hosts["h1"])
    held = await m.allocator.balances(["h0", "h1"])
    assert held == {"h0": 100_000} and m.allocator.unreachable == {"h1"}


async def test_settling_only_pays_nothing_new(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    never = m.journal.begin("agent.1.h0.f", 1, "h0", m.payees["h0"], "fund", 5_000)
    paid = m.journal.begin("agent.1.h1.f", 1, "h1", m.payees["h1"], "fund", 7_000)
    await m.bank.transfer(m.payees["h1"], 7_000, transfer_id=paid.id)  # then the crash
    m.allocator.settle_only = True
    await m.allocator.recover()
    assert m.journal.move(never.id).status == "failed"  # type: ignore[union-attr]
    assert set(m.bank.settled) == {paid.id}  # the unpaid top-up is not replayed
    assert m.hosts["h1"].balance == 7_000 and not m.journal.pending()


async def test_bring_home_waits_for_a_silent_host_within_grace(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    await start(m, {"h0": 100.0, "h1": 100.0})
    m.clock.now += 100
    silent = m.hosts["h1"]
    down(silent)
    rounds = 0
    real_status = type(silent).status

    async def comes_back() -> dict[str, Any]:
        nonlocal rounds
        rounds += 1
        if rounds < 3:
            raise Rejected("timeout", "no reply")
        up(silent)
        return await real_status(silent)

    silent.status = comes_back  # type: ignore[method-assign]
    hosts = lambda: ["h0", "h1"]  # noqa: E731
    accounting = await bring_home(m.allocator, m.journal, hosts, new_epoch=m.journal.next_epoch,
                                  until=m.clock() + 60, clock=m.clock, pause=(0.01, 0.01))
    assert accounting.outstanding == []
    assert m.hosts["h0"].balance == m.hosts["h1"].balance == 0
    assert accounting.refunded + accounting.spent == accounting.funded == 200_000
    assert m.bank.balance == 10**6 - accounting.spent


async def test_bring_home_reports_what_is_away_at_the_end_of_grace(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    await start(m, {"h0": 100.0, "h1": 100.0})
    down(m.hosts["h1"])
    m.clock.now += 10
    accounting = await bring_home(m.allocator, m.journal, lambda: ["h0", "h1"],
                                  new_epoch=m.journal.next_epoch, until=m.clock(),
                                  clock=m.clock, pause=(0.01, 0.01))
    (away,) = accounting.outstanding
    assert (away.host, away.what, away.amount) == ("h1", "unknown", 100_000)
    assert m.hosts["h0"].balance == 0  # the reachable host was settled
    # spent is a lower bound while a host is unknown: h0's charge only
    assert accounting.spent == 100_000 - accounting.refunded


# -- with real services on a real nats-server ------------------------------------------


async def _market(nats_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    from tycoon.testing.localmarket import start_market

    market = await start_market(nats_url, tmp_path / "m", hosts=2, presets=("small",),
                                heartbeat_s=0.5)
    for _ in range(100):
        if len(market.sls.registry.live_hosts(time.time_ns())) >= 2:
            return market
        await asyncio.sleep(0.1)
    raise AssertionError("hosts did not register")


async def _agent_paid(market: Any, key: str) -> list[Any]:
    """The agent's payments to hosts (every host ever started), from the ledger."""
    return [e for e in market.ledger.store.events()
            if e.kind == "transfer" and e.payer == key and e.memo.startswith("fund")]


async def _paid_and_redeemed(market: Any, key: str) -> bool:
    """Two payments or more, each redeemed at its host: no receipt on its way (a host stopped
    now holds the agent's money; stopped mid-funding it would leave a receipt instead)."""
    paid = await _agent_paid(market, key)
    redeemed = sum(h.service.market.accounts[key].funded for h in market.hosts
                   if key in h.service.market.accounts)
    return len(paid) >= 2 and sum(e.amount for e in paid) == redeemed


async def _paid_agent(market: Any, tmp_path: Path, config: Any,
                      timeout: float = 60) -> tuple[Any, str, Any, asyncio.Task[Any]]:
    """A user funded with ``config.budget`` runs an agent (journal ``tmp_path/agent.db``)
    until it paid two hosts, each payment redeemed: (bus, key, agent, its task)."""
    from tycoon.agent.agent import Agent

    bus = await market.fund_user(config.budget)
    key = bus.identity.public_key
    agent = Agent(bus, market.bank_key, config, tmp_path / "agent.db")
    task = asyncio.create_task(agent.run())
    await until(lambda: _paid_and_redeemed(market, key), timeout=timeout, what="paid twice")
    return bus, key, agent, task


async def _host_down(market: Any) -> Any:
    """Stop the market's second host, holding the agent's money; its bus is closed with the
    market (else it hung teardown)."""
    gone = market.hosts.pop(1)
    market.buses.append(gone.running.bus)
    await gone.service.stop()
    return gone


def _charged(market: Any, key: str) -> int:
    return sum(h.service.market.accounts[key].spent for h in market.hosts
               if key in h.service.market.accounts)


@pytest.mark.nats
@pytest.mark.timeout(120)
async def test_agent_waits_for_a_host_down_at_its_deadline(nats_url: str,
                                                           tmp_path: Path) -> None:
    from tycoon.agent.agent import AgentConfig
    from tycoon.money import MICRO

    market = await _market(nats_url, tmp_path)
    try:
        bus, key, agent, task = await _paid_agent(market, tmp_path, AgentConfig(
            budget=10 * MICRO, deadline_s=5.0, replan_every_s=1.0, grace_s=60.0))
        gone = await _host_down(market)  # down across the deadline, back 4 s after it
        await asyncio.sleep(max(agent.deadline - time.time(), 0) + 4)
        assert not task.done()  # still settling: the host's money is unknown, not zero
        await market.add_host("small", identity=gone.identity, heartbeat_s=0.5)
        summary = await asyncio.wait_for(task, 30)
        assert summary.outstanding == []
        bank = await BankClient(bus, market.bank_key).balance()
        assert bank + _charged(market, key) == 10 * MICRO
        assert summary.spent == _charged(market, key)
        assert summary.refunded == summary.funded - summary.spent
        assert all(h.service.market.accounts[key].balance == 0 for h in market.hosts
                   if key in h.service.market.accounts)
    finally:
        await market.close()


@pytest.mark.nats
@pytest.mark.timeout(120)
async def test_money_away_at_the_end_of_grace_is_reported_and_a_rerun_only_settles(
        nats_url: str, tmp_path: Path) -> None:
    from tycoon.agent.agent import Agent, AgentConfig
    from tycoon.money import MICRO

    market = await _market(nats_url, tmp_path)
    try:
        config = AgentConfig(budget=10 * MICRO, deadline_s=4.0, replan_every_s=1.0,
                             grace_s=1.0)
        bus, key, _, task = await _paid_agent(market, tmp_path, config)
        gone = await _host_down(market)
        summary = await asyncio.wait_for(task, 30)
        (away,) = summary.outstanding
        assert away["host"] == gone.id and away["what"] == "unknown" and away["amount"] > 0
        paid = len(await _agent_paid(market, key))
        await market.add_host("small", identity=gone.identity)
        again = await Agent(bus, market.bank_key, config, tmp_path / "agent.db").run()
        assert again.outstanding == []
        assert len(await _agent_paid(market, key)) == paid  # the rerun funded nothing
        bank = await BankClient(bus, market.bank_key).balance()
        assert bank + _charged(market, key) == 10 * MICRO
        assert again.spent == _charged(market, key)
    finally:
        await market.close()


@pytest.mark.nats
@pytest.mark.timeout(120)
async def test_agent_run_exits_3_while_money_is_away_and_0_once_home(nats_url: str,
                                                                      tmp_path: Path) -> None:
    """`tycoon agent run` (a real process): exit 3 listing what is away at the end of
    grace; the same command run again once the host is back settles and exits 0."""
    import json

    from faults_kit import Proc

    from tycoon.bus.keys import KeyStore
    from tycoon.money import MICRO

    market = await _market(nats_url, tmp_path)
    try:
        home = tmp_path / "home"
        ident = KeyStore(home).create("agent")
        await market.fund_user(10 * MICRO, ident)
        agent = Proc("agent", nats_url, home, "--as", "agent", "agent", "run", "--json",
                     "--budget", "10", "--deadline", "6s", "--replan", "1", "--grace", "1s",
                     "--state", str(tmp_path / "agents"), "--bank", market.bank_key)
        await agent.start(ready=False)
        await until(lambda: _paid_and_redeemed(market, ident.public_key), timeout=60,
                    what="paid twice")
        gone = await _host_down(market)
        assert agent.proc is not None
        assert await asyncio.wait_for(agent.proc.wait(), 60) == 3
        summary = json.loads(agent.text(agent.offset).strip().splitlines()[-1])
        assert [(o["host"], o["what"]) for o in summary["outstanding"]] == [(gone.id, "unknown")]
        await market.add_host("small", identity=gone.identity)
        await agent.start(ready=False)
        assert await asyncio.wait_for(agent.proc.wait(), 60) == 0
        summary = json.loads(agent.text(agent.offset).strip().splitlines()[-1])
        assert summary["outstanding"] == []
        bank = await BankClient(await market.bus(ident), market.bank_key).balance()
        assert bank + _charged(market, ident.public_key) == 10 * MICRO
    finally:
        await market.close()
