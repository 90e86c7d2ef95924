"""A one-host market (real nats-server, real bank) whose auctioneer runs jobs, for the jobs
tests: tests/test_jobs_bus.py (simulated driver) and tests/test_jobs_cgroups.py (cgroups)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bank_kit import funded_user

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.jobclient import JobClient
from tycoon.auctioneer.jobhost import JobConfig, JobHost
from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bank.launch import start_bank
from tycoon.bus.connection import Bus
from tycoon.bus.keys import Identity, subject_id
from tycoon.money import MICRO


@dataclass
class User:
    ident: Identity
    bank: BankClient
    host: AuctioneerClient
    jobs: JobClient

    @property
    def key(self) -> str:
        return self.ident.public_key

    async def fund_and_bid(self, credits: float, bid: str = "cpu:1,0,1.0",
                           duration: str = "1h") -> dict[str, Any]:
        receipt = await self.bank.transfer(await self.host.host_key(), int(credits * MICRO))
        await self.host.fund(receipt)
        return await self.host.bid(bid, duration)


@dataclass
class JobMarket:
    url: str
    host_id: Identity
    bank_id: Identity
    operator: Identity
    auctioneer: RunningAuctioneer
    buses: list[Bus] = field(default_factory=list)

    @property
    def host(self) -> str:
        return subject_id(self.host_id.public_key)

    @property
    def jobhost(self) -> JobHost:
        jobs = self.auctioneer.service.jobs
        assert jobs is not None
        return jobs

    async def user(self, credits: int = 1000) -> User:
        ident, bus, bank = await funded_user(self.url, self.bank_id.public_key, self.operator,
                                             self.buses, credits)
        return User(ident, bank, AuctioneerClient(bus, self.host, timeout=5.0),
                    JobClient(bus, self.host, timeout=5.0))


@contextlib.asynccontextmanager
async def job_market(url: str, tmp: Path, driver: Any, jobs: JobConfig,
                     tick_s: float = 0.1, **market_options: Any) -> AsyncIterator[JobMarket]:
    """Bank + one auctioneer with ``driver`` running jobs as ``jobs`` says."""
    bank_id, operator, host_id = Identity.generate(), Identity.generate(), Identity.generate()
    bank = await start_bank(url, bank_id, db=tmp / "bank.db", operator=operator.public_key)
    auctioneer = await start_auctioneer(
        url, host_id, bank_key=bank_id.public_key, driver=driver, store_path=tmp / "host.db",
        name="h1", tick_s=tick_s, heartbeat_s=0.5, jobs=jobs, market_options=market_options,
    )
    await BankClient(auctioneer.bus, bank_id.public_key).open(exist_ok=True)
    market = JobMarket(url, host_id, bank_id, operator, auctioneer)
    try:
        yield market
    finally:
        for bus in market.buses:
            await bus.close()
        with contextlib.suppress(Exception):  # a stop leaves jobs running (re-adopted later)
            await market.jobhost.end_all()
        with contextlib.suppress(Exception):  # the one running now (a test may restart it)
            await market.auctioneer.stop()
        await bank.stop()


async def until(check: Any, timeout: float = 10.0, step: float = 0.05) -> Any:
    """Poll ``check()`` until truthy (returns it) or fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        await asyncio.sleep(step)
