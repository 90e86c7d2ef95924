"""A job's output and exit, published: the watcher of one job of :mod:`.jobhost`.

:func:`watch` tails the job's output files (:mod:`tycoon.auctioneer.jobfiles`) while a pidfd
on its shim (no thread) says it runs, publishes signed ``job.output`` chunks as the job
table's caps allow (:func:`drain`: the record first, so a restart republishes the same
``seq``), then its ``job.exit`` with the shim's status and rusage and, with ``collect``, the
digest of its results packed into its account's bucket (:func:`collect`). Everything goes
on ``tycoon.job.<account id>.<job id>.{out,exit}``; a refused publish is retried
(:func:`send`). docs/jobs.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tycoon.auctioneer.jobfiles import Output
from tycoon.auctioneer.jobs import EXITED, Chunk, Job
from tycoon.auctioneer.jobstate import STREAMS, Pending
from tycoon.bundles import host as bundles
from tycoon.bus import subjects
from tycoon.bus.keys import subject_id
from tycoon.messages.jobs import JobExit, JobOutput
from tycoon.vmm import jobs as runner
from tycoon.vmm import procinfo

if TYPE_CHECKING:
    from tycoon.auctioneer.jobhost import JobHost

POLL_S = 0.02
"""A live job's output files are read this often (chunk latency ≤ this plus publishing)."""
SAMPLE_S = 1.0
"""An adopted job's CPU and memory are sampled this often (used if its shim's exit file is
missing)."""
PUBLISH_RETRY_S, PUBLISH_RETRY_MAX_S = 0.05, 2.0
"""A refused publish is tried again after this, doubling up to the most."""


async def collect(host: JobHost, job: Job) -> dict[str, Any]:
    """``collect``: the job's named outputs, packed into its account's bucket; the
    ``job.exit`` fields naming them (``result``) or why not (``result_error``)."""
    if not job.collect or not job.workdir:
        return {}
    uid = host.uids.uid(job.account) if host.uids is not None else None
    home = Path(host.config.root).absolute() / runner.sandbox_name(job.account)
    digest, error = await bundles.collect_results(
        host.bus, job.account, job.proof, home, Path(job.workdir), job.collect, uid)
    job.result = digest  # host.jobs shows it too (a --detach caller never saw job.exit)
    return {"result": digest} if digest else {"result_error": error} if error else {}


def subject(job: Job, event: str) -> str:
    return subjects.job(subject_id(job.account), job.id, event)


async def watch(host: JobHost, job: Job, process: Any, pidfd: int | None) -> None:
    """Publish the job's output until it ends, then its exit. ``pidfd``: of its shim
    (or, adopted without one, of the program). ``process``: the shim's Popen of a job
    this run started (reaped here); None for an adopted one. The exit status and rusage
    are the shim's exit file's (missing: status unknown, CPU and memory as sampled)."""
    loop = asyncio.get_running_loop()
    done = [pidfd is None]
    if pidfd is not None:
        loop.add_reader(pidfd, done.__setitem__, 0, True)
    sampled = 0.0
    try:
        while not done[0]:
            await drain(host, job)
            if process is None and loop.time() - sampled >= SAMPLE_S:
                sampled = loop.time()
                job.cpu_s = max(job.cpu_s, procinfo.cpu_seconds(job.pid))
                job.peak_memory = max(job.peak_memory, procinfo.rss_bytes(job.pid))
            await asyncio.sleep(POLL_S)
        await ended(host, job, process)
    except asyncio.CancelledError:
        raise
    except Exception:
        host.log.exception("job watch failed", job=job.id)
    finally:
        if pidfd is not None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        output = host._outputs.pop(job.id, None)
        if output is not None:
            output.close()
        host._tasks.pop(job.id, None)


async def ended(host: JobHost, job: Job, process: Any) -> None:
    if job.state != EXITED:
        if process is not None:
            with contextlib.suppress(ChildProcessError):
                process.poll()  # reap the shim
        status, cpu_s, peak = host.state.read_exit(job.id) or (
            None, job.cpu_s, job.peak_memory)
        if job.id in host._outputs:
            await drain(host, job)  # what it wrote last
        sig = -status if status is not None and status < 0 else None
        host.table.exited(job.id, status, sig, cpu_s, peak, host.clock())
        host._save(job)
    else:  # ended in an earlier run, its exit not yet published: its last chunks first
        output = host._outputs[job.id] = host.state.open_output(job.id)
        await republish(host, job, host._pending.get(job.id, []), output)
    body = JobExit(job.id, job.seq, job.cpu_s, job.peak_memory, job.dropped,
                   status=job.status, **(await collect(host, job)))
    await send(host, subject(job, "exit"), "job.exit", body.to_body())
    job.exit_sent = True
    host._pending[job.id] = []
    host._save(job)
    host.state.remove(job.id)
    for name in host.state.records():  # records of jobs the table no longer lists
        if name not in host.table.jobs:
            host.state.remove(name, record=True)
    host.log.info("job exited", job=job.id, status=job.status, cpu_s=round(job.cpu_s, 3))


async def drain(host: JobHost, job: Job) -> None:
    """Publish what the job wrote since the last read (as the caps allow). The record,
    with the chunks about to go out, is written first: a crash in between republishes
    the same chunks, so readers see neither a gap nor two versions of a ``seq``."""
    output = host._outputs[job.id]
    now = host.clock()
    batch: list[Chunk] = []
    pending: list[Pending] = []
    begun = dict(job.offsets)
    for stream in STREAMS:
        size = output.size(stream)  # one fstat per stream per poll
        offset = min(job.offsets[stream], size)  # it truncated its own
        available = size - offset
        if available <= 0:
            job.offsets[stream] = offset
            continue
        read, skip = host.table.plan(job.id, available, now)
        data = output.read(stream, offset, read)
        chunks = host.table.emit(job.id, stream, data, skip if len(data) == read else 0)
        at = offset
        for chunk in chunks:
            pending.append(Pending(chunk.seq, stream, at, len(chunk.data), chunk.dropped))
            at += len(chunk.data)
        job.offsets[stream] = offset + len(data) + (skip if len(data) == read else 0)
        batch += chunks
    if not batch:
        if job.sent >= host.table.limits.output_total:  # past the cap, all is dropped:
            for stream in STREAMS:  # free it but the chunks a restart would republish
                kept = max((p.offset + p.length for p in host._pending.get(job.id, [])
                            if p.stream == stream), default=0)
                runner.punch(output.fds[stream], job.offsets[stream], kept)
        return
    host._pending[job.id] = pending
    host._save(job)
    for chunk in batch:
        await publish(host, chunk, job)
    for stream in STREAMS:  # published before this batch: free its disk blocks
        runner.punch(output.fds[stream], begun[stream])


async def republish(host: JobHost, job: Job, pending: list[Pending], output: Output) -> None:
    for p in pending:
        data = output.read(p.stream, p.offset, p.length)
        await send(host, subject(job, "out"), "job.output", JobOutput(
            job.id, p.seq, p.stream, data, p.dropped or None).to_body())


async def publish(host: JobHost, chunk: Chunk, job: Job) -> None:
    body = JobOutput(chunk.job, chunk.seq, chunk.stream, chunk.data, chunk.dropped or None)
    await send(host, subject(job, "out"), "job.output", body.to_body())


async def send(host: JobHost, subject: str, kind: str, body: dict[str, Any]) -> None:
    """Publish, retrying with backoff while the bus refuses (a full buffer, a
    disconnect): the watcher lives on, and a chunk sent again has the same ``seq``."""
    delay = PUBLISH_RETRY_S
    while True:
        try:
            await host.bus.publish(subject, kind, body)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            host.log.warning("job event not published, retrying", kind=kind,
                             error=str(error)[:200], retry_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, PUBLISH_RETRY_MAX_S)
