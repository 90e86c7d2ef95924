"""``tycoon host exec|jobs|signal`` (``tycoon-pub exec HOST -- CMD …``) and the auctioneer's
``--jobs`` options: run work in the sandboxes you pay for (docs/jobs.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tycoon.auctioneer.jobclient import JobClient
from tycoon.auctioneer.jobhost import JobConfig
from tycoon.auctioneer.jobs import Limits
from tycoon.cli import bundles as bundles_cli
from tycoon.cli.common import bus_for, host_id_of, print_json
from tycoon.errors import Rejected
from tycoon.messages.jobs import (
    HostExecReply,
    HostJob,
    HostJobsReply,
    HostSignalReply,
    JobExit,
    JobOutput,
)
from tycoon.vmm import jobs as runner
from tycoon.vmm.jobs import UID_RANGE

EXEC_OPTIONS = argparse.ArgumentParser(prog="tycoon host exec HOST", add_help=False)
EXEC_OPTIONS.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                          help="an allowed variable (LANG, LC_ALL, TZ, TERM, JOB_*)")
EXEC_OPTIONS.add_argument("--cwd", default=None, help="directory inside your sandbox")
EXEC_OPTIONS.add_argument("--detach", action="store_true", help="print the job id and return")
EXEC_OPTIONS.add_argument("--bundle", default=None, metavar="DIGEST|PATH",
                          help="unpack this bundle into the working directory first (a path "
                               "is pushed to your bucket first: tycoon-pub push)")
EXEC_OPTIONS.add_argument("--collect", action="append", default=[], metavar="PATH",
                          help="at exit, pack PATH (relative to the working directory) into "
                               "your bucket; the digest is printed (tycoon-pub pull)")
EXEC_OPTIONS.add_argument("--results", default=None, metavar="DIR", type=Path,
                          help="with --collect: pull the results into DIR when the job exits")


def register(ops: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``exec``, ``jobs`` and ``signal`` to ``tycoon host``."""
    run = ops.add_parser("exec", parents=[common, EXEC_OPTIONS],
                         help="run CMD in your sandbox there: HOST [OPTIONS] -- CMD ARGS... "
                              "(streams its output, exits with its status)")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="[OPTIONS] -- CMD ARGS...")
    run.set_defaults(func=cmd_exec)
    ops.add_parser("jobs", parents=[common], help="your jobs there, with CPU and memory") \
        .set_defaults(func=cmd_jobs)
    sig = ops.add_parser("signal", parents=[common], help="signal a job: HOST JOB SIG")
    sig.add_argument("job")
    sig.add_argument("signal", help="TERM, KILL, INT, HUP, USR1, USR2, STOP, CONT, QUIT")
    sig.set_defaults(func=cmd_signal)
    bundles_cli.register(ops)  # push, pull: bundles in your own bucket


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    """``tycoon auctioneer serve --jobs DIR …``."""
    group = serve.add_argument_group("jobs (docs/jobs.md)")
    group.add_argument("--jobs", default=None, metavar="DIR",
                       help="run users' jobs, their working directories under DIR (off "
                            "unless given; the simulated driver runs them UNCONFINED)")
    group.add_argument("--job-uids", default=f"{UID_RANGE[0]}-{UID_RANGE[1]}",
                       help="range of per-account uids (cgroups driver, root)")
    group.add_argument("--job-pids", type=int, default=Limits.pids_per_account,
                       help="processes per account (pids controller)")
    group.add_argument("--host-jobs", type=int, default=None,
                       help="jobs at once, all accounts together (default: "
                            f"{runner.JOBS_PER_CORE} per core)")
    group.add_argument("--host-pids", type=int, default=None,
                       help="processes of all jobs together (default: "
                            f"{runner.PIDS_PER_CORE} per core, at most pid_max/"
                            f"{runner.PIDS_SHARE})")
    group.add_argument("--job-output", type=int, default=Limits.output_total,
                       help="bytes of output published per job")
    group.add_argument("--job-output-rate", type=int, default=Limits.output_rate,
                       help="bytes/s of output published per job")


UNCONFINED_ENV = "TYCOON_UNCONFINED_JOBS"
"""Set to 1 to let root run jobs on a driver that confines nothing (tests, the demo)."""


def job_config(args: argparse.Namespace, driver_name: str, store: Path) -> JobConfig | None:
    """The auctioneer's job config from ``serve``'s options (None without ``--jobs``)."""
    if not getattr(args, "jobs", None):
        return None
    if driver_name != "cgroups" and os.geteuid() == 0 and os.environ.get(UNCONFINED_ENV) != "1":
        raise Rejected("driver_failed", f"the {driver_name} driver runs jobs unconfined, as "
                       "this process's user: as root every admitted user would run commands "
                       "as root here. Use --driver cgroups (per-account uids), run as an "
                       f"unprivileged user, or set {UNCONFINED_ENV}=1 (tests, the demo)")
    low, _, high = str(args.job_uids).partition("-")
    try:
        uids = (int(low), int(high))
    except ValueError as error:
        raise Rejected("malformed", "--job-uids is LOW-HIGH, e.g. 60000-60999") from error
    limits = Limits(pids_per_account=args.job_pids, output_total=args.job_output,
                    output_rate=args.job_output_rate,
                    output_burst=max(args.job_output_rate, Limits.chunk))
    uid_file = store.with_name(store.name + ".uids.json") if driver_name == "cgroups" else None
    caps = {k: v for k, v in (("host_jobs", getattr(args, "host_jobs", None)),
                              ("host_pids", getattr(args, "host_pids", None))) if v}
    return JobConfig(root=Path(args.jobs), uid_file=uid_file, uid_range=uids, limits=limits,
                     **caps)


def _env(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise Rejected("malformed", f"--env {pair!r} is not NAME=VALUE")
        out[name] = value
    return out


async def cmd_exec(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if "--" in argv:  # options after HOST (argparse leaves them in the remainder)
        at = argv.index("--")
        extra = argparse.ArgumentParser(parents=[EXEC_OPTIONS], add_help=False)
        extra.add_argument("--json", action="store_true")
        extra.add_argument("--timeout", type=float)
        late = extra.parse_args(argv[:at])
        args.env = [*args.env, *late.env]
        args.cwd, args.detach = late.cwd or args.cwd, late.detach or args.detach
        args.bundle, args.collect = late.bundle or args.bundle, [*args.collect, *late.collect]
        args.results = late.results or args.results
        args.json = late.json or args.json
        args.timeout = late.timeout or args.timeout
        argv = argv[at + 1:]
    if not argv:
        raise Rejected("malformed", "nothing to run: tycoon host exec HOST -- CMD ARGS...")
    bus = await bus_for(args)
    try:
        client = JobClient(bus, host_id_of(args, str(args.host)), timeout=args.timeout)
        reply, stream, sub = await client.start(argv, env=_env(args.env), cwd=args.cwd,
                                                bundle=await bundles_cli.bundle_of(args, bus),
                                                collect=args.collect or None)
        started = HostExecReply.from_body(reply)
        if args.detach:
            await sub.unsubscribe()
            print_json(reply) if args.json else print(started.job)
            return 0
        print(f"job {started.job} ({started.state}, uid {started.uid})", file=sys.stderr)
        done: JobExit | None = None
        async for event in stream.events():
            if isinstance(event, JobOutput):
                out = sys.stdout if event.stream == "stdout" else sys.stderr
                out.buffer.write(event.data)
                out.flush()
                if event.dropped:
                    print(f"[tycoon: output dropped by the host's caps: {event.dropped} bytes "
                          "so far]", file=sys.stderr)
            else:
                done = event
        await sub.unsubscribe()
        if done is not None and done.result:
            print(f"results {done.result} (tycoon-pub pull {done.result} DIR)", file=sys.stderr)
            if args.results:
                await bundles_cli.pull(bus, done.result, args.results)
        elif done is not None and done.result_error:
            print(f"results not collected: {done.result_error}", file=sys.stderr)
    finally:
        await bus.close()
    assert done is not None
    status = "with an unknown status (re-adopted after a host restart)" \
        if done.status is None else str(done.status)
    print(f"job {done.job} exited {status}: cpu {done.cpu_s:.2f} s, peak memory "
          f"{done.peak_memory // 1024} KiB, dropped {done.dropped} bytes", file=sys.stderr)
    if done.status is None:
        return 1
    return done.status if done.status >= 0 else 128 - done.status


async def _call(args: argparse.Namespace, op: str, *extra: Any) -> dict[str, Any]:
    bus = await bus_for(args)
    try:
        client = JobClient(bus, host_id_of(args, str(args.host)), timeout=args.timeout)
        result: dict[str, Any] = await getattr(client, op)(*extra)
        return result
    finally:
        await bus.close()


async def cmd_jobs(args: argparse.Namespace) -> int:
    result = await _call(args, "jobs")
    if args.json:
        print_json(result)
        return 0
    mine = HostJobsReply.from_body(result)
    print(f"account {mine.account[:12]}…: cpu {mine.cpu_s:.2f} s, memory "
          f"{mine.memory // 1024} KiB{', FROZEN (no share)' if mine.frozen else ''}")
    for job in map(HostJob.from_body, mine.jobs):
        tail = f"exit {job.status}" if job.state == "exited" else f"pid {job.pid}"
        cpu_s = 0.0 if job.cpu_s is None else job.cpu_s
        print(f"  {job.job:<10} {job.state:<8} cpu {cpu_s:7.2f} s  "
              f"{tail:<12} {' '.join(job.argv)[:60]}")
    return 0


async def cmd_signal(args: argparse.Namespace) -> int:
    result = await _call(args, "signal", args.job, args.signal)
    sent = HostSignalReply.from_body(result)
    print_json(result) if args.json else print(f"job {sent.job}: signal {sent.signal}"
                                                f" sent ({sent.state})")
    return 0


__all__ = ["add_serve_arguments", "job_config", "register"]
