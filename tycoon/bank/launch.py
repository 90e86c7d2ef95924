"""Start the bank: store, ledger, bus, settlement log and service, in one call.

``start_bank`` returns a :class:`RunningBank`; ``launch`` is the same as an async context
manager. ``tycoon bank serve``, the tests and the benchmarks start banks only this way
(see ``tycoon/bus/launch.py``). What lies outside the bank package comes in as a factory:
the JetStream copy of receipts (``settlement_log``, tycoon.streams) and the check of a
restored ledger against that log (``guard``, ``tycoon bank serve``), so that the bank does
not depend on the packages that read its receipts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tycoon.bank.ledger import Ledger
from tycoon.bank.service import OPEN_BURST, OPEN_RATE, BankService, ReceiptLog
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus import ratelimit
from tycoon.bus.connection import Bus
from tycoon.bus.keys import Identity
from tycoon.bus.launch import Where, as_context, bus_for, close_owned, stop_quietly
from tycoon.bus.ratelimit import RateLimit

Guard = Callable[[Ledger, Bus], Awaitable[str | None]]
"""Runs before the bank serves; returns why writes must be refused (maintenance), or None."""


@dataclass
class RunningBank:
    """A started bank and what it owns; ``stop()`` releases all of it."""

    service: BankService
    bus: Bus
    ledger: Ledger
    owns_bus: bool = True

    @property
    def maintenance(self) -> str | None:
        return self.service.maintenance

    async def stop(self) -> None:
        """Answer the requests in flight, flush the last batch, close the bus and store."""
        try:
            await self.service.stop()
        finally:
            await close_owned(self.bus, self.owns_bus)
            self.ledger.store.close()


async def start_bank(
    where: Where,
    identity: Identity | None = None,
    *,
    db: str | Path,
    operator: str,
    max_batch: int = 2048,
    settlement_log: Callable[[Bus], ReceiptLog] | None = None,
    guard: Guard | None = None,
    open_fee: int = 0,
    open_rate: float = OPEN_RATE,
    open_burst: int = OPEN_BURST,
    rate_limit: RateLimit | None = ratelimit.BANK,
) -> RunningBank:
    """Open the ledger in ``db`` (``StoreLocked`` if another bank holds it; ``ValueError``
    if it belongs to another bank key), connect as the bank's key (or run on the open bus
    ``where``) and start serving. ``operator`` is the public key allowed to mint."""
    me = identity or (where.identity if isinstance(where, Bus) else None)
    if me is None:
        raise ValueError("the bank needs its identity")
    async with contextlib.AsyncExitStack() as undo:  # unwound only if starting fails
        store = SqliteStore(db)
        undo.callback(store.close)
        ledger = Ledger(store, me, operator=operator)
        bus, owned = await bus_for(where, identity, "tycoon-bank")
        undo.push_async_callback(close_owned, bus, owned)
        maintenance = await guard(ledger, bus) if guard is not None else None
        service = BankService(bus, ledger, max_batch=max_batch,
                              settlement_log=settlement_log(bus) if settlement_log else None,
                              open_fee=open_fee, open_rate=open_rate, open_burst=open_burst,
                              rate_limit=rate_limit)
        service.maintenance = maintenance
        undo.push_async_callback(stop_quietly, service)
        await service.start()
        undo.pop_all()
    return RunningBank(service, bus, ledger, owned)


launch = as_context(start_bank)
"""``async with launch(url, identity, db=…, operator=…) as bank:``"""
