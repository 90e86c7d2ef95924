"""Start a broker (one agent per enrolled job) on the bus, in one call.

``start_broker`` returns a :class:`RunningBroker`; ``launch`` is the same as an async
context manager. ``tycoon agent serve`` and the tests start brokers only this way (see
``tycoon/bus/launch.py``). A single agent is not a service: ``tycoon agent run`` builds
it from its parts (``tycoon.agent.parts``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from tycoon.agent.broker import Broker
from tycoon.bus.connection import Bus
from tycoon.bus.keys import Identity
from tycoon.bus.launch import Where, as_context, bus_for, close_owned, stop_quietly


@dataclass
class RunningBroker:
    """A started broker; ``stop()`` settles its jobs (bounded) and closes its bus."""

    broker: Broker
    bus: Bus
    owns_bus: bool = True

    async def stop(self) -> None:
        try:
            await self.broker.stop()
        finally:
            await close_owned(self.bus, self.owns_bus)


async def start_broker(where: Where, identity: Identity | None = None, *, bank_key: str,
                       state: str | Path, fee_percent: int = 5,
                       min_fee: int = 0) -> RunningBroker:
    """Connect as the broker's key (or run on the open bus ``where``), open its bank
    account, resume the jobs in ``state`` and serve enrolments."""
    async with contextlib.AsyncExitStack() as undo:  # unwound only if starting fails
        bus, owned = await bus_for(where, identity, "tycoon-broker")
        undo.push_async_callback(close_owned, bus, owned)
        broker = Broker(bus, bank_key, Path(state), fee_percent=fee_percent, min_fee=min_fee)
        undo.push_async_callback(stop_quietly, broker)
        await broker.start()
        undo.pop_all()
    return RunningBroker(broker, bus, owned)


launch = as_context(start_broker)
"""``async with launch(url, identity, bank_key=…, state=…) as running:``"""
