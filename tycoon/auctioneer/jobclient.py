"""``JobClient``: run a process on a host and follow its output (docs/jobs.md).

The client subscribes to ``tycoon.job.<own id>.>`` *before* it asks the host to start the
job, so no chunk can be missed; it keeps only messages signed by the host it asked (any
host may publish on job subjects) for the job id of the reply, and hands them over in
``seq`` order, ending with the ``job.exit``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import subject_id
from tycoon.errors import Rejected
from tycoon.messages.jobs import HostExec, HostExecReply, HostJobs, HostSignal, JobExit, JobOutput

Event = JobOutput | JobExit
HELD = 4096
"""Messages a stream keeps ahead of the next ``seq`` (and before the reply names the job):
the host could otherwise fill the reader's memory with chunks that never come in order."""


class JobStream:
    """The output and exit of one job, in order."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.job: str | None = None
        self._early: list[Message] = []  # before the reply named the job
        self._held: dict[int, Event] = {}
        self._next = 1
        self._ready: asyncio.Queue[Event] = asyncio.Queue()
        self.exit: JobExit | None = None

    async def on_message(self, msg: Message) -> None:
        if subject_id(msg.sender) != self.host:
            return  # another host (or nobody's) message on our subject: not ours
        if self.job is None:
            if len(self._early) < HELD:
                self._early.append(msg)
            return
        parts = msg.subject.split(".")
        if len(parts) != 5 or parts[3] != self.job:
            return
        try:
            event: Event = (JobExit if msg.kind == "job.exit" else JobOutput).from_body(msg.body)
        except Rejected:
            return
        if event.job != self.job or not self._next <= event.seq < self._next + HELD:
            return
        self._held[event.seq] = event
        while self._next in self._held:
            self._ready.put_nowait(self._held.pop(self._next))
            self._next += 1

    async def named(self, job: str) -> None:
        """The host's reply named the job: replay what came before it."""
        self.job = job
        early, self._early = self._early, []
        for msg in early:
            await self.on_message(msg)

    async def events(self, timeout: float | None = None) -> AsyncIterator[Event]:
        """Every chunk in order, then the exit; ``timeout``: most seconds between two."""
        while True:
            event = await asyncio.wait_for(self._ready.get(), timeout)
            yield event
            if isinstance(event, JobExit):
                self.exit = event
                return


class JobClient:
    """``host.exec``, ``host.signal`` and ``host.jobs`` of one host, signed by the bus."""

    def __init__(self, bus: Bus, host: str, *, timeout: float = 5.0) -> None:
        self.bus = bus
        self.auctioneer = AuctioneerClient(bus, host, timeout=timeout)
        self.host = self.auctioneer.host

    async def start(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
                    cwd: str | None = None, bundle: str | None = None,
                    collect: Sequence[str] | None = None,
                    ) -> tuple[dict[str, Any], JobStream, Any]:
        """Start a job; (the host's reply, its stream, the subscription to unsubscribe)."""
        stream = JobStream(self.host)
        own = subject_id(self.bus.identity.public_key)
        sub = await self.bus.subscribe(subjects.job_all(own), stream.on_message)
        await self.bus.flush()
        try:
            reply = await self.exec(argv, env=env, cwd=cwd, bundle=bundle, collect=collect)
            await stream.named(HostExecReply.from_body(reply).job)
        except BaseException:
            await sub.unsubscribe()
            raise
        return reply, stream, sub

    async def exec(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
                   cwd: str | None = None, bundle: str | None = None,
                   collect: Sequence[str] | None = None) -> dict[str, Any]:
        """Only send ``host.exec`` (the caller already follows ``tycoon.job.<own id>.>``
        with one subscription: a second one on the same bus would drop each message as a
        replay of the first's); the host's reply."""
        body = HostExec(
            list(argv), dict(env) if env else None, cwd or None,
            # a digest from tycoon.bundles.client.push: unpacked before it starts
            bundle=bundle or None,
            # packed into this key's bucket at exit: JobExit.result names them
            collect=list(collect) if collect else None)
        return await self.auctioneer._call("exec", body.to_body())

    async def run(self, argv: Sequence[str], **options: Any) -> tuple[list[JobOutput], JobExit]:
        """Start a job and wait for its end: (its chunks in order, its exit)."""
        _, stream, sub = await self.start(argv, **options)
        chunks: list[JobOutput] = []
        try:
            async for event in stream.events():
                if isinstance(event, JobOutput):
                    chunks.append(event)
        finally:
            await sub.unsubscribe()
        assert stream.exit is not None
        return chunks, stream.exit

    async def jobs(self) -> dict[str, Any]:
        """This key's jobs on the host."""
        return await self.auctioneer._call("jobs", HostJobs().to_body())

    async def signal(self, job: str, sig: str) -> dict[str, Any]:
        """Send a signal (``TERM``, ``KILL``, …) to one of this key's jobs."""
        return await self.auctioneer._call("signal", HostSignal(job, sig).to_body())
