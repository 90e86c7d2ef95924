"""Read a stream once, from a point to its current end: batch direct gets, no consumer.

A reader asks the stream for up to ``batch`` messages at a time (``$JS.API.DIRECT.GET``,
JetStream's read-only message API, nats-server 2.11+) and stops at what was stored when
the read began, so it never waits on a stream that keeps growing. It creates no consumer
and holds no state on the server: the owning services (the SLS for PRICES, the bank for
SETTLEMENTS) need only the right to read their own stream, and nobody needs the right to
create consumers at all (docs/security.md, "JetStream consumers").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tycoon.errors import Rejected
from tycoon.streams.config import JS_ERRORS, js_unavailable
from tycoon.units import NS

_META = frozenset({"Nats-Stream", "Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp",
                   "Nats-Num-Pending", "Nats-Last-Sequence", "Status", "Description"})
"""Headers a direct get adds to a stored message (not the message's own headers)."""


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """One stored message: stream sequence, subject, payload, headers, when it was stored."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    stored_ns: int


def parse_stamp(text: str) -> int:
    """An RFC 3339 UTC time stamp with up to nanoseconds (``Nats-Time-Stamp``) in ns."""
    text = text.strip()
    if not text.endswith("Z"):
        raise ValueError(f"not a UTC time stamp: {text!r}")
    whole, _, frac = text[:-1].partition(".")
    base = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    return int(base.timestamp()) * NS + int((frac + "0" * 9)[:9] or 0)


def format_stamp(ns: int) -> str:
    """``ns`` since the epoch as an RFC 3339 UTC time stamp with nanoseconds."""
    base = datetime.datetime.fromtimestamp(ns // NS, datetime.UTC)
    return f"{base:%Y-%m-%dT%H:%M:%S}.{ns % NS:09d}Z"


def _stored(msg: Any) -> StoredMsg:
    h = {str(k): str(v) for k, v in (msg.headers or {}).items()}
    return StoredMsg(int(h["Nats-Sequence"]), h.get("Nats-Subject", ""), bytes(msg.data),
                     {k: v for k, v in h.items() if k not in _META},
                     parse_stamp(h["Nats-Time-Stamp"]) if "Nats-Time-Stamp" in h else 0)


class _Batches:
    """Batch direct-get requests of one read, answered on one inbox subscription."""

    def __init__(self, js: Any, stream: str, timeout: float) -> None:
        self.nc = js._nc
        self.api = f"{js._prefix}.DIRECT.GET.{stream}"
        self.timeout = timeout
        self.inbox = self.nc.new_inbox()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.sub: Any = None
        self.n = 0

    async def get(self, request: dict[str, Any]) -> tuple[list[StoredMsg], int]:
        """The messages of one batch and how many matching ones remain after it."""
        if self.sub is None:
            self.sub = await self.nc.subscribe(f"{self.inbox}.*", cb=self.queue.put)
        self.n += 1
        reply = f"{self.inbox}.{self.n}"
        await self.nc.publish(self.api, json.dumps(request).encode(), reply=reply)
        out: list[StoredMsg] = []
        while True:
            try:
                msg = await asyncio.wait_for(self.queue.get(), self.timeout)
            except TimeoutError:
                raise Rejected("unavailable", f"no answer from {self.api}") from None
            if msg.subject != reply:
                continue  # a late answer to an earlier batch
            status = str((msg.headers or {}).get("Status", ""))
            if not status:
                out.append(_stored(msg))
            elif status == "204":  # end of batch
                return out, int(msg.headers.get("Nats-Num-Pending", 0))
            elif status == "404":  # nothing (more) matches
                return out, 0
            elif status == "503":
                raise Rejected("unavailable", f"{self.api}: no responder (JetStream down, or "
                               "the stream lacks allow_direct: tycoon streams ensure --update)")
            else:
                text = msg.headers.get("Description", "")
                raise Rejected("unavailable", f"{self.api}: {status} {text}".strip())

    async def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()


async def read_stream(
    js: Any,
    stream: str,
    *,
    subject: str | None = None,
    start_seq: int | None = None,
    since_ns: int | None = None,
    stop_seq: int | None = None,
    limit: int | None = None,
    newest: int | None = None,
    batch: int = 512,
    fetch_timeout: float = 2.0,
) -> AsyncIterator[StoredMsg]:
    """Yield the stored messages of ``stream`` (optionally of one ``subject`` filter),
    from ``start_seq`` or ``since_ns`` (wall clock) or the beginning, up to what is
    stored now (or ``stop_seq``), at most ``limit`` of them. With ``newest``, a start
    point that would deliver more than ``newest`` messages moves forward so that only the
    ``newest`` last ones of the stream are read (the most recent matter most).

    Raises ``Rejected("unavailable")`` when JetStream or the stream is not there.
    """
    try:
        state = (await js.stream_info(stream)).state
    except JS_ERRORS as exc:
        raise js_unavailable(exc) from exc
    end = state.last_seq if stop_seq is None else min(stop_seq, state.last_seq)
    if not state.messages or end < 1 or (limit is not None and limit <= 0):
        return
    where: dict[str, Any] = {"next_by_subj": subject or ">"}
    if start_seq is not None:
        where["seq"] = max(1, start_seq)
    elif since_ns is not None:
        where["start_time"] = format_stamp(max(0, since_ns))
    else:
        where["seq"] = 1
    reads = _Batches(js, stream, fetch_timeout)
    count = 0
    try:
        if newest is not None:
            first, pending = await reads.get({**where, "batch": 1})
            if first and pending + 1 > newest:
                where = {"next_by_subj": where["next_by_subj"],
                         "seq": max(1, state.last_seq - newest + 1)}
        while True:
            want = batch if limit is None else min(batch, limit - count)
            msgs, pending = await reads.get({**where, "batch": want})
            for msg in msgs:
                if msg.seq > end:
                    return
                count += 1
                yield msg
                if msg.seq >= end or (limit is not None and count >= limit):
                    return
            if not msgs or pending == 0:
                return
            where = {"next_by_subj": where["next_by_subj"], "seq": msgs[-1].seq + 1}
    except JS_ERRORS as exc:
        raise js_unavailable(exc) from exc
    finally:
        await reads.close()
