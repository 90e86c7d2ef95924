"""The SLS on NATS: ingests every host's signed prices, answers queries, publishes snapshots.

Every replica subscribes to ALL price subjects (no queue group), so all replicas hold
the same registry; only the request endpoints (``tycoon.sls.query``, ``tycoon.sls.host``)
share the queue group ``sls``, so each request is answered by one replica, and any
replica gives the same answer (see docs/sls.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from nats.aio.subscription import Subscription

from tycoon.bus import ratelimit, subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import subject_id
from tycoon.bus.service import Endpoint, Service
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.messages.sls import SlsHost, SlsSnapshot
from tycoon.sls.ingest import PriceIngest, Raw
from tycoon.sls.query import Query
from tycoon.sls.registry import Registry
from tycoon.sls.tables import DEFAULT_BINS, DEFAULT_BUCKETS
from tycoon.sls.warm import warm_start
from tycoon.streams.history import history_page

MAX_BATCH = 4096


@dataclass(frozen=True)
class SLSConfig:
    """Tunables of one SLS process."""

    missed_heartbeats: int = 3
    snapshot_s: float = 10.0
    sweep_s: float = 1.0
    workers: int = 2
    queue: str = "sls"
    buckets: int = DEFAULT_BUCKETS
    bins: int = DEFAULT_BINS
    forget_after_s: float = 86_400.0
    warm_start_s: float = 3600.0
    """Replay this much of the JetStream PRICES log before going live (0: cold start)."""


class SLSService:
    """One SLS replica on a :class:`Bus`; an async context manager."""

    def __init__(self, bus: Bus, config: SLSConfig | None = None) -> None:
        self.bus = bus
        self.config = config or SLSConfig()
        self.registry = Registry(
            missed_heartbeats=self.config.missed_heartbeats,
            buckets=self.config.buckets,
            bins=self.config.bins,
            forget_after_s=self.config.forget_after_s,
        )
        self.log = get_logger("sls", me=subject_id(bus.identity.public_key))
        self.ingest = PriceIngest(
            self.registry,
            guard=bus.guard,
            limits=bus.limits,
            workers=self.config.workers,
            on_reject=self._rejected,
        )
        self.service = Service(
            bus,
            "tycoon-sls",
            [
                Endpoint(subjects.sls("query"), "sls.query", self._on_query),
                Endpoint(subjects.sls("host"), "sls.host", self._on_host),
                Endpoint(subjects.sls("history"), "sls.history", self._on_history),
            ],
            queue=self.config.queue,
            description="service location service: live hosts, prices, statistics",
            rate_limit=ratelimit.SLS,
        )
        self._inbox: list[Raw] = []
        self._busy = False
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.warm: dict[str, int] = {}  # outcomes of the warm start from the PRICES log

    @property
    def backlog(self) -> int:
        """Price updates received and not yet verified and applied."""
        return len(self._inbox)

    async def __aenter__(self) -> SLSService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Subscribe to every price subject, then serve queries and publish snapshots."""
        self._sub = await self.bus.subscribe_raw(subjects.PRICES_ALL, self._on_raw_price)
        if self.config.warm_start_s > 0:  # live updates queue in _inbox meanwhile
            self.warm = await warm_start(self.bus.nc.jetstream(timeout=2.0), self.registry,
                                         self.bus.limits, since_s=self.config.warm_start_s)
        self._tasks = [
            asyncio.create_task(self._drain(), name="sls-ingest"),
            asyncio.create_task(self._every(self.config.sweep_s, self._sweep), name="sls-sweep"),
            asyncio.create_task(
                self._every(self.config.snapshot_s, self.publish_snapshot), name="sls-snapshot"
            ),
        ]
        await self.service.start()
        self.log.info("sls started", queue=self.config.queue)

    async def stop(self) -> None:
        """Stop serving, stop ingesting, join the worker threads."""
        await self.service.stop()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await asyncio.to_thread(self.ingest.close)
        self.log.info("sls stopped", **self.counters())

    # ---------------------------------------------------------------- prices
    async def _on_raw_price(self, subject: str, data: bytes) -> None:
        self._inbox.append((subject, data))
        self._wake.set()

    async def _drain(self) -> None:
        """Verify and apply price updates in arrival order, in batches."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._inbox:
                batch, self._inbox = self._inbox[:MAX_BATCH], self._inbox[MAX_BATCH:]
                self._busy = True
                try:
                    await self.ingest.ingest_async(batch)
                except Exception:
                    self.log.exception("price batch failed", size=len(batch))
                finally:
                    self._busy = False

    def _rejected(self, error: Rejected, subject: str) -> None:
        self.bus.count_rejection(error, subject, component="sls")

    # ---------------------------------------------------------------- periodic
    async def _every(self, period: float, job: Any) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await job()
            except Exception:
                self.log.exception("periodic job failed", job=getattr(job, "__name__", "?"))

    async def _sweep(self) -> None:
        expired, forgotten = self.registry.expire(time.time_ns())
        for host in expired:
            self.log.info("host expired", host=host)
        if forgotten:
            self.log.info("hosts forgotten", count=len(forgotten))

    def snapshot(self) -> dict[str, Any]:
        """The market summary published on ``tycoon.sls.snapshot``."""
        summary = self.registry.snapshot(time.time_ns())
        counters = dict(sorted(self.ingest.counters.items()))
        return SlsSnapshot(summary["hosts"], summary["resources"], counters).to_body()

    async def publish_snapshot(self) -> None:
        """Publish one market summary now."""
        await self.bus.publish(subjects.SLS_SNAPSHOT, "sls.snapshot", self.snapshot())

    def counters(self) -> dict[str, int]:
        """Ingest outcomes by code (accepted, out_of_order, forbidden, bad_signature, ...)."""
        return dict(self.ingest.counters)

    # ---------------------------------------------------------------- requests
    async def _on_query(self, msg: Message) -> dict[str, Any]:
        return self.registry.query(Query.from_body(msg.body), time.time_ns())

    async def _on_host(self, msg: Message) -> dict[str, Any]:
        return self.registry.host(SlsHost.from_body(msg.body).host, time.time_ns())

    async def _on_history(self, msg: Message) -> dict[str, Any]:
        """A page of one host's stored price envelopes (users hold no JetStream right)."""
        return await history_page(self.bus.nc.jetstream(timeout=5.0), msg.body)
