"""The broker, and an agent killed with SIGKILL that resumes without repeating money moves."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from polling import until

from tycoon.agent.broker import enroll
from tycoon.agent.launch import start_broker
from tycoon.bank.client import BankClient
from tycoon.bus.keys import KeyStore
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.testing.localmarket import start_market

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def wait_for_hosts(market, n: int) -> None:
    await until(lambda: len(market.sls.registry.live_hosts(time.time_ns())) >= n,
                timeout=10.0, every=0.1, what=f"{n} live hosts")


async def test_broker_runs_a_paid_job_and_returns_the_rest(nats_url: str, tmp_path: Path) -> None:
    market = await start_market(nats_url, tmp_path / "m", hosts=2, heartbeat_s=0.5)
    try:
        await wait_for_hosts(market, 2)
        broker_bus = await market.fund_user(0)
        running = await start_broker(broker_bus, bank_key=market.bank_key,
                                     state=tmp_path / "broker", fee_percent=5)
        broker = running.broker
        user = await market.fund_user(100 * MICRO)
        reply = await enroll(user, market.bank_key, broker_bus.identity.public_key,
                             20 * MICRO, "6s", transfer_id="job-1")
        assert reply["fee"] == 1 * MICRO and reply["budget"] == 19 * MICRO
        # the same receipt cannot enroll twice; a receipt paying someone else is refused
        bank = BankClient(user, market.bank_key)
        with pytest.raises(Rejected, match="already_redeemed"):
            again = await bank.transfer(broker_bus.identity.public_key, 20 * MICRO,
                                        transfer_id="job-1", memo="broker enrollment")
            await user.request(f"tycoon.broker.{broker.id}.enroll", "broker.enroll",
                               {"receipt": again.raw, "deadline": "6s"})
        elsewhere = await bank.transfer(market.hosts[0].identity.public_key, MICRO)
        with pytest.raises(Rejected, match="wrong_host"):
            await user.request(f"tycoon.broker.{broker.id}.enroll", "broker.enroll",
                               {"receipt": elsewhere.raw, "deadline": "6s"})
        for _ in range(150):
            status = await user.request(f"tycoon.broker.{broker.id}.status", "broker.status", {})
            jobs = status.body["jobs"]
            if jobs and jobs[0]["status"] == "done":
                break
            await asyncio.sleep(0.1)
        assert jobs[0]["status"] == "done", jobs
        returned = jobs[0]["refunded"]
        left = await bank.balance()
        # paid 20 (+1 to a host), got back what the job did not spend
        assert left == 100 * MICRO - 20 * MICRO - MICRO + returned
        assert await BankClient(broker_bus, market.bank_key).balance() == MICRO  # the fee
        money = market.money()
        assert money["minted"] == money["balances"]
        await running.stop()
    finally:
        await market.close()


async def test_agent_killed_and_restarted_repeats_no_payment(nats_url: str,
                                                             tmp_path: Path) -> None:
    market = await start_market(nats_url, tmp_path / "m", hosts=3, heartbeat_s=0.5)
    home = tmp_path / "home"
    try:
        await wait_for_hosts(market, 3)
        agent_key = KeyStore(home).create("agent")
        bus = await market.fund_user(50 * MICRO, agent_key)
        cmd = [sys.executable, "-m", "tycoon.cli.main", "--nats", nats_url, "--home", str(home),
               "--as", "agent", "agent", "run", "--budget", "30", "--deadline", "12s",
               "--replan", "1", "--bank", market.bank_key, "--state", str(home / "agents"),
               "--json"]
        env = {**os.environ, "TYCOON_LOG": "error"}
        first = await asyncio.create_subprocess_exec(*cmd, env=env,
                                                     stdout=asyncio.subprocess.PIPE)
        await asyncio.sleep(5)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        second = await asyncio.create_subprocess_exec(*cmd, env=env,
                                                      stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 0, out
        bank = BankClient(bus, market.bank_key)
        history = await bank.history(limit=1000)
        ids = [e.get("transfer_id") for e in history if e.get("transfer_id")]
        assert len(ids) == len(set(ids)), "a transfer id settled twice"
        spent = 50 * MICRO - await bank.balance()
        assert 0 < spent <= 30 * MICRO  # never more than the budget, across the crash
        for host in market.hosts:  # everything left at the hosts came back
            account = host.service.market.accounts.get(agent_key.public_key)
            assert account is None or account.balance == 0
        money = market.money()
        assert money["minted"] == money["balances"]
    finally:
        await market.close()
