"""A signed connection to NATS: every publish is sealed, every receipt is verified.

``Bus`` is the only place where the envelope meets the network. It checks the
subject binding, freshness and replays for live traffic, counts every rejection
by code and logs it, and for requests checks that a reply answers this request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tycoon.bus.envelope import (
    DEFAULT_LIMITS,
    Limits,
    Message,
    RecentlyVerified,
    seal,
)
from tycoon.bus.keys import Identity, subject_id
from tycoon.bus.replay import ReplayGuard
from tycoon.bus.tls import client_tls
from tycoon.bus.verify import check_signer, signer_raw, verify_live, verify_reply
from tycoon.errors import CODES, Rejected
from tycoon.log import LogLimiter, get_logger

Handler = Callable[[Message], Awaitable[None]]
RawHandler = Callable[[str, bytes], Awaitable[None]]
"""Called with (subject, envelope bytes) of an unverified message (see subscribe_raw)."""
RECENTLY_VERIFIED = RecentlyVerified()
"""Shared by every Bus of this process: principals sharing a connection (and subscribed
to the same subjects) check each delivered envelope's signature once."""
_INBOX = re.compile(r"_INBOX\.[a-z2-7]{16}\.[^.\s*>]+(\.[^.\s*>]+)*")
"""A principal's reply inbox: ``_INBOX.<16-char subject id>.<one or more tokens>``."""


class Bus:
    """One principal's signed view of the bus."""

    def __init__(
        self,
        nc: Client,
        identity: Identity,
        *,
        guard: ReplayGuard | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.nc = nc
        self.identity = identity
        self.guard = guard or ReplayGuard()
        self.limits = limits
        self.rejected: collections.Counter[str] = collections.Counter()
        self.log = get_logger("bus", me=subject_id(identity.public_key))
        self.log_limiter = LogLimiter()
        """Refusals are logged at most once per interval per (key, code), with the count."""
        self._shared: bool | None = None  # speaking over another principal's connection?
        self._replies: dict[str, asyncio.Future[Msg]] = {}
        self._reply_prefix = ""
        self._reply_lock = asyncio.Lock()
        self._tokens = 0

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def inbox_prefix(self) -> str:
        """This principal's own reply-inbox prefix."""
        return inbox_prefix(self.identity)

    def verify(self, data: bytes, subject: str) -> Message:
        """Open an envelope received on ``subject`` and check binding, freshness, replay."""
        return verify_live(data, subject, self.guard, limits=self.limits,
                           opened=RECENTLY_VERIFIED.open(data, limits=self.limits))

    def count_rejection(self, error: Rejected, subject: str, *, key: str = "",
                        **context: Any) -> None:
        """Count one rejected message; log it at most once per interval per (``key``, code)
        (``key``: the verified sender, else the subject), with the count since the last line."""
        self.rejected[error.code] += 1
        count = self.log_limiter.admit(key or subject, error.code, time.monotonic())
        if count:
            suppressed = self.log_limiter.take_suppressed()
            extra = {"suppressed": suppressed} if suppressed else {}
            self.log.warning("rejected", code=error.code, reason=error.message, subject=subject,
                             count=count, **extra, **context)

    async def publish(self, subject: str, kind: str, body: Any) -> None:
        """Seal ``body`` as ``kind`` for ``subject`` and publish it."""
        await self.nc.publish(subject, seal(self.identity, kind, body, subject=subject))

    async def reply(self, request: Message | bytes, reply_to: str, kind: str, body: Any) -> None:
        """Send a signed reply bound to the digest of ``request``.

        Only to the requester's own inbox: a verified ``request`` (a :class:`Message`) is
        answered only under its signer's inbox prefix, raw bytes (a request that failed
        verification: no signer to trust) only under some principal's inbox; otherwise
        ``Rejected("bad_reply_to")`` and nothing is sent (see :func:`reply_allowed`)."""
        sender = request.sender if isinstance(request, Message) else None
        if not reply_allowed(reply_to, sender):
            raise Rejected("bad_reply_to", f"will not answer on {reply_to[:128]!r}")
        raw = request.raw if isinstance(request, Message) else request
        answers = hashlib.sha256(raw).digest()
        await self.nc.publish(reply_to, seal(self.identity, kind, body, answers=answers))

    async def request(self, subject: str, kind: str, body: Any, *, timeout: float = 5.0,
                      signer: str | bytes | None = None) -> Message:
        """Send a signed request and return the verified reply.

        An ``error`` reply raises :class:`Rejected` with the remote code. ``signer`` (a
        public key, or its raw 32 bytes) pins the key the reply must be signed by
        (``wrong_reply`` otherwise), e.g. the bank's: never learnt from the wire.
        """
        raw = seal(self.identity, kind, body, subject=subject)
        try:
            resp = await self.send_request(subject, raw, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise Rejected("unavailable", f"no service answers on {subject}") from exc
        except nats.errors.TimeoutError as exc:
            raise Rejected("timeout", f"no reply on {subject} within {timeout}s") from exc
        if signer is not None:
            check_signer(resp.data, signer if isinstance(signer, bytes) else signer_raw(signer))
        return self.check_reply(raw, resp.data)

    async def send_request(self, subject: str, raw: bytes, *, timeout: float = 5.0) -> Msg:
        """Publish sealed request bytes and return the raw reply, received on an inbox that
        services accept for this principal (raises nats-py's timeout / no-responders)."""
        if self._shared is None:
            self._shared = not self.nc.new_inbox().startswith(self.inbox_prefix + ".")
        if self._shared:
            return await self._request_shared(subject, raw, timeout)
        return await self.nc.request(subject, raw, timeout=timeout)

    async def _request_shared(self, subject: str, raw: bytes, timeout: float) -> Msg:
        """A request over a connection whose inbox is another principal's (a broker's job, a
        market of many principals in one process): the reply comes under the connection's
        inbox, named by this principal's id, ``<connection inbox>.<my id>.<nuid>.<n>``,
        which services accept as this signer's (:func:`reply_allowed`)."""
        async with self._reply_lock:
            if not self._reply_prefix:
                base, _, nuid = self.nc.new_inbox().rpartition(".")
                prefix = f"{base}.{subject_id(self.identity.public_key)}.{nuid}"
                await self.nc.subscribe(f"{prefix}.*", cb=self._on_shared_reply)
                self._reply_prefix = prefix
        self._tokens += 1
        reply = f"{self._reply_prefix}.{self._tokens}"
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._replies[reply] = future
        try:
            await self.nc.publish(subject, raw, reply=reply)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise nats.errors.TimeoutError from exc
        finally:
            self._replies.pop(reply, None)

    async def _on_shared_reply(self, msg: Msg) -> None:
        future = self._replies.get(msg.subject)
        if future is None or future.done():
            return
        if msg.headers and str(msg.headers.get("Status", "")) == "503":
            future.set_exception(nats.errors.NoRespondersError())
        else:
            future.set_result(msg)

    def check_reply(self, request_raw: bytes, data: bytes) -> Message:
        """Verify a reply to ``request_raw``; raise the remote error if it is one."""
        try:
            msg = verify_reply(data, hashlib.sha256(request_raw).digest(), self.guard,
                               limits=self.limits)
        except Rejected as error:
            self.count_rejection(error, "<reply>")
            raise
        if msg.kind == "error":
            code = msg.body.get("code")
            text = str(msg.body.get("message", ""))[:1024]
            if code in CODES:
                returned = msg.body.get("returned")  # a refused host.fund paid back
                ok = isinstance(returned, bytes) and len(returned) <= 4096
                raise Rejected(code, text, returned=returned if ok else b"")
            raise Rejected("internal", f"{code!s:.64}: {text}")
        if msg.kind != "reply":
            raise Rejected("malformed", f"expected a reply, got {msg.kind!r}")
        return msg

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "",
                        skip: Callable[[str], bool] | None = None) -> Subscription:
        """Deliver every verified message on ``subject`` to ``handler``; drop the rest.

        ``skip`` (given a message's subject) drops a message before its signature is
        checked: for a subscriber that knows a newer word on it is coming anyway."""

        async def on_message(raw: Msg) -> None:
            if skip is not None and skip(raw.subject):
                return
            try:
                msg = self.verify(raw.data, raw.subject)
            except Rejected as error:
                self.count_rejection(error, raw.subject)
                return
            try:
                await handler(msg)
            except Exception:
                self.log.exception("handler failed", subject=raw.subject, kind=msg.kind)

        return await self.nc.subscribe(subject, queue=queue, cb=on_message)

    async def subscribe_raw(self, subject: str, handler: RawHandler, *,
                            pending_msgs_limit: int | None = None) -> Subscription:
        """Deliver (subject, envelope bytes) of every message on ``subject``, UNVERIFIED:
        for a receiver that verifies in batches through :mod:`tycoon.bus.verify` (the
        SLS's ingest) or shows refusals itself (``tycoon tap``)."""

        async def on_message(raw: Msg) -> None:
            await handler(raw.subject, raw.data)

        options: dict[str, Any] = {}
        if pending_msgs_limit is not None:
            options["pending_msgs_limit"] = pending_msgs_limit
        return await self.nc.subscribe(subject, cb=on_message, **options)

    async def flush(self, timeout: float = 5.0) -> None:
        """Return once the server has processed everything sent so far (a PING round trip).

        nats-py (2.16) writes the PING straight to the socket, ahead of commands still queued
        for its flusher task (a SUB just made): the PONG could return before the server had
        the SUB, and a service "started" (``Service.start``, ``--ready-fd``) answered its
        first request with no responders. The queue is written out first, so the PING
        follows it."""
        await asyncio.wait_for(self.nc._flush_pending(force_flush=True), timeout)
        await self.nc.flush(timeout=timeout)

    async def close(self) -> None:
        """Drain subscriptions and close the connection."""
        if not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()
            with contextlib.suppress(Exception):
                await self.nc.close()


def inbox_prefix(identity: Identity | str) -> str:
    """``_INBOX.<principal id>``: each principal reads replies only under its own prefix
    (``identity``: an :class:`Identity` or a public key)."""
    key = identity if isinstance(identity, str) else identity.public_key
    return f"_INBOX.{subject_id(key)}"


def reply_allowed(reply_to: str, sender: str | None) -> bool:
    """Whether a service may answer on ``reply_to``: for a verified request from public key
    ``sender``, under the sender's own inbox ``_INBOX.<sender id>.…``, or, for a principal
    speaking over another's connection, under that connection's inbox and named by the
    sender's id, ``_INBOX.<connection id>.<sender id>.<token>…``; for an unverified one
    (``None``) only an inbox-shaped subject. So no reply ever reaches ``$JS.>``,
    ``$SYS.>``, a feed or any other non-inbox subject, whatever a request says."""
    if len(reply_to) > 256 or not _INBOX.fullmatch(reply_to):
        return False
    if sender is None:
        return True
    try:
        sid = subject_id(sender)
    except (ValueError, Rejected):
        return False
    tokens = reply_to.split(".")
    return tokens[1] == sid or (len(tokens) >= 4 and tokens[2] == sid)


AUTH_REFUSALS = 5
"""Authorization Violations before the first connection that make :func:`open_bus` give up."""


async def open_bus(
    url: str | list[str],
    identity: Identity,
    *,
    name: str = "",
    creds: str | None = None,
    use_nkey: bool = True,
    connect_timeout: float = 2.0,
    reconnect_wait: float = 0.5,
    limits: Limits = DEFAULT_LIMITS,
    guard: ReplayGuard | None = None,
    deadline: float | None = None,
    auth_refusals: int = AUTH_REFUSALS,
    tls: ssl.SSLContext | None = None,
) -> Bus:
    """Connect ``identity`` to NATS (reconnecting forever) and return its :class:`Bus`.

    A key the server refuses (``Authorization Violation``) ``auth_refusals`` times before
    the first connection gets ``Rejected("forbidden")``: a key not admitted (yet) is an
    operator's error to fix, not an outage to wait out.

    ``url`` is one server, a list, or a comma-separated list (every node of a cluster).
    ``tls`` (default :func:`client_tls`, from the environment) presents a client
    certificate to servers that verify their clients.

    A service waits for its server as long as it takes; a command passes ``deadline``
    (seconds) and gets ``Rejected("unavailable")`` when no server answers in time.
    """
    if isinstance(url, str) and "," in url:  # "nats://a:4222,nats://b:4222": a cluster
        url = [u.strip() for u in url.split(",") if u.strip()]
    log = get_logger("nats", me=subject_id(identity.public_key), client=name)
    limiter = LogLimiter()

    refused = asyncio.Event()
    refusals = [0]

    async def on_error(exc: Exception) -> None:  # e.g. one per refused publish: limited
        text = str(exc) or type(exc).__name__
        if "authorization violation" in text.lower() and not client:
            refusals[0] += 1
            if refusals[0] >= auth_refusals:
                refused.set()
        count = limiter.admit(text[:200], type(exc).__name__, time.monotonic())
        if count:
            log.warning("nats error", error=text, count=count)

    client: list[Client] = []

    async def on_disconnect() -> None:
        closing = client and (client[0].is_closed or client[0].is_draining)
        (log.debug if closing else log.warning)("disconnected")

    async def on_reconnect() -> None:
        log.info("reconnected")

    options: dict[str, Any] = {
        "servers": url,
        "name": name or subject_id(identity.public_key),
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": reconnect_wait,
        "connect_timeout": connect_timeout,
        "inbox_prefix": inbox_prefix(identity),
        "ping_interval": 5,
        "max_outstanding_pings": 3,
    }
    context = tls or client_tls()
    if context is not None:
        options["tls"] = context
    if creds:
        options["user_credentials"] = creds
    elif use_nkey:
        options["nkeys_seed_str"] = identity.seed
    nc = Client()
    connecting = asyncio.ensure_future(asyncio.wait_for(nc.connect(**options), deadline))
    refusal = asyncio.ensure_future(refused.wait())
    await asyncio.wait({connecting, refusal}, return_when=asyncio.FIRST_COMPLETED)
    refusal.cancel()
    if refused.is_set() and not (connecting.done() and not connecting.exception()):
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        with contextlib.suppress(Exception):
            await nc.close()
        raise Rejected("forbidden", f"the NATS server at {url} refuses key "
                                    f"{identity.public_key} (Authorization Violation, "
                                    f"{refusals[0]} tries): admit it on the operator box "
                                    "(tycoon key show; tycoon admit) and reload the server")
    try:
        await connecting
    except TimeoutError as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        raise Rejected("unavailable", f"no NATS server answered at {url} in {deadline}s") from exc
    client.append(nc)
    return Bus(nc, identity, limits=limits, guard=guard)


@contextlib.asynccontextmanager
async def connect(url: str | list[str], identity: Identity, **options: Any) -> AsyncIterator[Bus]:
    """``async with connect(url, identity) as bus:`` — a Bus closed (drained) on exit."""
    bus = await open_bus(url, identity, **options)
    try:
        yield bus
    finally:
        await bus.close()
