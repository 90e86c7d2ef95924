"""Group commit: concurrent ledger operations share one transaction and one fsync.

Handlers :meth:`GroupCommitter.submit` an operation (a function of a
:class:`~tycoon.bank.ledger.Batch`). One committer task repeatedly takes every
queued operation, applies them to a fresh batch on the event loop, writes the
batch in a worker thread (``BEGIN … COMMIT`` + fsync, which releases the GIL so
the loop keeps verifying new requests meanwhile), makes it visible, and only then
resolves each operation's future — so no reply leaves before its batch is on
disk. If the write fails, every operation of the batch fails and nothing changes.

Operations that carry an idempotency key (``kind``, ``op_id``) are looked up in
one store query per batch instead of one query each.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tycoon.bank.ledger import Batch, Ledger
from tycoon.errors import Rejected
from tycoon.log import get_logger

T = TypeVar("T")
Op = Callable[[Batch], Any]
Key = tuple[str, str] | None  # (event kind, op id) looked up ahead for a batch
Item = tuple[Op, "asyncio.Future[Any]", Key]
OnCommit = Callable[[Batch], Awaitable[None]]


class GroupCommitter:
    """Serialises every ledger operation through batches committed with one fsync each."""

    def __init__(self, ledger: Ledger, *, max_batch: int = 2048,
                 on_commit: OnCommit | None = None) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.log = get_logger("bank.commit")
        self.batches = 0
        self.committed_ops = 0
        self._queue: collections.deque[Item] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="commit")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued(self) -> int:
        """Operations waiting for the next batch."""
        return len(self._queue)

    async def start(self) -> None:
        """Start the committer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="bank-committer")

    async def stop(self) -> None:
        """Finish every queued operation, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
            self.log.info("committer stopped", batches=self.batches, ops=self.committed_ops)
        self._executor.shutdown(wait=True)

    async def submit(self, op: Callable[[Batch], T], key: Key = None) -> T:
        """Apply ``op`` in the next batch; return its result once the batch is durable.

        ``key`` = (kind, op id) lets the batch look the id up together with the others.
        """
        if self._closing:
            raise Rejected("unavailable", "the bank is shutting down")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future, key))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                count = min(len(self._queue), self.max_batch)
                items = [self._queue.popleft() for _ in range(count)]
                try:
                    await self._commit(items)
                except Exception as exc:  # never let the committer die: fail the batch
                    self.log.exception("committer failed")
                    error = Rejected("internal", f"{type(exc).__name__} in the committer")
                    for _, future, _ in items:
                        if not future.done():
                            future.set_exception(error)
            if self._closing and not self._queue:
                return

    async def _commit(self, items: list[Item]) -> None:
        ledger = self.ledger
        batch = ledger.batch()
        keys: dict[str, list[str]] = {}
        for _, _, key in items:
            if key is not None:
                keys.setdefault(key[0], []).append(key[1])
        for kind, op_ids in keys.items():
            batch.prefetch(kind, op_ids)
        outcomes: list[tuple[bool, Any]] = []
        for op, _, _ in items:
            try:
                outcomes.append((True, op(batch)))
            except Rejected as error:
                outcomes.append((False, error))
            except Exception as exc:  # a bug: fail this op, keep the service alive
                self.log.exception("ledger operation failed")
                outcomes.append((False, Rejected("internal", f"{type(exc).__name__} in ledger")))
        try:
            if batch.events:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._executor, ledger.persist, batch)
            ledger.apply_in_memory(batch)
        except Exception as exc:
            self.log.exception("batch commit failed; nothing changed", ops=len(items))
            failed = Rejected("internal", f"commit failed ({type(exc).__name__}); nothing "
                                          "changed, retry with the same id")
            outcomes = [(False, failed if ok else result) for ok, result in outcomes]
            batch = None
        for (_, future, _), (ok, result) in zip(items, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(result)
            else:
                future.set_exception(result)
        if batch is not None and batch.events:
            self.batches += 1
            self.committed_ops += len(batch.events)
            if self.on_commit is not None:
                with contextlib.suppress(Exception):
                    await self.on_commit(batch)
