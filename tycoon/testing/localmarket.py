"""A whole market in one process: bank, SLS and simulated auctioneers on one NATS server.

Tests, benchmarks and the scale run use it to stand up the real services (the same
classes the daemons run) without a process each. ``tycoon up`` runs them as separate
processes instead.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from tycoon.auctioneer.market import Market
from tycoon.auctioneer.service import AuctioneerService
from tycoon.auctioneer.store import MarketStore
from tycoon.bank.client import BankClient
from tycoon.bank.ledger import Ledger
from tycoon.bank.service import BankService
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity, host_id
from tycoon.sls.service import SLSConfig, SLSService
from tycoon.vmm.simulated import SimulatedDriver

PRESETS = ("small", "medium", "large")


@dataclass
class LocalHost:
    identity: Identity
    service: AuctioneerService
    driver: SimulatedDriver

    @property
    def id(self) -> str:
        return host_id(self.identity.public_key)


@dataclass
class LocalMarket:
    """Handles on every in-process service; ``close()`` stops them all."""

    url: str
    state: Path
    bank_identity: Identity
    operator: Identity
    ledger: Ledger | None = None
    bank: BankService | None = None
    sls: SLSService | None = None
    hosts: list[LocalHost] = field(default_factory=list)
    buses: list[Bus] = field(default_factory=list)

    @property
    def bank_key(self) -> str:
        return self.bank_identity.public_key

    async def bus(self, identity: Identity | None = None) -> Bus:
        """A bus for a new (or given) principal, closed with the market."""
        bus = await open_bus(self.url, identity or Identity.generate())
        self.buses.append(bus)
        return bus

    async def fund_user(self, amount: int, identity: Identity | None = None) -> Bus:
        """A new user whose bank account holds ``amount`` micro-credits."""
        bus = await self.bus(identity)
        await BankClient(bus, self.bank_key).open(exist_ok=True)
        if amount > 0:
            operator = BankClient(await self.bus(self.operator), self.bank_key)
            await operator.mint(bus.identity.public_key, amount)
        return bus

    async def start_bank(self) -> None:
        self.ledger = Ledger(SqliteStore(self.state / "bank.db"), self.bank_identity,
                             operator=self.operator.public_key)
        self.bank = BankService(await self.bus(self.bank_identity), self.ledger)
        await self.bank.start()

    async def start_sls(self, config: SLSConfig | None = None) -> None:
        self.sls = SLSService(await self.bus(), config)
        await self.sls.start()

    async def add_host(self, preset: str = "medium", *, identity: Identity | None = None,
                       tick_s: float = 0.2, heartbeat_s: float = 1.0,
                       connection: Bus | None = None) -> LocalHost:
        """Start one simulated auctioneer; with ``connection`` it signs with its own key
        but shares that bus's NATS connection (as a dense simulation does)."""
        ident = identity or Identity.generate()
        driver = SimulatedDriver(preset=preset, seed=len(self.hosts))
        market = Market(host_key=ident.public_key, bank_key=self.bank_key,
                        capacity=driver.capacity(), name=f"{preset}-{len(self.hosts) + 1}",
                        driver="simulated")
        store = MarketStore(self.state / f"host-{host_id(ident.public_key)}.db")
        bus = Bus(connection.nc, ident) if connection is not None else await self.bus(ident)
        bank = BankClient(bus, self.bank_key)
        await bank.open(exist_ok=True)
        service = AuctioneerService(bus, market, store, driver, bank, tick_s=tick_s,
                                    heartbeat_s=heartbeat_s)
        await service.start()
        host = LocalHost(ident, service, driver)
        self.hosts.append(host)
        return host

    def money(self) -> dict[str, int]:
        """The bank's view of conservation: minted and the sum of balances."""
        assert self.ledger is not None
        return {"minted": self.ledger.minted, "balances": self.ledger.total_balances()}

    async def close(self) -> None:
        for host in reversed(self.hosts):
            with contextlib.suppress(Exception):
                await host.service.stop()
        if self.sls is not None:
            with contextlib.suppress(Exception):
                await self.sls.stop()
        if self.bank is not None:
            with contextlib.suppress(Exception):
                await self.bank.stop()
        for bus in self.buses:
            with contextlib.suppress(Exception):
                await bus.close()
        if self.ledger is not None:
            self.ledger.store.close()


async def start_market(url: str, state: Path, hosts: int = 5, *,
                       presets: tuple[str, ...] = PRESETS, tick_s: float = 0.2,
                       heartbeat_s: float = 1.0) -> LocalMarket:
    """Bank, SLS and ``hosts`` simulated auctioneers on the server at ``url``."""
    state.mkdir(parents=True, exist_ok=True)
    market = LocalMarket(url, state, Identity.generate(), Identity.generate())
    await market.start_bank()
    await market.start_sls()
    for i in range(hosts):
        await market.add_host(presets[i % len(presets)], tick_s=tick_s, heartbeat_s=heartbeat_s)
    return market
