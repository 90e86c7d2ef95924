"""Read a stream once, from a point to its current end: an ephemeral pull consumer.

The consumer acks nothing (``AckPolicy.NONE``), lives in memory on the server and is
deleted when the read ends (or forgotten by the server after ``inactive_threshold``
if the reader dies). Reading stops when the server says nothing is pending, so a
reader never waits on a stream that keeps growing.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tycoon.streams.config import JS_ERRORS, js_unavailable

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """One stored message: stream sequence, subject, payload, headers, when it was stored."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    stored_ns: int


def _stored(msg: Any) -> StoredMsg:
    meta = msg.metadata
    stamp = meta.timestamp
    stored_ns = int(stamp.timestamp() * NS) if stamp is not None else 0
    return StoredMsg(meta.sequence.stream, msg.subject, bytes(msg.data),
                     dict(msg.headers or {}), stored_ns)


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
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=30.0,
                            mem_storage=True, num_replicas=1)
    if start_seq is not None:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = max(1, start_seq)
    elif since_ns is not None:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = datetime.datetime.fromtimestamp(since_ns / NS, datetime.UTC)
    else:
        config.deliver_policy = DeliverPolicy.ALL
    try:
        sub = await js.pull_subscribe(subject or ">", durable=None, stream=stream, config=config)
        pending = (await sub.consumer_info()).num_pending
        if newest is not None and pending > newest:
            await _drop(js, stream, sub)
            last = (await js.stream_info(stream)).state.last_seq
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq, config.opt_start_time = max(1, last - newest + 1), None
            config.name = None
            sub = await js.pull_subscribe(subject or ">", durable=None, stream=stream,
                                          config=config)
            pending = (await sub.consumer_info()).num_pending
    except JS_ERRORS as exc:
        raise js_unavailable(exc) from exc
    count = 0
    try:
        while pending > 0 and (limit is None or count < limit):
            want = batch if limit is None else min(batch, limit - count)
            try:
                msgs = await sub.fetch(want, timeout=fetch_timeout)
            except (nats.errors.TimeoutError, TimeoutError):
                return  # nothing more arrived: the filtered rest was empty
            except JS_ERRORS as exc:
                raise js_unavailable(exc) from exc
            for msg in msgs:
                stored = _stored(msg)
                if stop_seq is not None and stored.seq > stop_seq:
                    return
                count += 1
                yield stored
                pending = msg.metadata.num_pending
                if stop_seq is not None and stored.seq >= stop_seq:
                    return
    finally:
        await _drop(js, stream, sub)


async def _drop(js: Any, stream: str, sub: Any) -> None:
    """Unsubscribe and delete the ephemeral consumer (best effort)."""
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    with contextlib.suppress(Exception):
        await js.delete_consumer(stream, sub._consumer)  # its name, set by pull_subscribe
