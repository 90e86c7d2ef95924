"""The verified ingest path of price updates: raw envelope bytes in, registry updated.

A batch of envelopes is opened by a small thread pool, in chunks, through the bus's one
verification path (:mod:`tycoon.bus.verify`: a chunk's signatures in one C call that
releases the GIL, then the bounded decode); each price body is parsed there too (a pure
function, so its outcome is only held, not acted on). Each chunk is then checked and
applied in arrival order on the caller's thread as soon as it is open, while the pool
works on the next ones. Each update passes :func:`tycoon.bus.verify.check_live` (subject
binding, freshness and replay, with the bus's own guard), then:

* the kind is ``price``;
* the host token of the subject is ``subject_id(sender)`` (only a host's own key speaks
  for it) and the body's ``host`` equals it (checked by the registry);
* the body parses; its ``seq`` is above the one held (else ``out_of_order``, ignored).

Every refusal is counted by code and passed to ``on_reject`` (the service logs it).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from tycoon.bus.envelope import DEFAULT_LIMITS, Limits
from tycoon.bus.replay import ReplayGuard
from tycoon.bus.subjects import host_of
from tycoon.bus.verify import Raw, check_live, check_signatures, open_batch, signatures_in_c
from tycoon.errors import Rejected
from tycoon.messages.price import ParsedUpdate, parse_update
from tycoon.sls.registry import Registry

Opened = Rejected | tuple[str, str, str, int, bytes, ParsedUpdate | Rejected | None]
"""What :func:`open_chunk` makes of one envelope: its refusal, or the fields of the
verified message that the checks need — (signed subject, kind, sender, ts_ns, nonce,
parsed price body or its refusal, None for another kind). The decoded body itself is
not kept: fewer live objects per batch means less work for the garbage collector."""
CHUNK = 64


def _verify_chunk(chunk: list[Raw]) -> bytes:
    verdicts = check_signatures([data for _subject, data in chunk])
    assert verdicts is not None  # only submitted when the C verifier is there
    return verdicts


def open_chunk(chunk: list[Raw], limits: Limits = DEFAULT_LIMITS,
               verdicts: bytes | None = None) -> list[Opened]:
    """Open (verify, decode, parse the price body of) every envelope of a chunk.

    Refusals are returned, not raised; nothing here depends on state, so chunks can be
    opened in any thread and in any order. ``verdicts``: the chunk's signatures, checked
    already by :func:`~tycoon.bus.verify.check_signatures` (in a pool thread).
    """
    out: list[Opened] = []
    append = out.append
    datas = [data for _subject, data in chunk]
    for msg in open_batch(datas, limits=limits, verdicts=verdicts):
        if isinstance(msg, Rejected):
            append(msg)
            continue
        kind = msg.kind
        parsed: ParsedUpdate | Rejected | None = None
        if kind == "price":
            try:
                parsed = parse_update(msg.body)
            except Rejected as error:
                parsed = error
        append((msg.subject, kind, msg.sender, msg.ts_ns, msg.nonce, parsed))
    return out


class PriceIngest:
    """Opens raw price envelopes in parallel and applies them to a :class:`Registry`."""

    def __init__(
        self,
        registry: Registry,
        *,
        guard: ReplayGuard | None = None,
        limits: Limits = DEFAULT_LIMITS,
        workers: int = 2,
        on_reject: Callable[[Rejected, str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.guard = guard
        self.limits = limits
        self.workers = max(0, workers)
        self.on_reject = on_reject
        self.counters: collections.Counter[str] = collections.Counter()
        self._pool = (
            ThreadPoolExecutor(self.workers, thread_name_prefix="sls-verify")
            if self.workers > 1
            else None
        )

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _submit(self, batch: list[Raw]) -> list[Future[Any] | list[Opened]]:
        """Start opening a batch: chunks go to the pool; a small batch is opened here.

        With the C batch verifier the pool only checks signatures (the GIL released for
        a whole chunk) and the caller's thread decodes: the threads then contend for the
        GIL once per chunk rather than once per envelope. Without it the pool opens
        whole chunks (PyNaCl releases the GIL per signature).
        """
        if self._pool is None or len(batch) <= CHUNK:
            return [open_chunk(batch, self.limits)]
        work = _verify_chunk if signatures_in_c() else partial(open_chunk, limits=self.limits)
        return [self._pool.submit(work, batch[i : i + CHUNK])
                for i in range(0, len(batch), CHUNK)]

    def _opened(self, batch: list[Raw], start: int, done: Any) -> list[Opened]:
        """The opened envelopes of one chunk from what the pool returned for it."""
        if isinstance(done, bytes):  # verdicts only: decode here
            return open_chunk(batch[start : start + len(done)], self.limits, done)
        return done  # type: ignore[no-any-return]

    def apply(self, subject: str, item: Opened, now_ns: int) -> str:
        """Check one opened envelope and apply it; returns the outcome code.

        The checks run in this order (the first failure is the outcome): opening,
        subject binding, freshness and replay, kind, the subject's host token, the
        body (``malformed``), the body's host, seq (``out_of_order``).
        """
        try:
            if item.__class__ is not tuple:
                raise item  # type: ignore[misc]
            signed_for, kind, sender, ts_ns, nonce, parsed = item  # type: ignore[misc]
            check_live(signed_for, subject, sender, nonce, ts_ns, self.guard, now_ns)
            if parsed is None:
                raise Rejected("unknown_kind", f"not a price: {kind!r}")
            registry = self.registry
            token = host_of(subject)
            if token != registry.host_of(sender):
                raise Rejected("forbidden", f"key {sender[:12]}… may not speak for {token!r}")
            if parsed.__class__ is not tuple:
                registry.counters["malformed"] += 1
                raise parsed
            applied = registry.ingest(parsed, sender=sender, ts_ns=ts_ns, now_ns=now_ns)
        except Rejected as error:
            self.counters[error.code] += 1
            if self.on_reject is not None:
                self.on_reject(error, subject)
            return error.code
        outcome = "accepted" if applied else "out_of_order"
        self.counters[outcome] += 1
        return outcome

    def _apply_all(
        self, batch: list[Raw], start: int, items: list[Opened], now_ns: int,
        outcomes: collections.Counter[str],
    ) -> None:
        apply = self.apply
        for (subject, _), item in zip(batch[start : start + len(items)], items, strict=True):
            outcomes[apply(subject, item, now_ns)] += 1

    def ingest(self, batch: list[Raw], now_ns: int | None = None) -> collections.Counter[str]:
        """Open and apply a batch (blocking); returns the outcomes of this batch.

        Chunks are applied in order as soon as each is opened, while the pool opens the
        next ones.
        """
        outcomes: collections.Counter[str] = collections.Counter()
        start = 0
        for part in self._submit(batch):
            items = self._opened(batch, start, part.result()) if isinstance(part, Future) \
                else part
            now = time.time_ns() if now_ns is None else now_ns
            self._apply_all(batch, start, items, now, outcomes)
            start += len(items)
        return outcomes

    async def ingest_async(self, batch: list[Raw]) -> collections.Counter[str]:
        """:meth:`ingest` without blocking the event loop while the pool verifies."""
        outcomes: collections.Counter[str] = collections.Counter()
        start = 0
        for part in self._submit(batch):
            items = (self._opened(batch, start, await asyncio.wrap_future(part))
                     if isinstance(part, Future) else part)
            self._apply_all(batch, start, items, time.time_ns(), outcomes)
            start += len(items)
        return outcomes
