"""The auctioneer's job adapter: ``host.exec``, ``host.signal``, ``host.jobs``, freezing, ending.

Thin: the job table (:mod:`tycoon.auctioneer.jobs`) decides ids, states and output caps;
:mod:`tycoon.vmm.jobs` starts processes in the account's sandbox as its own uid;
:mod:`tycoon.auctioneer.joboutput` watches each job, publishing its signed ``job.output``
and ``job.exit`` on ``tycoon.job.<account id>.<job id>.{out,exit}``. This module answers
the requests, fetches a job's bundle, freezes an account whose CPU share is zero
and thaws it when funded, and ends an account's jobs (SIGTERM, grace, SIGKILL) when it is
refunded or removed. Stopping leaves the jobs running; the next start re-adopts them
(:mod:`tycoon.auctioneer.jobstate` decides who is still the job). docs/jobs.md.
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

from tycoon.auctioneer import jobadopt, joboutput
from tycoon.auctioneer.jobfiles import Output, StateDir
from tycoon.auctioneer.jobs import (
    FROZEN,
    Job,
    JobTable,
    Limits,
    check_exec,
    check_signal,
)
from tycoon.auctioneer.jobstate import Pending, to_record
from tycoon.auctioneer.market import Market
from tycoon.bundles import host as bundles
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.service import Endpoint
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.messages.jobs import (
    HostExec,
    HostExecReply,
    HostJobsReply,
    HostSignal,
    HostSignalReply,
)
from tycoon.resources import Shares
from tycoon.vmm import jobs as runner
from tycoon.vmm import procinfo
from tycoon.vmm.confine import confinement
from tycoon.vmm.driver import Driver

OPS = ("exec", "signal", "jobs")


@dataclass(frozen=True)
class JobConfig:
    """Where jobs live and whom they run as."""

    root: Path
    """Parent of every account's working directory (traversable: 0711)."""
    uid_file: Path | None = None
    """The persisted account → uid map; None: jobs run as this process's user (simulated)."""
    uid_range: tuple[int, int] = runner.UID_RANGE
    limits: Limits = field(default_factory=Limits)
    host_jobs: int = field(default_factory=runner.host_jobs_default)
    """Jobs running (or frozen) at once, all accounts together (``job_limit`` beyond)."""
    host_pids: int = field(default_factory=runner.host_pids_default)
    """Processes of all jobs together: exec refused (``job_limit``) at this many, and the
    kernel's cap on the driver's root cgroup (cgroups driver)."""


class JobHost:
    """Runs the jobs of one host's accounts; created by the auctioneer service."""

    def __init__(self, bus: Bus, market: Market, driver: Driver, config: JobConfig, *,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.bus, self.market, self.config, self.clock = bus, market, config, clock
        self.confine = confinement(driver)
        self.uids = (runner.UidMap(config.uid_file, *config.uid_range)
                     if config.uid_file is not None else None)
        self.table = JobTable(secrets.token_hex(3), config.limits)
        self.frozen: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._outputs: dict[str, Output] = {}
        self._pending: dict[str, list[Pending]] = {}
        self.log = get_logger("auctioneer.jobs", host=market.host_id)
        root = Path(config.root).absolute()
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o711)  # users reach their own directory, list nobody's
        self.state = StateDir(root)
        saved = self.state.load("host") or {}
        if isinstance(saved.get("prefix"), str) and isinstance(saved.get("counter"), int):
            with contextlib.suppress(ValueError):  # job ids go on where the last run stopped
                self.table = JobTable(saved["prefix"], config.limits, counter=saved["counter"])
        self.confine.cap_host(config.host_pids)  # the kernel's cap, where there is one
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
        self._room()
        bundle = (await bundles.fetch(self.bus, account, request.bundle, msg.raw)
                  if request.bundle else None)  # unknown, bad or unsafe: nothing starts
        self._room()  # again, with no await until the job is in the table
        job = self.table.admit(account, request, self.clock())
        try:
            uid = self.uids.uid(account) if self.uids is not None else None
            home = runner.workdir(Path(self.config.root), account, uid)
            cwd = home / request.cwd if request.cwd else home
            if bundle is not None:  # as the job's uid, never through a link (bundles.host)
                await bundles.unpack_into(bundle, home, cwd, uid)
            job.collect, job.workdir = request.collect, str(cwd.absolute())
            job.proof = msg.raw if request.collect else b""  # the bank's proof, at exit
            parts = request.cwd.split("/") if request.cwd else []
            if parts and (any(home.joinpath(*parts[:i]).is_symlink()  # root never follows
                               for i in range(1, len(parts) + 1)) or not cwd.is_dir()):
                raise Rejected("malformed", f"cwd {request.cwd!r} is not a directory "
                               "in the sandbox (links are not followed)")
            if account not in self.market.accounts:
                raise Rejected("unknown_account", "the account left this host meanwhile")
            frozen = self._share(account) <= 0.0  # again: the bundle took its time, the
            if not frozen and account in self.frozen:  # share may have changed meanwhile
                self._freeze(account, False)
            self.confine.prepare(account, min(self.config.limits.pids_per_account,
                                              self.config.host_pids))
            env = runner.base_env(account, job.id, home, request.env)
            output, theirs = self.state.create_output(job.id)
            try:
                started = await runner.spawn(  # through its shim: its exit status is kept
                    request.argv, env=env, cwd=cwd, uid=uid,
                    procs_files=self.confine.procs_files(account), stdout=theirs["stdout"],
                    stderr=theirs["stderr"], exit_file=self.state.exit_path(job.id),
                    frozen=lambda: account in self.frozen)  # it stops before its exec
            except BaseException:
                output.close()
                self.state.remove(job.id)
                raise
            finally:
                for fd in theirs.values():
                    os.close(fd)
        except BaseException:
            self.table.failed(job.id)
            raise
        frozen = self._share(account) <= 0.0  # again: the start was awaited
        self.table.started(job.id, started.pid, frozen)
        job.start_ticks, job.uid = started.start_ticks, uid if uid is not None else -1
        job.shim_pid, job.shim_ticks = started.shim_pid, started.shim_ticks
        self._outputs[job.id] = output
        self._save(job)
        self._save_host()  # the id counter
        pidfd = os.pidfd_open(started.shim_pid)  # it ends once the exit file is written
        if frozen:  # no share now: it starts frozen, with the account's other jobs
            self.frozen.discard(account)
            self._freeze(account, True)
        self._tasks[job.id] = asyncio.create_task(
            joboutput.watch(self, job, started.process, pidfd), name=f"job-{job.id}")
        if account not in self.market.accounts:  # it left while the start was awaited
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(started.pid, signal.SIGKILL)
        self.log.info("job started", job=job.id, account=account[:12], pid=started.pid,
                      uid=uid if uid is not None else -1, frozen=frozen)
        return HostExecReply(job.id, account, joboutput.subject(job, "out"), started.pid,
                             uid if uid is not None else -1, job.state).to_body()

    def _room(self) -> None:
        """``job_limit`` when the host runs its most jobs or processes, all accounts
        together (a hostile or busy account cannot take the whole machine: docs/jobs.md)."""
        running = self.table.running()
        if len(running) >= self.config.host_jobs:
            raise Rejected("job_limit", f"this host runs its maximum of {self.config.host_jobs}"
                           " jobs for all accounts together: try later or another host")
        used = self.confine.host_pids([job.pid for job in running])
        if used >= self.config.host_pids:
            raise Rejected("job_limit", f"this host's jobs hold {used} processes, its maximum "
                           f"of {self.config.host_pids} for all accounts together: try later "
                           "or another host")

    async def _signal(self, msg: Message) -> dict[str, Any]:
        body = HostSignal.from_body(msg.body)
        job = self.table.get(msg.sender, body.job)
        number = check_signal(body.signal)
        if number == signal.SIGCONT and msg.sender in self.frozen:  # SIGSTOP-frozen: stay
            raise Rejected("forbidden", "the account's jobs are frozen (no CPU share): "
                           "fund it to thaw them")
        stat = procinfo.proc_stat(job.pid) if job.state != "exited" else None
        if stat is not None and stat.start_ticks == (job.start_ticks or stat.start_ticks):
            # the job's very process, not another's that took its pid since
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, number)
        return HostSignalReply(job.id, number, job.state).to_body()

    async def _jobs(self, msg: Message) -> dict[str, Any]:
        account = msg.sender
        listed = []
        for job in self.table.of(account):
            view = job.view()
            if job.state != "exited":
                view.update(cpu_s=procinfo.cpu_seconds(job.pid), memory=procinfo.rss_bytes(job.pid))
            listed.append(view)
        known = account in self.market.accounts
        return HostJobsReply(
            account, listed, self.confine.cpu_seconds(account) if known else 0.0,
            self.confine.memory_bytes(account) if known else 0, account in self.frozen,
            self.market.capacity.cores).to_body()

    # ------------------------------------------------------------------ market events

    def enforce(self, shares: dict[str, Shares]) -> None:
        """Freeze the jobs of accounts whose CPU share is zero; thaw those funded again."""
        # every account that ran a job here: a job's leader may be gone and what it left
        # (a daemon, still in the account's cgroup) run on
        for account in {j.account for j in self.table.jobs.values()} | set(self.frozen):
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
        self._save_host()
        self.log.info("jobs frozen" if want else "jobs thawed", account=account[:12])

    def refunded(self, account: str) -> None:
        """After a refund: an account left with nothing (no balance, no bid) has its jobs
        ended (in the background: SIGTERM, grace, SIGKILL)."""
        held = self.market.accounts.get(account)
        if (held is None or (held.balance <= 0 and held.bid is None)) \
                and self.table.of(account):  # exited jobs too: what they left is ended
            task = asyncio.create_task(self.end_account(account), name="jobs-end")
            self._tasks[f"end-{account}"] = task

    async def end_account(self, account: str) -> None:
        """SIGTERM every job of the account, SIGKILL what is left after the grace."""
        live = [j for j in self.table.running(account) if j.pid > 1]  # 0: being started
        if not live:
            if self.table.of(account):  # no leader left; a daemon of one may be
                with contextlib.suppress(Rejected):
                    self.confine.kill_rest(account)
                self.frozen.discard(account)
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
            if job.pid <= 1:  # never killpg(0): this process's own group
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.pid, signal.SIGKILL)
        if tasks:  # their shims write the exit status, then what is left goes
            await asyncio.wait(tasks, timeout=2.0)
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
        for name in self.state.records():  # its jobs' records and output files go with it
            if name not in self.table.jobs:
                self.state.remove(name, record=True)
        self._save_host()
        shutil.rmtree(Path(self.config.root) / runner.sandbox_name(account), ignore_errors=True)
        if self.uids is not None:
            self.uids.release(account)

    async def stop(self) -> None:
        """Stop watching; the jobs keep running (their records and output files stay, and
        the next start of this host adopts them: :meth:`adopt`)."""
        await self._cancel_all()
        for job in self.table.running():
            self._save(job)
        self._save_host()

    async def end_all(self) -> None:
        """End every job (SIGTERM, grace, SIGKILL) and wait for their exits (tests, a host
        taken down for good)."""
        for account in {j.account for j in self.table.running()}:
            await self.end_account(account)

    async def _cancel_all(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # ------------------------------------------------------------------ restart

    async def adopt(self) -> None:
        """Take back the jobs an earlier run of this host left (:mod:`.jobadopt`)."""
        await jobadopt.adopt(self)

    def _save(self, job: Job) -> None:
        self.state.save(job.id, to_record(job, self._pending.get(job.id, [])))

    def _save_host(self) -> None:
        self.state.save("host", {"prefix": self.table.prefix, "counter": self.table.counter,
                                 "boot": procinfo.boot_id(), "frozen": sorted(self.frozen)})

    # ------------------------------------------------------------------ one job

    def _share(self, account: str) -> float:
        return self.market.shares_map().get(account, Shares()).cpu


__all__ = ["FROZEN", "JobConfig", "JobHost"]
