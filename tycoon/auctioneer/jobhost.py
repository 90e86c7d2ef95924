"""The auctioneer's job adapter: ``host.exec``, ``host.signal``, ``host.jobs`` and job output.

Thin: the job table (:mod:`tycoon.auctioneer.jobs`) decides ids, states and output caps;
:mod:`tycoon.vmm.jobs` starts processes in the account's sandbox as its own uid. This
module reads their pipes, waits for their exit (a pidfd, no thread), publishes signed
``job.output`` / ``job.exit`` on ``tycoon.job.<account id>.<job id>.{out,exit}``, freezes an
account whose CPU share is zero and thaws it when funded, and ends an account's jobs
(SIGTERM, grace, SIGKILL) when it is refunded or removed. docs/jobs.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tycoon.auctioneer.jobs import FROZEN, Chunk, Job, JobTable, Limits, check_exec, check_signal
from tycoon.auctioneer.market import Market
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import subject_id
from tycoon.bus.service import Endpoint
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.messages.jobs import HostExec, HostSignal, JobExit, JobOutput
from tycoon.resources import Shares
from tycoon.vmm import jobs as runner
from tycoon.vmm.driver import Driver

OPS = ("exec", "signal", "jobs")
DRAIN_PAUSE_S = 0.05
"""After dropping output, the next read waits this long: a job writing without end costs
the auctioneer at most one read of a chunk per pause, not a busy loop."""


@dataclass(frozen=True)
class JobConfig:
    """Where jobs live and whom they run as."""

    root: Path
    """Parent of every account's working directory (traversable: 0711)."""
    uid_file: Path | None = None
    """The persisted account → uid map; None: jobs run as this process's user (simulated)."""
    uid_range: tuple[int, int] = runner.UID_RANGE
    limits: Limits = field(default_factory=Limits)


class JobHost:
    """Runs the jobs of one host's accounts; created by the auctioneer service."""

    def __init__(self, bus: Bus, market: Market, driver: Driver, config: JobConfig, *,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.bus, self.market, self.config, self.clock = bus, market, config, clock
        self.confine = runner.confinement(driver)
        self.uids = (runner.UidMap(config.uid_file, *config.uid_range)
                     if config.uid_file is not None else None)
        self.table = JobTable(secrets.token_hex(3), config.limits)
        self.frozen: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.log = get_logger("auctioneer.jobs", host=market.host_id)
        root = Path(config.root).absolute()
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o711)  # users reach their own directory, list nobody's
        closed = [str(p) for p in root.parents if not os.stat(p).st_mode & 0o001]
        if self.uids is not None and closed:
            raise Rejected("driver_failed", f"jobs run as their own uids cannot reach {root}: "
                           f"{closed[0]} is closed to others (chmod o+x, or another --jobs)")

    def endpoints(self) -> list[Endpoint]:
        handlers = {"exec": self._exec, "signal": self._signal, "jobs": self._jobs}
        return [Endpoint(subjects.host_op(self.market.host_id, op), f"host.{op}", handlers[op])
                for op in OPS]

    # ------------------------------------------------------------------ requests

    async def _exec(self, msg: Message) -> dict[str, Any]:
        body = HostExec.from_body(msg.body)
        account = msg.sender
        if body.account is not None and body.account != account:
            raise Rejected("forbidden", "a job runs only in the signer's own account")
        request = check_exec(msg.body)
        if account not in self.market.accounts:
            raise Rejected("unknown_account", "fund an account at this host before running jobs")
        frozen = self._share(account) <= 0.0
        if not frozen and account in self.frozen:
            self._freeze(account, False)  # left frozen while it had no job: thaw first
        job = self.table.admit(account, request, self.clock())
        try:
            uid = self.uids.uid(account) if self.uids is not None else None
            home = runner.workdir(Path(self.config.root), account, uid)
            cwd = home / request.cwd if request.cwd else home
            if request.cwd and not cwd.is_dir():
                raise Rejected("malformed", f"cwd {request.cwd!r} is not a directory "
                               "in the sandbox")
            self.confine.prepare(account, self.config.limits.pids_per_account)
            env = runner.base_env(account, job.id, home, request.env)
            started = runner.spawn(request.argv, env=env, cwd=cwd, uid=uid,
                                   procs_files=self.confine.procs_files(account))
        except BaseException:
            self.table.failed(job.id)
            raise
        self.table.started(job.id, started.pid, frozen)
        if frozen:  # no share now: it starts frozen, with the account's other jobs
            self.frozen.discard(account)
            self._freeze(account, True)
        self._tasks[job.id] = asyncio.create_task(self._run(job, started), name=f"job-{job.id}")
        self.log.info("job started", job=job.id, account=account[:12], pid=started.pid,
                      uid=uid if uid is not None else -1, frozen=frozen)
        return {"job": job.id, "account": account, "subject": self._subject(job, "out"),
                "pid": started.pid, "uid": uid if uid is not None else -1,
                "state": job.state}

    async def _signal(self, msg: Message) -> dict[str, Any]:
        body = HostSignal.from_body(msg.body)
        job = self.table.get(msg.sender, body.job)
        number = check_signal(body.signal)
        if job.state != "exited":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, number)
        return {"job": job.id, "signal": number, "state": job.state}

    async def _jobs(self, msg: Message) -> dict[str, Any]:
        account = msg.sender
        listed = []
        for job in self.table.of(account):
            view = job.view()
            if job.state != "exited":
                view.update(cpu_s=runner.cpu_seconds(job.pid), memory=runner.rss_bytes(job.pid))
            listed.append(view)
        return {"account": account, "jobs": listed,
                "cpu_s": self.confine.cpu_seconds(account) if account in self.market.accounts
                else 0.0,
                "memory": self.confine.memory_bytes(account) if account in self.market.accounts
                else 0,
                "frozen": account in self.frozen, "cores": self.market.capacity.cores}

    # ------------------------------------------------------------------ market events

    def enforce(self, shares: dict[str, Shares]) -> None:
        """Freeze the jobs of accounts whose CPU share is zero; thaw those funded again."""
        for account in {j.account for j in self.table.running()} | set(self.frozen):
            want = shares.get(account, Shares()).cpu <= 0.0
            if want != (account in self.frozen):
                self._freeze(account, want)

    def _freeze(self, account: str, want: bool) -> None:
        try:
            self.confine.freeze(account, want, [j.pid for j in self.table.running(account)])
        except Rejected as error:
            self.log.warning("freeze failed", account=account[:12], error=error.message)
            return
        (self.frozen.add if want else self.frozen.discard)(account)
        self.table.set_frozen(account, want)
        self.log.info("jobs frozen" if want else "jobs thawed", account=account[:12])

    def refunded(self, account: str) -> None:
        """After a refund: an account left with nothing (no balance, no bid) has its jobs
        ended (in the background: SIGTERM, grace, SIGKILL)."""
        held = self.market.accounts.get(account)
        if (held is None or (held.balance <= 0 and held.bid is None)) \
                and self.table.running(account):
            task = asyncio.create_task(self.end_account(account), name="jobs-end")
            self._tasks[f"end-{account}"] = task

    async def end_account(self, account: str) -> None:
        """SIGTERM every job of the account, SIGKILL what is left after the grace."""
        live = self.table.running(account)
        if not live:
            return
        with contextlib.suppress(Rejected):
            self.confine.freeze(account, False, [j.pid for j in live])  # frozen tasks wait
        self.frozen.discard(account)
        self.table.set_frozen(account, False)
        for job in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.pid, signal.SIGTERM)
        tasks = [self._tasks[j.id] for j in live if j.id in self._tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.limits.grace_s)
        for job in self.table.running(account):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.pid, signal.SIGKILL)
        with contextlib.suppress(Rejected):
            self.confine.kill_rest(account)
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        self.log.info("jobs ended", account=account[:12], jobs=len(live))

    async def account_gone(self, account: str) -> None:
        """The account left the host: end its jobs, remove its directory, free its uid."""
        await self.end_account(account)
        self.frozen.discard(account)
        self.table.forget(account)
        shutil.rmtree(Path(self.config.root) / runner.sandbox_name(account), ignore_errors=True)
        if self.uids is not None:
            self.uids.release(account)

    async def stop(self) -> None:
        """End every job (they are not re-adopted by a restarted auctioneer yet)."""
        for account in {j.account for j in self.table.running()}:
            await self.end_account(account)
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # ------------------------------------------------------------------ one job

    def _share(self, account: str) -> float:
        return self.market.shares_map().get(account, Shares()).cpu

    def _subject(self, job: Job, event: str) -> str:
        return subjects.job(subject_id(job.account), job.id, event)

    async def _run(self, job: Job, started: runner.Started) -> None:
        process = started.process
        assert process.stdout is not None and process.stderr is not None
        pumps = [asyncio.create_task(self._pump(job, process.stdout, "stdout")),
                 asyncio.create_task(self._pump(job, process.stderr, "stderr"))]
        try:
            raw, usage = await _wait(started.pid)
            process.returncode = os.waitstatus_to_exitcode(raw)
            _, pending = await asyncio.wait(pumps, timeout=2.0)  # a daemon may hold the pipes
            for task in pending:
                task.cancel()
            status = process.returncode
            done = self.table.exited(job.id, status, -status if status < 0 else None,
                                     usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024,
                                     self.clock())
            body = JobExit(done.id, done.seq, status, done.cpu_s, done.peak_memory, done.dropped)
            await self.bus.publish(self._subject(job, "exit"), "job.exit", body.to_body())
            self.log.info("job exited", job=job.id, status=status, cpu_s=round(done.cpu_s, 3))
        except Exception:
            self.log.exception("job watch failed", job=job.id)
        finally:
            for task in pumps:
                task.cancel()
            for pipe in (process.stdout, process.stderr):
                with contextlib.suppress(OSError):
                    pipe.close()
            self._tasks.pop(job.id, None)

    async def _pump(self, job: Job, pipe: Any, stream: str) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self.config.limits.chunk)  # backpressure: the pipe
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            while data := await reader.read(self.config.limits.chunk):
                dropped = job.dropped
                for chunk in self.table.output(job.id, stream, data, self.clock()):
                    await self._publish(chunk, job)
                if job.dropped > dropped:  # over a cap: let the pipe fill and the job wait,
                    await asyncio.sleep(DRAIN_PAUSE_S)  # so dropping costs the host little
        finally:
            transport.close()

    async def _publish(self, chunk: Chunk, job: Job) -> None:
        body = JobOutput(chunk.job, chunk.seq, chunk.stream, chunk.data, chunk.dropped or None)
        await self.bus.publish(self._subject(job, "out"), "job.output", body.to_body())


async def _wait(pid: int) -> tuple[int, Any]:
    """Wait for a child to exit without blocking the loop; its (wait status, rusage)."""
    loop = asyncio.get_running_loop()
    fd = os.pidfd_open(pid)
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    _, status, usage = os.wait4(pid, 0)
    return status, usage


__all__ = ["FROZEN", "JobConfig", "JobHost"]
