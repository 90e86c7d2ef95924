"""What every service's ``launch`` shares: the bus it runs on, and start/stop as a context.

Each service package has one ``launch.py`` (``tycoon.bank.launch``, ``tycoon.sls.launch``,
``tycoon.auctioneer.launch``, ``tycoon.agent.launch`` for the broker) that wires its sans-IO
core to the bus. Its ``start_*`` returns a running service whose ``stop()`` releases what
it made; its ``launch`` is the same as an async context manager. The CLI's ``serve``
commands, ``tycoon up`` (through them), the tests and the benchmarks all start services
this way.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ParamSpec, Protocol, TypeVar

from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity

P = ParamSpec("P")


class Stoppable(Protocol):
    async def stop(self) -> None: ...


R = TypeVar("R", bound=Stoppable)

Where = str | list[str] | Bus
"""A NATS URL (or a cluster's URLs): the service connects and owns the connection; or an
open :class:`Bus` it shares (signed by the service's key; the caller closes it)."""


async def bus_for(where: Where, identity: Identity | None, name: str) -> tuple[Bus, bool]:
    """The bus a service runs on, and whether the service owns it (closes it on stop)."""
    if isinstance(where, Bus):
        if identity is not None and identity.public_key != where.identity.public_key:
            raise ValueError("the bus given must be signed by the service's own key")
        return where, False
    if identity is None:
        raise ValueError("a service connecting by URL needs its identity")
    return await open_bus(where, identity, name=name), True


async def close_owned(bus: Bus, owned: bool) -> None:
    """Close ``bus`` if the service opened it."""
    if owned:
        with contextlib.suppress(Exception):
            await bus.close()


async def stop_quietly(service: Stoppable) -> None:
    """Stop a service that failed to start (its own error is the one that matters)."""
    with contextlib.suppress(Exception):
        await service.stop()


def as_context(start: Callable[P, Awaitable[R]],
               ) -> Callable[P, contextlib.AbstractAsyncContextManager[R]]:
    """``start`` (which returns a running service) as an async context manager that stops
    the service on the way out."""

    @contextlib.asynccontextmanager
    async def launch(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[R]:
        running = await start(*args, **kwargs)
        try:
            yield running
        finally:
            await running.stop()

    launch.__doc__ = f"``{start.__name__}`` as an async context manager (stopped on exit)."
    return launch
