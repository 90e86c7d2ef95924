"""Restarts: a host takes back the jobs an earlier run of it left running.

Part of the job adapter (:mod:`tycoon.auctioneer.jobhost`): each record in the host's state
directory is read back; its last published chunks are published again (same ``seq``); its
pid is adopted only if :func:`~tycoon.auctioneer.jobstate.refusal` finds it is still the
process started (same boot, start time, session, uid and sandbox), and its shim (the
parent writing its exit status) if :func:`~tycoon.auctioneer.jobstate.shim_refusal` does;
the host watches the shim (else the program) and reads the status the shim wrote. Any
other record is a job that ended while the host was down — its output and ``job.exit`` (the
status its shim wrote, or none) go out and its pid, whoever has it now, is never signalled.
docs/jobs.md "Restarts".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
from typing import TYPE_CHECKING

from tycoon.auctioneer import joboutput
from tycoon.auctioneer.jobs import EXITED, Job
from tycoon.auctioneer.jobstate import from_record, refusal, shim_refusal
from tycoon.vmm import procinfo
from tycoon.vmm.confine import Confinement

if TYPE_CHECKING:
    from tycoon.auctioneer.jobhost import JobHost


async def adopt(host: JobHost) -> None:
    """Take back the jobs an earlier run of this host left: republish their last chunks,
    watch the ones that are provably still the process started (same boot, same start
    time, same session, uid and sandbox: :func:`~tycoon.auctioneer.jobstate.refusal`),
    and end the others with an unknown status — their pid is never signalled."""
    saved = host.state.load("host") or {}
    boot = procinfo.boot_id()
    same_boot = bool(boot) and saved.get("boot") == boot
    frozen = {a for a in saved.get("frozen", []) if isinstance(a, str)}
    for name in host.state.records():
        try:
            job, pending = from_record(host.state.load(name) or {})
        except ValueError as error:
            host.log.warning("job record ignored", record=name[:40], error=str(error))
            continue
        if job.id != name or job.id in host.table.jobs:
            continue
        host.table.jobs[job.id] = job
        host._pending[job.id] = pending
        if job.state == EXITED:
            if not job.exit_sent:  # it ended, the exit was not published yet
                host._tasks[job.id] = asyncio.create_task(joboutput.watch(host, job, None, None))
            continue
        output = host._outputs[job.id] = host.state.open_output(job.id)
        await joboutput.republish(host, job, pending, output)
        pidfd, reason = None, "another boot"
        if same_boot:  # its shim, whose end means its exit status is written; else itself
            pidfd, reason = verify_shim(job, host.confine)
            if pidfd is None:
                pidfd, reason = verify(job, host.confine)
        job.adopted = pidfd is not None
        host.log.info("job adopted" if pidfd is not None else "job not adopted: ended",
                      job=job.id, pid=job.pid, reason=reason or "")
        host._tasks[job.id] = asyncio.create_task(joboutput.watch(host, job, None, pidfd),
                                                  name=f"job-{job.id}")
    host.frozen = {a for a in frozen if host.table.running(a)}
    host._save_host()
    for account in {j.account for j in host.table.running()}:
        if account not in host.market.accounts:  # no account here any more: nobody pays
            host._tasks[f"end-{account}"] = asyncio.create_task(host.end_account(account))


def verify(job: Job, confine: Confinement) -> tuple[int | None, str | None]:
    """(a pidfd of the job's process, None) or (None, why the pid is not the job)."""
    fd, stat, alive = _probe(job.pid)
    reason = refusal(job, alive=alive, start_ticks=stat.start_ticks if stat else -1,
                     sid=stat.sid if stat else -1, uid=stat.uid if stat else -1,
                     job_env=stat.job_env if stat else None,
                     in_sandbox=confine.holds(job.account, job.pid) if alive else None,
                     confined=confine.confined)
    return _kept(fd, reason)


def verify_shim(job: Job, confine: Confinement) -> tuple[int | None, str | None]:
    """(a pidfd of the job's shim, None) or (None, why that pid is not its shim)."""
    fd, stat, alive = _probe(job.shim_pid)
    reason = shim_refusal(job, alive=alive, start_ticks=stat.start_ticks if stat else -1,
                          uid=stat.uid if stat else -1, job_env=stat.job_env if stat else None,
                          in_sandbox=confine.holds(job.account, job.shim_pid) if alive
                          else None, confined=confine.confined, host_uid=os.getuid())
    fd, why = _kept(fd, reason)
    return fd, None if why is None else f"shim: {why}"


def _probe(pid: int) -> tuple[int | None, procinfo.ProcStat | None, bool]:
    """A pidfd of ``pid`` (None: no such process), its /proc stat, and whether it is alive."""
    fd = None
    if pid > 1:
        with contextlib.suppress(OSError):
            fd = os.pidfd_open(pid)
    stat = procinfo.proc_stat(pid) if fd is not None else None
    return fd, stat, stat is not None and fd is not None and not _readable(fd)


def _kept(fd: int | None, reason: str | None) -> tuple[int | None, str | None]:
    """(the pidfd, None) if the checks passed and the process is alive after them (the pidfd
    is then that very process), else (None, the reason or "gone") with the pidfd closed."""
    if reason is None and fd is not None and not _readable(fd):
        return fd, None
    if fd is not None:
        os.close(fd)
    return None, reason or "gone"


def _readable(fd: int) -> bool:
    """Whether a pidfd says its process has ended."""
    return bool(select.select([fd], [], [], 0)[0])
