"""The agent benchmark in one process, no server: the real AgentCore and Allocator (and
its journal, fsync included) against in-memory hosts and bank.

The hosts and bank are the allocator tests' fakes (tests/test_allocator.py: a bid spends
its balance evenly until it expires, a receipt is redeemed once, a refund returns the
whole balance), with a rival's rate on each host: its price is every bid rate on it.
What is measured is the agent's own work: deciding, journalling and the allocator's
moves, with no network.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tycoon.agent.allocator import Allocator
from tycoon.agent.core import AgentConfig, AgentCore, Reading
from tycoon.agent.journal import Journal
from tycoon.bus.keys import Identity, subject_id
from tycoon.money import MICRO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_allocator import FakeBank, FakeHost  # the allocator tests' fakes


class Host(FakeHost):
    """The allocator tests' in-memory host, with a rival's rate and a price in bid replies."""

    def __init__(self, bank: FakeBank, capacity: float) -> None:
        super().__init__(time.time, bank)  # type: ignore[arg-type]
        self.capacity = capacity
        self.others = 0.0

    def price(self) -> float:
        return self.others + self.rate()

    async def bid(self, spec: str, duration: str) -> dict[str, Any]:
        reply = await super().bid(spec, duration)
        return {**reply, "prices": {"cpu": self.price()}}


async def run_local(hosts: int, jumps: int, width: int) -> dict[str, list[float] | float | int]:
    """Acquire ``hosts`` from nothing, then answer ``jumps`` rival jumps of ``width`` hosts;
    times in seconds (acquire) and milliseconds (the rest)."""
    config = AgentConfig(budget=5_000 * MICRO, deadline_s=600, candidates=hosts)
    bank = FakeBank(10_000 * MICRO)
    keys = [Identity.generate().public_key for _ in range(hosts)]
    ids = [subject_id(k) for k in keys]
    market = {h: Host(bank, 1_000.0 * (1 + i % 4)) for i, h in enumerate(ids)}
    for key, host in zip(keys, market.values(), strict=True):
        host.key = key
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "agent.db")
        allocator = Allocator("agent", bank, market.__getitem__, journal,  # type: ignore[arg-type]
                              resource=config.resource)
        core = AgentCore(config, time.time() + config.deadline_s)
        allocator.on_bid = lambda h, reply: core.bid_reply(h, reply["prices"]["cpu"])

        async def replan(*, exact: bool, force: bool = False) -> tuple[float | None, float]:
            changed_at = core.take_change()
            evaluation = core.evaluate(allocator.holdings, time.time())
            if exact:
                held = await allocator.balances(sorted(allocator.holdings))
                allocator.bank_balance = bank.balance
            else:
                held = allocator.held()
            assert allocator.bank_balance is not None
            decision = core.decide(evaluation, Reading(held, allocator.bank_balance,
                                                       journal.committed_out(), exact),
                                   time.perf_counter(), force=force)
            if decision.plan is None:
                return None, 0.0
            epoch = journal.next_epoch()
            outcome = await allocator.retarget(decision.plan, epoch, core.payees,
                                               evaluation.end, budget=config.budget)
            answered = time.perf_counter()
            core.adopt(decision.plan)
            placed = outcome.placed_at
            if changed_at is None or placed is None:
                return None, 0.0
            return (placed - changed_at) * 1000, (answered - changed_at) * 1000

        started = time.perf_counter()
        core.candidates([{"host": h, "public_key": k, "capacity": market[h].capacity,
                          "price": 0.0} for h, k in zip(ids, keys, strict=True)],
                        followed=set())
        await replan(exact=True, force=True)
        acquire = time.perf_counter() - started
        acquired = len(core.plan.hosts) if core.plan else 0
        rebids: list[float] = []
        answers: list[float] = []
        for n in range(jumps):
            jumped = [ids[(n * width + k) % hosts] for k in range(width)]
            for host in jumped:  # a rival's 2,000 credits for 600 s on each
                market[host].others += 2_000 * MICRO / 600
            for host in jumped:  # its price updates reach the agent
                core.price(host, None, market[host].price(), allocator.holdings, time.time(),
                           time.perf_counter())
            if core.changed_at is not None:
                rebid, answer = await replan(exact=False)
                if rebid is not None:
                    rebids.append(rebid)
                    answers.append(answer)
        settle = []
        if core.plan is not None:
            began = time.perf_counter()
            await allocator.settle(core.plan, journal.next_epoch(), core.payees,
                                   core.deadline - config.refund_margin_s, budget=config.budget)
            settle.append((time.perf_counter() - began) * 1000)
        journal.close()
    await asyncio.sleep(0)
    return {"acquire": acquire, "acquired": acquired, "rebids": rebids, "answers": answers,
            "settle": settle}
