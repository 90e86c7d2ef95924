"""Start one auctioneer: bus, market, store, bank client and service, in one call."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tycoon.auctioneer.jobhost import JobConfig
from tycoon.auctioneer.market import Market
from tycoon.auctioneer.service import AuctioneerService
from tycoon.auctioneer.store import MarketStore
from tycoon.bank.client import BankClient
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity
from tycoon.vmm.driver import Driver


@dataclass
class RunningAuctioneer:
    """A started auctioneer and what it owns; ``stop()`` releases all of it."""

    service: AuctioneerService
    bus: Bus
    store: MarketStore

    @property
    def market(self) -> Market:
        return self.service.market

    async def stop(self) -> None:
        """Drain requests, stop the loops, close the bus and the store."""
        try:
            await self.service.stop()
        finally:
            with contextlib.suppress(Exception):
                await self.bus.close()
            self.store.close()


async def start_auctioneer(
    url: str,
    identity: Identity,
    *,
    bank_key: str,
    driver: Driver,
    store_path: str | Path,
    name: str = "",
    tick_s: float = 1.0,
    heartbeat_s: float = 5.0,
    alloc_every_s: float = 0.25,
    durability: str = "full",
    clock: Callable[[], int] = time.time_ns,
    market_options: Mapping[str, Any] | None = None,
    jobs: JobConfig | None = None,
) -> RunningAuctioneer:
    """Connect as the host's key, load the market from ``store_path`` and start serving.

    ``market_options``: ``floor_price``, ``deposit``, ``idle_s`` of :class:`Market`;
    ``jobs``: run users' processes (docs/jobs.md)."""
    market = Market(
        host_key=identity.public_key, bank_key=bank_key, capacity=driver.capacity(),
        name=name, driver=getattr(driver, "name", type(driver).__name__), tick_s=tick_s,
        **(market_options or {}),
    )  # fmt: skip
    store = MarketStore(store_path, durability=durability)
    try:
        bus = await open_bus(url, identity, name=f"tycoon-auctioneer-{market.host_id}")
    except BaseException:
        store.close()
        raise
    bank = BankClient(bus, bank_key)
    service = AuctioneerService(
        bus, market, store, driver, bank, tick_s=tick_s, heartbeat_s=heartbeat_s,
        alloc_every_s=alloc_every_s, clock=clock, jobs=jobs,
    )
    try:
        await service.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await bus.close()
        store.close()
        raise
    return RunningAuctioneer(service, bus, store)
