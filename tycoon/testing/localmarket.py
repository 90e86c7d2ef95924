"""A whole market in one process: bank, SLS and simulated auctioneers on one NATS server.

Tests and benchmarks use it to stand up the real services through their launches (the
same wiring the ``serve`` commands run) without a process each. ``tycoon up`` runs them as
separate processes instead and does not use this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.auctioneer.service import AuctioneerService
from tycoon.bank.client import BankClient
from tycoon.bank.launch import RunningBank, start_bank
from tycoon.bank.ledger import Ledger
from tycoon.bank.service import BankService, ReceiptLog
from tycoon.bundles.launch import RunningStore, start_store
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity, host_id
from tycoon.sls.launch import RunningSLS, start_sls
from tycoon.sls.service import SLSConfig, SLSService
from tycoon.vmm.simulated import SimulatedDriver

PRESETS = ("small", "medium", "large")


@dataclass
class LocalHost:
    identity: Identity
    running: RunningAuctioneer
    driver: SimulatedDriver

    @property
    def service(self) -> AuctioneerService:
        return self.running.service

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
    store_identity: Identity | None = None
    """The bundle store's key (a fresh one if None; a permissioned server admits it, role
    ``store``)."""
    running_bank: RunningBank | None = None
    running_sls: RunningSLS | None = None
    running_store: RunningStore | None = None
    hosts: list[LocalHost] = field(default_factory=list)
    buses: list[Bus] = field(default_factory=list)

    @property
    def bank_key(self) -> str:
        return self.bank_identity.public_key

    @property
    def ledger(self) -> Ledger | None:
        return self.running_bank.ledger if self.running_bank else None

    @property
    def bank(self) -> BankService | None:
        return self.running_bank.service if self.running_bank else None

    @property
    def sls(self) -> SLSService | None:
        return self.running_sls.service if self.running_sls else None

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

    async def start_bank(self, settlement_log: Callable[[Bus], ReceiptLog] | None = None,
                         ) -> RunningBank:
        """The bank, its ledger in ``<state>/bank.db``."""
        self.running_bank = await start_bank(
            self.url, self.bank_identity, db=self.state / "bank.db",
            operator=self.operator.public_key, settlement_log=settlement_log)
        self.running_store = await start_store(  # bundles (their buckets: where JetStream runs)
            self.url, self.store_identity, db=self.state / "store.db")
        return self.running_bank

    async def start_sls(self, config: SLSConfig | None = None) -> RunningSLS:
        self.running_sls = await start_sls(self.url, None, config)
        return self.running_sls

    async def add_host(self, preset: str = "medium", *, identity: Identity | None = None,
                       tick_s: float = 0.2, heartbeat_s: float = 1.0,
                       connection: Bus | None = None) -> LocalHost:
        """Start one simulated auctioneer; with ``connection`` it signs with its own key
        but shares that bus's NATS connection (as a dense simulation does)."""
        ident = identity or Identity.generate()
        driver = SimulatedDriver(preset=preset, seed=len(self.hosts))
        where: str | Bus = Bus(connection.nc, ident) if connection is not None else self.url
        running = await start_auctioneer(
            where, ident, bank_key=self.bank_key, driver=driver,
            store_path=self.state / f"host-{host_id(ident.public_key)}.db",
            name=f"{preset}-{len(self.hosts) + 1}", tick_s=tick_s, heartbeat_s=heartbeat_s)
        await BankClient(running.bus, self.bank_key).open(exist_ok=True)  # open on return
        host = LocalHost(ident, running, driver)
        self.hosts.append(host)
        return host

    def money(self) -> dict[str, int]:
        """The bank's view of conservation: minted and the sum of balances."""
        assert self.ledger is not None
        return {"minted": self.ledger.minted, "balances": self.ledger.total_balances()}

    async def close(self) -> None:
        parts = [*(h.running for h in reversed(self.hosts)), self.running_sls,
                 self.running_store, self.running_bank]
        for part in parts:
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
        for bus in self.buses:
            with contextlib.suppress(Exception):
                await bus.close()


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
