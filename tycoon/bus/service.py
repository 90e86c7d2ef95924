"""A small request/reply service base: verify, dispatch by subject and kind, reply signed.

Every service registers with the NATS micro services API, so ``$SRV.PING``,
``$SRV.INFO`` and ``$SRV.STATS`` list it to standard NATS tooling. Each request
runs in its own task (bounded), so a handler that waits on I/O — the bank's group
commit, say — lets others proceed. A handler's :class:`Rejected` becomes a signed
``error`` reply; any other exception becomes an ``internal`` error reply and a log
line, and the subscription lives on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.micro import ServiceConfig, add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats

from tycoon import __version__
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.errors import Rejected
from tycoon.log import get_logger

RequestHandler = Callable[[Message], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Endpoint:
    """One request subject, the kind it takes there, and what answers it."""

    subject: str
    kind: str
    handler: RequestHandler


@dataclass
class ServiceStats:
    """Counters of one service: requests answered, error replies by code, rejections by code."""

    requests: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    rejections: collections.Counter[str] = field(default_factory=collections.Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "rejections": dict(self.rejections),
        }


class Service:
    """Serves a set of endpoints on one :class:`Bus`; an async context manager."""

    def __init__(
        self,
        bus: Bus,
        name: str,
        endpoints: list[Endpoint],
        *,
        queue: str = "",
        concurrency: int = 256,
        description: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.bus = bus
        self.name = name
        self.endpoints = list(endpoints)
        self.queue = queue or name
        self.description = description
        self.metadata = {"principal": bus.identity.public_key, **(metadata or {})}
        self.stats = ServiceStats()
        self.log = get_logger(name)
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._micro: Any = None

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Subscribe every endpoint and register with the micro services API."""
        self._micro = await add_service(
            self.bus.nc,
            ServiceConfig(
                name=self.name,
                version=__version__,
                description=self.description or None,
                metadata=self.metadata,
                queue_group=self.queue,
                stats_handler=self._endpoint_stats,
            ),
        )
        for index, endpoint in enumerate(self.endpoints):
            await self._micro.add_endpoint(
                name=f"{endpoint.kind.replace('.', '-')}-{index}",
                subject=endpoint.subject,
                handler=self._dispatcher(endpoint),
            )
        await self.bus.flush()
        self.log.info("service started", endpoints=[e.subject for e in self.endpoints])

    async def stop(self) -> None:
        """Stop taking requests, then let in-flight ones finish (drain)."""
        if self._micro is not None:
            with contextlib.suppress(Exception):
                await self._micro.stop()
            self._micro = None
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.bus.flush(timeout=2.0)
        self.log.info("service stopped", **self.stats.to_dict())

    def _endpoint_stats(self, _endpoint: EndpointStats) -> dict[str, Any]:
        return self.stats.to_dict()

    def _dispatcher(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[None]]:
        async def dispatch(request: Request) -> None:
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(endpoint, request))
            self._tasks.add(task)
            task.add_done_callback(self._done)

        return dispatch

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _handle(self, endpoint: Endpoint, request: Request) -> None:
        raw = request.data
        reply_to = request._msg.reply
        if not reply_to:
            self.stats.rejections["malformed"] += 1
            self.bus.count_rejection(Rejected("malformed", "request has no reply subject"),
                                     request.subject)
            return
        try:
            msg = self.bus.verify(raw, request.subject)
            if msg.kind != endpoint.kind:
                raise Rejected("unknown_kind", f"{endpoint.subject} takes {endpoint.kind!r}")
        except Rejected as error:
            self.stats.rejections[error.code] += 1
            self.bus.count_rejection(error, request.subject)
            await self._reply(raw, reply_to, "error", error.to_body())
            return
        self.stats.requests += 1
        try:
            body = await endpoint.handler(msg)
            kind = "reply"
        except Rejected as error:
            self.stats.errors[error.code] += 1
            self.log.info("refused", kind=msg.kind, code=error.code, reason=error.message,
                          sender=msg.sender)
            body, kind = error.to_body(), "error"
        except Exception as exc:
            self.stats.errors["internal"] += 1
            self.log.exception("handler failed", kind=msg.kind, sender=msg.sender)
            error = Rejected("internal", f"{type(exc).__name__} in {msg.kind}")
            body, kind = error.to_body(), "error"
        await self._reply(raw, reply_to, kind, body)

    async def _reply(self, raw: bytes, reply_to: str, kind: str, body: Any) -> None:
        try:
            await self.bus.reply(raw, reply_to, kind, body)
        except Exception:
            self.log.exception("reply failed", reply_to=reply_to)
