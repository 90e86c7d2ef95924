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
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nats.micro import ServiceConfig, add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats

from tycoon import __version__
from tycoon.bus import ratelimit
from tycoon.bus.connection import Bus, reply_allowed
from tycoon.bus.envelope import HEADER_SIZE, MAGIC, Message
from tycoon.bus.histogram import Histogram
from tycoon.bus.keys import decode_public_key, public_key_from_raw_cached
from tycoon.bus.ratelimit import KeyedLimiter, RateLimit, retry_text
from tycoon.bus.verify import reply_subject
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
    """Counters of one service: requests answered, error replies by code, rejections by code.

    ``rate_limited`` counts every request refused by the rate limiter (also in
    ``rejections``); ``unanswered`` those among them dropped without a reply (a key past
    its limit gets at most its own rate of signed refusals). ``outcomes`` counts every
    request by (endpoint kind, ``ok`` or refusal code), ``latency`` times the handlers by
    kind: both bounded by the endpoints and ``tycoon.errors.CODES`` (docs/operations.md).
    """

    requests: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    rejections: collections.Counter[str] = field(default_factory=collections.Counter)
    rate_limited: int = 0
    unanswered: int = 0
    outcomes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    latency: dict[str, Histogram] = field(default_factory=dict)

    def observe(self, kind: str, seconds: float) -> None:
        """Count one handler run of ``kind`` that took ``seconds``."""
        hist = self.latency.get(kind)
        if hist is None:
            hist = self.latency[kind] = Histogram()
        hist.observe(seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "rejections": dict(self.rejections),
            "rate_limited": self.rate_limited,
            "unanswered": self.unanswered,
            "outcomes": {f"{kind} {code}": n for (kind, code), n in self.outcomes.items()},
            "latency": {kind: hist.to_dict() for kind, hist in self.latency.items()},
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
        rate_limit: RateLimit | None = ratelimit.DEFAULT,
        exempt: Iterable[str] = (),
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
        self._exempt = {decode_public_key(k) for k in (bus.identity.public_key, *exempt)}
        self._pending: dict[bytes, int] = {}  # requests of a key received, not yet answered
        self._lanes: dict[bytes, asyncio.Semaphore] = {}  # of keys with requests pending
        self.set_rate_limit(rate_limit)

    @property
    def in_flight(self) -> int:
        """Requests taken and not yet answered (running or waiting for their key's turn)."""
        return len(self._tasks)

    def set_rate_limit(self, limit: RateLimit | None) -> None:
        """Limit each signer key to ``limit`` (None: no limit); resets every bucket."""
        self.rate_limit = limit
        self._limiter = None if limit is None else KeyedLimiter(
            limit.rate, limit.burst, max_keys=limit.max_keys)
        # a key past its limit gets at most this many signed refusals (the rest are dropped)
        self._refusals = None if limit is None else KeyedLimiter(
            limit.rate, limit.burst, max_keys=limit.max_keys)
        self._logged = KeyedLimiter(0.1, 1, max_keys=1024)  # one log line per key per 10 s

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
        # the numbers /metrics shows (tycoon/metrics): refused = tycoon_verification_failures
        return {**self.stats.to_dict(), "refused": dict(self.bus.rejected)}

    def _dispatcher(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[None]]:
        async def dispatch(request: Request) -> None:
            key = self._signer(request.data)
            if key is not None and self._over_limit(key):
                self.stats.outcomes[endpoint.kind, "rate_limited"] += 1
                await self._refuse_early(key, request)
                return
            await self._slots.acquire()
            task = asyncio.create_task(self._run(endpoint, request, key))
            self._tasks.add(task)
            task.add_done_callback(self._done)
            # Let it start now: while requests are queued the subscription would otherwise
            # dispatch its whole backlog (a flood's refusals) before any handler runs.
            await asyncio.sleep(0)

        return dispatch

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    # -- rate limits: checked on the claimed key BEFORE a slot, a task or a signature check;
    # a token is taken only after the signature verified (see docs/security.md#rate-limits)

    def _signer(self, raw: bytes) -> bytes | None:
        """The raw key an envelope claims to be signed by, if it is rate limited."""
        if self._limiter is None or len(raw) <= HEADER_SIZE or raw[:2] != MAGIC:
            return None  # unlimited, or malformed: refused cheaply by verify
        key = raw[3:HEADER_SIZE]
        return None if key in self._exempt else key

    def _over_limit(self, key: bytes) -> bool:
        """Whether this request would be refused anyway: no token left once the key's
        pending requests take theirs, or too many of them pending. Else count it pending."""
        assert self._limiter is not None and self.rate_limit is not None
        pending = self._pending.get(key, 0)
        cap = min(self.rate_limit.max_pending,
                  self._limiter.available(key, time.monotonic_ns()))
        if pending >= cap:
            return True
        self._pending[key] = pending + 1
        return False

    async def _run(self, endpoint: Endpoint, request: Request, key: bytes | None) -> None:
        """Handle one request; at most ``rate_limit.parallel`` of one key at a time, the
        others of that key wait their turn (FIFO), so a key with many requests pending
        delays another key's request by at most ``parallel`` of its own."""
        if key is None:
            await self._handle(endpoint, request)
            return
        try:
            lane = self._lanes.get(key)
            if lane is None:  # (the limit may have been lifted since dispatch)
                parallel = self.rate_limit.parallel if self.rate_limit else 1
                lane = self._lanes[key] = asyncio.Semaphore(parallel)
            async with lane:
                await self._handle(endpoint, request)
        finally:
            left = self._pending[key] - 1
            if left:
                self._pending[key] = left
            else:  # nobody of this key is waiting on the lane either
                del self._pending[key]
                self._lanes.pop(key, None)

    def _take_token(self, msg: Message) -> None:
        """Take the verified sender's token, or raise ``rate_limited``."""
        key = msg.raw[3:HEADER_SIZE]
        if self._limiter is None or key in self._exempt:
            return
        wait = self._limiter.take(key, time.monotonic_ns())
        if wait:
            self.stats.rate_limited += 1
            raise Rejected("rate_limited", self._limit_text(wait))

    def _limit_text(self, wait_ns: int) -> str:
        assert self.rate_limit is not None
        return f"{self.name} allows {self.rate_limit.describe()}; {retry_text(wait_ns)}"

    async def _refuse_early(self, key: bytes, request: Request) -> None:
        """Refuse before verifying: a signed ``rate_limited`` reply within the key's
        refusal budget and only to the claimed signer's own inbox, else drop (counted)."""
        assert self._limiter is not None and self._refusals is not None
        self.stats.rate_limited += 1
        self.stats.rejections["rate_limited"] += 1
        now = time.monotonic_ns()
        if self._refusals.take(key, now):  # the cheap path of a flood: count and drop
            self.stats.unanswered += 1
            return
        sender = public_key_from_raw_cached(key)
        if self._logged.take(key, now) == 0:
            self.log.warning("rate limited", sender=sender, subject=request.subject,
                             pending=self._pending.get(key, 0))
        reply_to = reply_subject(request)
        if not reply_to or not reply_allowed(reply_to, sender):
            self.stats.unanswered += 1
            return
        wait = max(self._limiter.retry_after(key, now), self._limiter.interval)
        error = Rejected("rate_limited", self._limit_text(wait))
        await self._reply(request.data, reply_to, "error", error.to_body())

    async def _handle(self, endpoint: Endpoint, request: Request) -> None:
        raw = request.data
        reply_to = reply_subject(request)
        outcomes = self.stats.outcomes
        if not reply_to:
            outcomes[endpoint.kind, "malformed"] += 1
            self.stats.rejections["malformed"] += 1
            self.bus.count_rejection(Rejected("malformed", "request has no reply subject"),
                                     request.subject)
            return
        try:
            msg = self.bus.verify(raw, request.subject)
            if msg.kind != endpoint.kind:
                raise Rejected("unknown_kind", f"{endpoint.subject} takes {endpoint.kind!r}")
            self._take_token(msg)
        except Rejected as error:
            outcomes[endpoint.kind, error.code] += 1
            self.stats.rejections[error.code] += 1
            self.bus.count_rejection(error, request.subject)
            await self._reply(raw, reply_to, "error", error.to_body())
            return
        if not reply_allowed(reply_to, msg.sender):  # only the requester's own inbox
            outcomes[endpoint.kind, "bad_reply_to"] += 1
            self.stats.rejections["bad_reply_to"] += 1
            self.bus.count_rejection(Rejected("bad_reply_to", f"reply to {reply_to[:128]!r}"),
                                     request.subject, key=msg.sender, kind=msg.kind)
            return
        self.stats.requests += 1
        started, code = time.perf_counter(), "ok"
        try:
            body = await endpoint.handler(msg)
            kind = "reply"
        except Rejected as error:
            code = error.code
            self.stats.errors[error.code] += 1
            count = self.bus.log_limiter.admit(msg.sender, f"refused:{error.code}",
                                               time.monotonic())
            if count:
                self.log.info("refused", kind=msg.kind, code=error.code, reason=error.message,
                              sender=msg.sender, count=count)
            body, kind = error.to_body(), "error"
        except Exception as exc:
            code = "internal"
            self.stats.errors["internal"] += 1
            self.log.exception("handler failed", kind=msg.kind, sender=msg.sender)
            error = Rejected("internal", f"{type(exc).__name__} in {msg.kind}")
            body, kind = error.to_body(), "error"
        self.stats.observe(endpoint.kind, time.perf_counter() - started)
        outcomes[endpoint.kind, code] += 1
        await self._reply(msg, reply_to, kind, body)

    async def _reply(self, raw: Message | bytes, reply_to: str, kind: str, body: Any) -> None:
        try:
            await self.bus.reply(raw, reply_to, kind, body)
        except Rejected as error:  # bad_reply_to: not an inbox; dropped, counted
            self.stats.rejections[error.code] += 1
            self.bus.count_rejection(error, "<reply>")
        except Exception:
            self.log.exception("reply failed", reply_to=reply_to)
