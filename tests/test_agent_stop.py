"""An interrupted agent (Ctrl-C, SIGTERM: its run cancelled) stops within ``STOP_SETTLE_S``
however its settling goes: ``tycoon up`` gives each agent 10 s before SIGKILL. Money a
host holds that cannot come home in time stays in the journal for the next run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from test_agent_finish import _host_down, _market, _paid_agent

from tycoon.agent.journal import Journal
from tycoon.bank.client import BankClient


@pytest.mark.nats
@pytest.mark.timeout(60)
async def test_an_interrupted_agent_stops_in_time_with_a_host_down(
        nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tycoon.agent.agent as agent_module
    from tycoon.agent.agent import AgentConfig
    from tycoon.money import MICRO

    monkeypatch.setattr(agent_module, "STOP_SETTLE_S", 1.0)
    market = await _market(nats_url, tmp_path)
    try:
        # a long deadline and grace: before, a stop settled until the grace ended
        bus, key, _, task = await _paid_agent(market, tmp_path, AgentConfig(
            budget=10 * MICRO, deadline_s=600.0, replan_every_s=1.0, grace_s=180.0), 40)
        gone = await _host_down(market)  # its money cannot come home now
        started = time.perf_counter()
        task.cancel()
        await asyncio.wait({task}, timeout=10)
        took = time.perf_counter() - started
        assert task.done() and took < 1.0 + 1.5, f"stop took {took:.1f} s"
        journal = Journal(tmp_path / "agent.db")  # as the next run reads it
        assert journal.hosts_funded() >= {gone.id}  # the next run looks there
        # no credit lost or made: at the bank, at a host, or charged by one
        hosts = [*market.hosts, gone]
        held = sum(h.service.market.accounts[key].balance + h.service.market.accounts[key].spent
                   for h in hosts if key in h.service.market.accounts)
        pending = sum(m.amount for m in journal.pending() if m.kind == "refund")
        journal.close()
        bank = await BankClient(bus, market.bank_key).balance()
        assert bank + held + pending == 10 * MICRO
        assert gone.service.market.accounts[key].balance > 0
    finally:
        await market.close()


async def test_no_first_funding_below_the_deposit(tmp_path: Path) -> None:
    """A host refuses a first funding below its deposit once the bank paid it: that receipt
    could never be redeemed (and settling waited for it to the end of grace)."""
    from test_allocator import Market, start

    from tycoon.agent.allocator import MIN_FIRST_FUND

    m = Market(tmp_path, 10**6)
    await start(m, {"h0": (MIN_FIRST_FUND - 1) / 1_000, "h1": 100.0})
    assert m.hosts["h0"].balance == 0 and m.hosts["h1"].balance == 100_000
    assert m.journal.hosts_funded(pending=True) == {"h1"}
    await start(m, {"h1": (MIN_FIRST_FUND - 1) / 1_000})  # a top-up may be smaller
    assert not m.journal.pending() and m.money() == 10**6
