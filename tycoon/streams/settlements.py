"""The bank's side of the SETTLEMENTS stream: one JetStream message per receipt.

Best effort, never in the way of money: the group committer hands each committed batch
to :meth:`SettlementLog.offer` (a non-blocking append to a bounded queue) AFTER the
batch is fsynced and its replies are released; a background task publishes the
receipts in ledger order, in windows of concurrent publishes, each with
``Nats-Msg-Id`` = :func:`msg_id` of the receipt (the SHA-256 of its signed bytes, never
user text: a transfer id is the payer's choice, and nats-server trims header values, so
``"<your refund id> "`` would have collided with yours) so a retry is stored once.

When a publish fails (JetStream down, the stream's node lost, a timeout) or the queue
overflows, the log stops trusting its queue and *resyncs* from the ledger itself: it
reads the tail of the stream (the last ``2 × window`` messages: any hole a failed window
can leave is in there), and re-publishes, from a read-only connection to the bank's
SQLite file, every transfer from the oldest receipt of that tail onwards whose ledger
sequence the tail does not hold. It does the same once at start, so receipts committed just before a
crash (SIGKILL between the fsync and the publish) reach the stream when the bank
comes back. ``tycoon bank verify-log`` reports whatever is still missing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tycoon.bank.receipt import verify_receipt
from tycoon.bank.store import EventRow
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.streams.config import (
    JS_ERRORS,
    MSG_ID,
    SETTLEMENTS,
    SETTLEMENTS_SPEC,
    StreamSpec,
    ensure_stream,
    settlement_subject,
)
from tycoon.streams.reader import read_stream
from tycoon.waiting import wait_set

TransferSource = Callable[[int, int], list[EventRow]]
"""(after_seq, limit) -> the next committed transfer events, in ledger order."""


def msg_id(receipt: bytes, republished_ns: int | None = None) -> str:
    """The ``Nats-Msg-Id`` of a receipt in SETTLEMENTS: the hex SHA-256 of its exact signed
    bytes. Receipts are deterministic, so a re-sent receipt has the same id; two transfers
    never share one, whatever ids their payers chose.

    ``tycoon bank republish`` adds ``.<republished_ns>``: a purge does not clear the
    stream's duplicate window, so the plain id of a receipt published in the last two
    minutes would be dropped as a duplicate although the stream no longer holds it."""
    digest = hashlib.sha256(receipt).hexdigest()
    return digest if republished_ns is None else f"{digest}.{republished_ns}"


def is_msg_id_of(header: str | None, receipt: bytes) -> bool:
    """Whether ``header`` is a Msg-Id :func:`msg_id` gives ``receipt``."""
    if header is None:
        return False
    digest, dot, stamp = header.partition(".")
    return digest == msg_id(receipt) and (not dot or (stamp.isascii() and stamp.isdigit()))


@dataclass(frozen=True, slots=True)
class Entry:
    """One receipt to log."""

    seq: int
    transfer_id: str
    payer: str
    payee: str
    receipt: bytes

    @classmethod
    def of(cls, event: EventRow) -> Entry:
        assert event.op_id and event.payer and event.payee and event.receipt is not None
        return cls(event.seq, event.op_id, event.payer, event.payee, event.receipt)


def transfers_of(events: Iterable[EventRow]) -> list[Entry]:
    """The receipts among a batch's events."""
    return [Entry.of(e) for e in events if e.kind == "transfer" and e.receipt is not None]


def sqlite_source(path: str | Path) -> TransferSource:
    """Read committed transfers from the bank's SQLite file (own read-only connection)."""
    from tycoon.bank.sqlite_store import SqliteStore

    def fetch(after_seq: int, limit: int) -> list[EventRow]:
        store = SqliteStore(path, readonly=True)
        try:
            rows = (e for e in store.events(after_seq) if e.kind == "transfer")
            return list(itertools.islice(rows, limit))
        finally:
            store.close()

    return fetch


class SettlementLog:
    """Publishes every settled receipt to SETTLEMENTS; see the module docstring."""

    def __init__(
        self,
        nc: Any,
        bank_key: str,
        source: TransferSource | None,
        *,
        spec: StreamSpec = SETTLEMENTS_SPEC,
        window: int = 256,
        max_queue: int = 200_000,
        timeout: float = 5.0,
        retry_s: tuple[float, float] = (0.5, 15.0),
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)
        self.bank_key = bank_key
        self.source = source
        self.spec = spec
        self.window = window
        self.max_queue = max_queue
        self.timeout = timeout
        self.retry_s = retry_s
        self.counters: collections.Counter[str] = collections.Counter()
        self.log = get_logger("bank.settlement_log")
        self._queue: collections.deque[Entry] = collections.deque()
        self._wake = asyncio.Event()
        self._resync = True  # at start: catch up with what a crash left unpublished
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()

    # -- the committer's side (never blocks, never raises) -------------------------

    def offer(self, batch: Any) -> None:
        """Queue the receipts of a committed batch (a :class:`~tycoon.bank.ledger.Batch`)."""
        try:
            entries = transfers_of(batch.events)
        except Exception:  # a bug here must never touch the money path
            self.log.exception("cannot read a committed batch")
            self._resync = True
            return
        if not entries:
            return
        if len(self._queue) + len(entries) > self.max_queue:
            self.counters["dropped"] += len(self._queue) + len(entries)
            self._queue.clear()
            self._resync = True
            self.log.warning("settlement log queue full; will resync from the ledger")
        else:
            self._queue.extend(entries)
        self._idle.clear()
        self._wake.set()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start publishing in the background (returns at once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="settlement-log")

    async def stop(self, timeout: float = 3.0) -> None:
        """Publish what is queued (for up to ``timeout`` s), then stop."""
        if self._task is None:
            return
        if self._queue or self._resync:
            await wait_set(self._idle, timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self.log.info("settlement log stopped", queued=len(self._queue), **self.counters)

    async def drained(self, timeout: float = 10.0) -> bool:
        """Wait until everything offered so far is in the stream (tests, tools)."""
        return await wait_set(self._idle, timeout)

    # -- the publisher ---------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_s[0]
        while True:
            if self._resync:
                try:
                    await self._catch_up()
                    self._resync = False
                    delay = self.retry_s[0]
                except (Rejected, *JS_ERRORS) as error:
                    self.counters["resync_failed"] += 1
                    self.log.warning("settlement log resync failed; retrying",
                                     error=str(error), retry_s=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_s[1])
                    continue
                except Exception:
                    self.log.exception("settlement log resync crashed; retrying")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_s[1])
                    continue
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            window = [self._queue.popleft() for _ in range(min(self.window, len(self._queue)))]
            if not await self._publish(window):
                if self.source is None:  # nothing to re-read: keep the window for later
                    self._queue.extendleft(reversed(window))
                else:  # all of it is in the ledger: the resync re-reads it
                    self._queue.clear()
                self._resync = True
                self._idle.clear()

    async def _publish(self, entries: list[Entry]) -> bool:
        """Publish one window concurrently; True when every receipt was stored."""
        results = await asyncio.gather(*(self._one(e) for e in entries), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        self.counters["published"] += len(entries) - len(failed)
        self.counters["duplicates"] += sum(1 for r in results if r is True)
        if failed:
            self.counters["failed"] += len(failed)
            self.log.warning("settlement log publish failed; will resync", failed=len(failed),
                             error=f"{type(failed[0]).__name__} {failed[0]}")
            for r in failed:
                if not isinstance(r, Exception):
                    raise r  # CancelledError and friends
        return not failed

    async def _one(self, entry: Entry) -> bool:
        ack = await self.js.publish(
            settlement_subject(entry.payer, entry.payee), entry.receipt,
            timeout=self.timeout, stream=self.spec.name,
            headers={MSG_ID: msg_id(entry.receipt)},
        )  # fmt: skip
        return bool(ack.duplicate)

    async def _catch_up(self) -> None:
        """Re-publish every committed transfer the stream's tail shows missing."""
        # Everything queued so far is committed: the ledger read below includes it. What is
        # offered from now on stays queued (a receipt read twice is stored once).
        if self.source is not None:
            self._queue.clear()
        info = await ensure_stream(self.js, self.spec)
        if self.source is None:
            return
        present: set[int] = set()  # ledger sequences of the receipts the tail holds
        floor = 0
        last = info.state.last_seq
        if info.state.messages:
            start = max(info.state.first_seq, last - 2 * self.window + 1)
            seqs = []
            async for msg in read_stream(self.js, SETTLEMENTS, start_seq=start, stop_seq=last):
                with contextlib.suppress(Rejected):
                    receipt = verify_receipt(msg.data, self.bank_key)
                    present.add(receipt.seq)
                    seqs.append(receipt.seq)
            floor = min(seqs) - 1 if seqs else 0
        after, backfilled = floor, 0
        while True:
            rows = await asyncio.to_thread(self.source, after, self.window * 4)
            todo = [Entry.of(r) for r in rows if r.seq not in present]
            for i in range(0, len(todo), self.window):
                if not await self._publish(todo[i : i + self.window]):
                    raise Rejected("unavailable", "JetStream refused the backfill")
            backfilled += len(todo)
            if len(rows) < self.window * 4:
                break
            after = rows[-1].seq
        self.counters["resyncs"] += 1
        self.counters["backfilled"] += backfilled
        if backfilled:
            self.log.info("settlement log caught up from the ledger", backfilled=backfilled,
                          after_seq=floor)
