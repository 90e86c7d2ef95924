"""The runner of a bag of tasks: it carries out the :class:`~tycoon.agent.tasks.Bag`'s moves
with the job client (``host.exec``, ``host.signal``, ``host.jobs``) and collects outputs.

Each task's outputs go to ``<out>/<task>/``: ``stdout`` and ``stderr`` as they stream,
``exit.json`` once it ended (status, CPU seconds, peak memory, host, job). A task's state
is journalled before each start and after each change, so a restarted agent reruns no
finished task (a ``done`` row whose ``exit.json`` is missing or disagrees is run again),
and a task that was in flight is first looked for on its host and killed there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from tycoon.agent.journal import TASK_ID, Journal
from tycoon.agent.tasks import (
    DONE,
    RUNNING,
    STOPPING,
    Bag,
    Kill,
    Move,
    Start,
    Task,
    bag_digest,
    task_argv,
)
from tycoon.auctioneer.jobclient import JobClient, JobStream
from tycoon.bundles import client as bundles
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import subject_id
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.messages.jobs import HostExecReply, HostJobsReply, JobExit

EARLY = 1024
"""Job messages kept per host while the exec reply naming their job is on its way (per
host: another host's flood must not push out this one's first chunks)."""

MAX_OUTPUT = 64 << 20
"""Bytes of stdout and stderr kept per task (beyond: dropped, ``truncated`` in exit.json):
a host's caps bound what an honest host sends; this bounds a hostile one."""

TASK_FAULTS = frozenset({"malformed", "forbidden", "unknown_bundle", "bad_digest",
                         "bundle_unsafe", "bundle_too_large"})
"""Refusals of a start for the task itself (any host would refuse it the same way)."""

QUIET_S = 30.0
"""A running task silent this long is looked up with ``host.jobs`` (gone: queued again)."""


def _key(msg: Message) -> tuple[str, str] | None:
    """(signing host, job id) of a message on ``tycoon.job.<account>.<job>.<event>``."""
    parts = msg.subject.split(".")
    if len(parts) != 5 or not msg.sender:
        return None
    return subject_id(msg.sender), parts[3]


class TaskRunner:
    """Runs one bag's moves on the hosts of one agent and collects its outputs."""

    def __init__(self, bus: Bus, journal: Journal, bag: Bag, command: list[str], out: Path,
                 *, clock: Callable[[], float] = time.time,
                 client: Callable[[Bus, str], JobClient] | None = None,
                 bundle: str | None = None, collect: list[str] | None = None,
                 pull: Callable[[Bus, str, Path], Awaitable[Any]] = bundles.pull,
                 max_output: int = MAX_OUTPUT) -> None:
        self.bus, self.journal, self.bag, self.command = bus, journal, bag, command
        self.out = Path(out)
        self.bundle, self.collect, self.pull = bundle, collect or [], pull
        self.max_output = max_output
        """The code bundle every task starts with (its digest); the paths collected."""
        self.clock = clock
        self._make = client or (lambda b, h: JobClient(b, h, timeout=5.0))
        self._clients: dict[str, JobClient] = {}
        self.cores: dict[str, int] = {}
        self._asked: set[str] = set()
        self._work: set[asyncio.Task[None]] = set()
        self._restored: list[Move] = []
        self._streams: dict[tuple[str, str], JobStream] = {}
        """(host, job) → the stream of a task's job: job ids are a host's own, so a host
        naming another host's job id takes nothing from it."""
        self._early: dict[str, deque[Message]] = {}
        self._sub: Any = None
        self.wake = asyncio.Event()
        self.on_change: Callable[[], None] = lambda: None
        self._driving: asyncio.Task[None] | None = None
        self.log = get_logger("agent.tasks")

    # -- resume ----------------------------------------------------------------------------

    def resume(self) -> int:
        """Take the journal's task states (checked against the task file); returns how
        many finished tasks are kept. Refuses a journal of another command or task list."""
        digest = bag_digest(self.command, self.bag, self.bundle, self.collect)
        if self.journal.setdefault("tasks_digest", digest) != digest:
            raise Rejected("conflict", "this job began with another command, task file or "
                           "bundle; start another job (--job NAME) for these tasks")
        kept = 0
        now = self.clock()
        for task in self.journal.tasks():
            known = self.bag.tasks.get(task.index)
            if task.pin is None and (known is None or known.arg != task.arg):
                raise Rejected("conflict", f"journal task {task.index} is not the task "
                               "file's (tampered?)")
            if task.state == DONE and not self._exit_matches(task):
                task.state, task.host, task.job, task.status = "queued", None, None, None
            kept += task.state == DONE
            self._restored += self.bag.restore(task, now)
        return kept

    def _exit_matches(self, task: Task) -> bool:
        try:
            record = json.loads((self.out / str(task.index) / "exit.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(record, dict) and record.get("status") == task.status \
            and record.get("job") == task.job

    # -- the loop ----------------------------------------------------------------------------

    def start(self, moves: Callable[[Mapping[str, int]], list[Move]],
              on_change: Callable[[], None]) -> None:
        """:meth:`drive` in the background (:meth:`stop` ends it); ``on_change`` after each
        round."""
        self.on_change = on_change
        self._driving = asyncio.create_task(self.drive(moves))

    async def drive(self, moves: Callable[[Mapping[str, int]], list[Move]],
                    every_s: float = 0.5) -> None:
        """Until cancelled: carry out the moves of the hosts held (``moves`` of the cores
        known: :meth:`AgentCore.task_moves`), on every task event and every ``every_s``."""
        if self._sub is None:  # one subscription for every task's output (before any exec)
            own = subject_id(self.bus.identity.public_key)
            self._sub = await self.bus.subscribe(subjects.job_all(own), self._on_job)
            await self.bus.flush()
        self.carry(self._restored)
        self._restored = []
        while True:
            self.carry(moves(self.cores))
            for host in self.bag.seats:
                if host not in self._asked:
                    self._asked.add(host)
                    self._spawn(self._ask_cores(host))
            self.on_change()
            self.wake.clear()
            # asyncio.timeout, not wait_for: on 3.11, wait_for swallows a cancel that lands
            # just after the wake (stop() then waited for this loop forever)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    await self.wake.wait()

    async def _on_job(self, msg: Message) -> None:
        """A job's output or exit: to its task's stream (which checks the signer is the
        host that runs it), or kept until the exec reply names the job."""
        key = _key(msg)
        stream = self._streams.get(key) if key is not None else None
        if stream is None:
            if key is not None:
                self._early.setdefault(key[0], deque(maxlen=EARLY)).append(msg)
        else:
            await stream.on_message(msg)

    async def _follow(self, host: str, job: str) -> JobStream:
        stream = JobStream(host)
        self._streams[(host, job)] = stream
        await stream.named(job)
        for msg in [m for m in self._early.get(host, ()) if _key(m) == (host, job)]:
            await stream.on_message(msg)
        return stream

    def carry(self, moves: list[Move]) -> None:
        for move in moves:
            task = self.bag.tasks[move.task]
            self.journal.save_task(task)  # before the host is asked
            if isinstance(move, Start):
                self._spawn(self._run(task, move.host))
            elif isinstance(move, Kill):
                self._spawn(self._kill(move))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    def _changed(self, task: Task) -> None:
        self.journal.save_task(task)
        self.wake.set()

    async def stop(self) -> None:
        """Stop collecting and kill every job still running (the journal keeps their
        tasks in flight: a rerun looks for them)."""
        if self._driving is not None:
            self._driving.cancel()
            await asyncio.gather(self._driving, return_exceptions=True)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        work = list(self._work)
        for item in work:
            item.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        kills = [self._client(t.host).signal(t.job, "KILL") for t in self.bag.tasks.values()
                 if t.state in (RUNNING, STOPPING) and t.host and t.job]
        await asyncio.gather(*kills, return_exceptions=True)

    # -- hosts -----------------------------------------------------------------------------

    def _client(self, host: str) -> JobClient:
        if host not in self._clients:
            self._clients[host] = self._make(self.bus, host)
        return self._clients[host]

    async def _ask_cores(self, host: str) -> None:
        """The host's cores (from ``host.jobs``; 1 until it says)."""
        with contextlib.suppress(Rejected, TimeoutError):
            cores = HostJobsReply.from_body(await self._client(host).jobs()).cores
            if 1 <= cores <= 4096:
                self.cores[host] = cores
                self.wake.set()
                return
        self._asked.discard(host)  # asked again on a later round

    async def _listed(self, host: str) -> list[dict[str, Any]]:
        """Our jobs on ``host`` by its word; a row of another account is not ours."""
        reply = HostJobsReply.from_body(await self._client(host).jobs())
        me = self.bus.identity.public_key
        if reply.account != me:
            raise Rejected("wrong_reply", "host.jobs answered for another account")
        return [j for j in reply.jobs if isinstance(j, dict)
                and isinstance(j.get("job"), str) and j.get("account", me) == me]

    # -- a task's run ------------------------------------------------------------------------

    def argv(self, task: Task) -> list[str]:
        return task_argv(self.command, task.arg, append=task.pin is None)

    async def _run(self, task: Task, host: str) -> None:
        index = task.index
        folder = self.out / str(index)
        try:
            reply = await self._client(host).exec(
                self.argv(task), env={"JOB_TASK": str(index)}, bundle=self.bundle,
                # with a bundle, each run has a fresh copy of its own to work in
                cwd=f"task-{index}-{task.runs}" if self.bundle else None,
                collect=[p.replace("{}", task.arg) for p in self.collect])
        except (Rejected, TimeoutError) as error:
            code = getattr(error, "code", "timeout")
            self.log.warning("task start failed", task=index, host=host, code=code)
            if code == "timeout":  # it may have started: found and killed before a rerun
                self.carry(self.bag.start_lost(index, host, self.clock()))
            else:
                self.bag.start_failed(index, host, self.clock(), task_fault=code in TASK_FAULTS)
            if task.state == DONE:  # refused for itself, again and again: reported as such
                folder.mkdir(parents=True, exist_ok=True)
                self._record(task, folder, {"host": host, "job": None, "status": task.status,
                                            "refused": f"{code}: {error}"})
            self._changed(task)
            return
        try:
            started: HostExecReply | None = HostExecReply.from_body(reply)
        except Rejected:
            started = None
        job = started.job if started is not None else ""
        if started is None or started.account != self.bus.identity.public_key \
                or not TASK_ID.fullmatch(job):
            # Not a job of ours (another account's, or no id): nothing to follow or kill
            self.log.warning("host answered exec with a job not ours", task=index, host=host)
            self.bag.start_failed(index, host, self.clock())
            self._changed(task)
            return
        self.carry(self.bag.started(index, host, job))
        self._changed(task)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("stdout", "stderr", "exit.json", "result.error"):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        shutil.rmtree(folder / "result", ignore_errors=True)
        try:
            await self._collect(task, host, job, await self._follow(host, job), folder)
        finally:
            self._streams.pop((host, job), None)

    async def _collect(self, task: Task, host: str, job: str, stream: JobStream,
                       folder: Path) -> None:
        files = {name: open(folder / name, "ab") for name in ("stdout", "stderr")}  # noqa: SIM115
        written, truncated = 0, False
        try:
            events = stream.events(QUIET_S)
            while True:
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if await self._still_there(host, job):
                        events = stream.events(QUIET_S)
                        continue
                    self.bag.lost(task.index, host, job)  # output not whole: run again
                    self._changed(task)
                    return
                if isinstance(event, JobExit):
                    await self._results(task, event, folder)
                    self._exited(task, host, job, event, folder, truncated)
                    return
                out = files.get(event.stream)
                if out is not None and event.data and written < self.max_output:
                    data = event.data[:self.max_output - written]
                    out.write(data)
                    out.flush()
                    written += len(data)
                truncated = truncated or written >= self.max_output
        finally:
            for f in files.values():
                f.close()

    async def _results(self, task: Task, event: JobExit, folder: Path) -> None:
        """``--collect``: fetch the job's result bundle into ``<out>/<task>/result`` (its
        digest checked, unpacked safely); a failure is written down, not retried."""
        digest = getattr(event, "result", None)
        if task.state != RUNNING or not isinstance(digest, str):
            return
        with contextlib.suppress(FileNotFoundError):
            (folder / "result.error").unlink()
        try:
            await self.pull(self.bus, digest, folder / "result")
        except (Rejected, OSError, TimeoutError) as error:
            (folder / "result.error").write_text(f"{getattr(error, 'code', 'error')}: "
                                                 f"{error}\n")

    async def _still_there(self, host: str, job: str) -> bool:
        """Whether ``job`` still runs on ``host`` (a silent host: assume so)."""
        try:
            listed = await self._listed(host)
        except (Rejected, TimeoutError):
            return True
        return any(j["job"] == job and j.get("state") != "exited" for j in listed)

    def _exited(self, task: Task, host: str, job: str, event: JobExit, folder: Path,
                truncated: bool = False) -> None:
        if task.state == RUNNING:
            self._record(task, folder, {
                "host": host, "job": job, "status": event.status, "cpu_s": event.cpu_s,
                "peak_memory": event.peak_memory, "dropped": event.dropped,
                "result": getattr(event, "result", None),
                "result_error": getattr(event, "result_error", None), "truncated": truncated})
        self.bag.exited(task.index, job, event.status, self.clock())
        self._changed(task)

    def _record(self, task: Task, folder: Path, fields: dict[str, Any]) -> None:
        """``exit.json``, written whole before the journal says the task is done."""
        record = {"task": task.index, "arg": task.arg, "runs": task.runs, **fields}
        tmp = folder / "exit.json.tmp"
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(folder / "exit.json")

    # -- kills ----------------------------------------------------------------------------

    async def _kill(self, move: Kill) -> None:
        """Kill a task's job and wait until the host says it is gone (its exit, if we
        follow it, says so first). ``job`` None: kill every unfinished job of ours on the
        host running the task's argv (a start whose reply a crash lost)."""
        task = self.bag.tasks[move.task]
        client = self._client(move.host)
        delay = 0.2
        while True:
            try:
                listed = await self._listed(move.host)
                if move.job is None:
                    argv = self.argv(task)[:8]
                    known = {t.job for t in self.bag.tasks.values() if t.job}
                    mine = [j["job"] for j in listed if j.get("state") != "exited"
                            and j.get("argv") == argv and j["job"] not in known]
                else:
                    mine = [j["job"] for j in listed
                            if j["job"] == move.job and j.get("state") != "exited"]
                if not mine:
                    self.bag.stopped(move.task, move.host, move.job)
                    self._changed(task)
                    return
                for job in mine:
                    with contextlib.suppress(Rejected):
                        await client.signal(job, "KILL")
            except (Rejected, TimeoutError) as error:
                self.log.info("kill: host not answering", host=move.host,
                              code=getattr(error, "code", "timeout"))
            if task.state != STOPPING or task.host != move.host or task.job != move.job:
                return  # settled otherwise (its exit came, or the bag gave up on the host)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
