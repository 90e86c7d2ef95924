"""Start one auctioneer: bus, market, store, bank client and service, in one call.

``start_auctioneer`` returns a :class:`RunningAuctioneer`; ``launch`` is the same as an
async context manager. ``tycoon auctioneer serve``, the tests and the benchmarks start
auctioneers only this way (see ``tycoon/bus/launch.py``).
"""

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
from tycoon.bus import ratelimit
from tycoon.bus.connection import Bus
from tycoon.bus.keys import Identity, host_id
from tycoon.bus.launch import Where, as_context, bus_for, close_owned, stop_quietly
from tycoon.bus.ratelimit import RateLimit
from tycoon.vmm.driver import Driver


@dataclass
class RunningAuctioneer:
    """A started auctioneer and what it owns; ``stop()`` releases all of it."""

    service: AuctioneerService
    bus: Bus
    store: MarketStore
    owns_bus: bool = True

    @property
    def market(self) -> Market:
        return self.service.market

    @property
    def driver(self) -> Driver:
        return self.service.driver

    async def stop(self) -> None:
        """Drain requests, stop the loops, close the bus (if it opened it) and the store."""
        try:
            await self.service.stop()
        finally:
            await close_owned(self.bus, self.owns_bus)
            self.store.close()


async def start_auctioneer(
    where: Where,
    identity: Identity | None = None,
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
    rate_limit: RateLimit | None = ratelimit.AUCTIONEER,
    bank_timeout: float = 5.0,
) -> RunningAuctioneer:
    """Connect as the host's key (or run on the open bus ``where``), load the market from
    ``store_path`` and start serving.

    ``market_options``: ``floor_price``, ``deposit``, ``idle_s`` of :class:`Market`;
    ``jobs``: run users' processes (docs/jobs.md); ``rate_limit``: per signer key (None:
    off)."""
    key = identity.public_key if identity is not None else \
        where.identity.public_key if isinstance(where, Bus) else ""
    market = Market(
        host_key=key, bank_key=bank_key, capacity=driver.capacity(),
        name=name, driver_name=getattr(driver, "name", type(driver).__name__), tick_s=tick_s,
        **(market_options or {}),
    )  # fmt: skip
    async with contextlib.AsyncExitStack() as undo:  # unwound only if starting fails
        store = MarketStore(store_path, durability=durability)
        undo.callback(store.close)
        bus, owned = await bus_for(where, identity, f"tycoon-auctioneer-{host_id(key)}")
        undo.push_async_callback(close_owned, bus, owned)
        service = AuctioneerService(
            bus, market, store, driver, BankClient(bus, bank_key, timeout=bank_timeout),
            tick_s=tick_s, heartbeat_s=heartbeat_s, alloc_every_s=alloc_every_s, clock=clock,
            jobs=jobs,
        )  # fmt: skip
        service.service.set_rate_limit(rate_limit)
        undo.push_async_callback(stop_quietly, service)
        await service.start()
        undo.pop_all()
    return RunningAuctioneer(service, bus, store, owned)


launch = as_context(start_auctioneer)
"""``async with launch(url, identity, bank_key=…, driver=…, store_path=…) as running:``"""
