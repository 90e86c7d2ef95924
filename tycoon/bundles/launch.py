"""Start the store: its SQLite file, bus, bucket maker and bundle service, in one call.

``start_store`` returns a :class:`RunningStore`; ``launch`` is the same as an async context
manager. ``tycoon store serve``, the tests and the benchmarks start stores only this way
(see ``tycoon/bus/launch.py``). The store is the only key with JetStream rights on the
bundle buckets (tycoon.natspolicy, role ``store``); it runs apart from the bank so that
pushes of big bundles never hold up payments.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from tycoon.bundles.buckets import MAKE_BURST, MAKE_RATE, MAX_BUCKETS, BucketMaker
from tycoon.bundles.client import BUCKET_BYTES
from tycoon.bundles.pack import LIMITS, Limits
from tycoon.bundles.service import RATE, BundleService
from tycoon.bundles.state import StoreState
from tycoon.bus.connection import Bus
from tycoon.bus.keys import Identity
from tycoon.bus.launch import Where, as_context, bus_for, close_owned, stop_quietly
from tycoon.bus.ratelimit import RateLimit


@dataclass
class RunningStore:
    """A started store and what it owns; ``stop()`` releases all of it."""

    service: BundleService
    bus: Bus
    state: StoreState
    owns_bus: bool = True

    async def stop(self) -> None:
        """Answer the requests in flight, close the bus and the SQLite file."""
        try:
            await self.service.stop()
        finally:
            await close_owned(self.bus, self.owns_bus)
            self.state.close()


async def start_store(
    where: Where,
    identity: Identity | None = None,
    *,
    db: str | Path,
    limits: Limits = LIMITS,
    bucket_bytes: int = BUCKET_BYTES,
    replicas: int = 1,
    max_buckets: int = MAX_BUCKETS,
    make_rate: float = MAKE_RATE,
    make_burst: int = MAKE_BURST,
    rate_limit: RateLimit | None = RATE,
) -> RunningStore:
    """Open the store's SQLite file ``db`` (proof budgets, buckets made), connect as the
    store's key (a fresh one if None; or run on the open bus ``where``) and serve
    ``bundle.put`` / ``bundle.get``. ``bucket_bytes`` 0: make no bucket (serve those that
    exist)."""
    if identity is None and not isinstance(where, Bus):
        identity = Identity.generate()
    async with contextlib.AsyncExitStack() as undo:  # unwound only if starting fails
        state = StoreState(db)
        undo.callback(state.close)
        bus, owned = await bus_for(where, identity, "tycoon-store")
        undo.push_async_callback(close_owned, bus, owned)
        maker = BucketMaker(bus.nc, state, max_bytes=bucket_bytes, replicas=replicas,
                            max_buckets=max_buckets, rate=make_rate,
                            burst=make_burst) if bucket_bytes > 0 else None
        service = BundleService(bus, limits=limits, rate_limit=rate_limit, state=state,
                                make_bucket=maker)
        undo.push_async_callback(stop_quietly, service)
        await service.start()
        undo.pop_all()
    return RunningStore(service, bus, state, owned)


launch = as_context(start_store)
"""``async with launch(url, identity, db=…) as store:``"""
