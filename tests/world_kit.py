"""What the hostile tests' worlds share: a cast on its server, one bus per identity (opened
on first use, closed at the end), the cast's users by name, and a running bank."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostile_kit import Cast

from tycoon.bank.client import BankClient
from tycoon.bank.launch import launch as launch_bank
from tycoon.bank.ledger import Ledger
from tycoon.bank.service import BankService
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity
from tycoon.money import MICRO
from tycoon.natsserver import NatsServer


@dataclass
class World:
    """A cast on its server; a test world adds its services as fields."""

    cast: Cast
    server: NatsServer
    buses: dict[str, Bus] = field(default_factory=dict, kw_only=True)

    @property
    def alice(self) -> Identity:
        return self.cast.users[0]

    @property
    def bob(self) -> Identity:
        return self.cast.users[1]

    @property
    def mallory(self) -> Identity:
        return self.cast.users[2]

    async def bus(self, identity: Identity) -> Bus:
        """``identity``'s connection (one each, kept until :meth:`close_buses`)."""
        if identity.public_key not in self.buses:
            self.buses[identity.public_key] = await open_bus(self.server.url, identity)
        return self.buses[identity.public_key]

    async def bank_client(self, identity: Identity, **options: Any) -> BankClient:
        return BankClient(await self.bus(identity), self.cast.bank.public_key, **options)

    async def open_accounts(self, users: Iterable[tuple[Identity, int]]) -> None:
        """Open each user's bank account and mint it ``credits`` (as the operator)."""
        operator = await self.bank_client(self.cast.operator)
        for user, credits in users:
            await (await self.bank_client(user)).open()
            if credits:
                await operator.mint(user.public_key, credits * MICRO)

    async def close_buses(self) -> None:
        for bus in self.buses.values():
            with contextlib.suppress(Exception):
                await bus.close()


@contextlib.asynccontextmanager
async def running_bank(server: NatsServer, cast: Cast, db: Path,
                       **options: Any) -> AsyncIterator[tuple[Ledger, BankService]]:
    """The cast's bank on ``server`` with its ledger in ``db``, started by its launch
    (``options``: those of :func:`tycoon.bank.launch.start_bank`); stopped and closed after."""
    async with launch_bank(server.url, cast.bank, db=db, operator=cast.operator.public_key,
                           **options) as bank:
        yield bank.ledger, bank.service
