"""Start one SLS replica on the bus, in one call.

``start_sls`` returns a :class:`RunningSLS`; ``launch`` is the same as an async context
manager. ``tycoon sls serve``, the tests and the benchmarks start replicas only this way
(see ``tycoon/bus/launch.py``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from tycoon.bus import ratelimit
from tycoon.bus.connection import Bus
from tycoon.bus.keys import Identity
from tycoon.bus.launch import Where, as_context, bus_for, close_owned, stop_quietly
from tycoon.bus.ratelimit import RateLimit
from tycoon.sls.registry import Registry
from tycoon.sls.service import SLSConfig, SLSService


@dataclass
class RunningSLS:
    """A started SLS replica; ``stop()`` stops it and closes its bus (if it opened it)."""

    service: SLSService
    bus: Bus
    owns_bus: bool = True

    @property
    def registry(self) -> Registry:
        return self.service.registry

    async def stop(self) -> None:
        try:
            await self.service.stop()
        finally:
            await close_owned(self.bus, self.owns_bus)


async def start_sls(
    where: Where,
    identity: Identity | None = None,
    config: SLSConfig | None = None,
    *,
    rate_limit: RateLimit | None = ratelimit.SLS,
) -> RunningSLS:
    """Connect (as ``identity``, a fresh key if None; or on the open bus ``where``), warm
    up from the PRICES log if ``config`` says so, and serve queries."""
    if identity is None and not isinstance(where, Bus):
        identity = Identity.generate()
    async with contextlib.AsyncExitStack() as undo:  # unwound only if starting fails
        bus, owned = await bus_for(where, identity, "tycoon-sls")
        undo.push_async_callback(close_owned, bus, owned)
        service = SLSService(bus, config)
        service.service.set_rate_limit(rate_limit)
        undo.push_async_callback(stop_quietly, service)
        await service.start()
        undo.pop_all()
    return RunningSLS(service, bus, owned)


launch = as_context(start_sls)
"""``async with launch(url, identity, SLSConfig(…)) as sls:``"""
