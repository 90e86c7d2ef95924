"""Bodies of jobs: running a user's processes on a host over the bus (docs/jobs.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tycoon.messages.base import Body, meta


@dataclass(frozen=True, slots=True)
class HostExec(Body):
    """Checked further by :func:`tycoon.auctioneer.jobs.check_exec` (NUL, sizes, env names)."""

    KINDS: ClassVar[tuple[str, ...]] = ("host.exec",)
    SUMMARY: ClassVar[str] = ("run a process in the sender's sandbox as its own uid; output "
                              "on `tycoon.job.<account id>.<job id>.out`")
    argv: list[Any] = field(metadata=meta("program and arguments (≤ 256, ≤ 64 KiB, no NUL)",
                                          max_len=256))
    env: dict[str, Any] | None = field(
        default=None, metadata=meta("allow-listed names (LANG, TZ, … and JOB_*)", max_len=32))
    cwd: str | None = field(default=None, metadata=meta("relative to the sandbox", max_len=255))
    account: str | None = field(
        default=None, metadata=meta("if given, the sender's own key (`forbidden` otherwise)",
                                    max_len=64))
    bundle: str | None = field(default=None, metadata=meta(
        "SHA-256 (hex) of a bundle in the sender's bucket, unpacked into the working "
        "directory before the job starts", max_len=64))
    collect: list[Any] | None = field(default=None, metadata=meta(
        "paths (relative to the working directory) packed into the sender's bucket when "
        "the job exits; `job.exit` names the result", max_len=32))


@dataclass(frozen=True, slots=True)
class HostExecReply(Body):
    job: str
    account: str
    subject: str = field(metadata=meta(doc="where `job.output` and `job.exit` go"))
    pid: int
    uid: int = field(metadata=meta(doc="the uid it runs as (-1: unconfined, simulated)"))
    state: str = field(metadata=meta(doc="`running` or `frozen` (no share now)"))


@dataclass(frozen=True, slots=True)
class HostSignal(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("host.signal",)
    SUMMARY: ClassVar[str] = "signal one of the sender's jobs (its whole session)"
    job: str = field(metadata=meta(max_len=40))
    signal: str = field(metadata=meta("TERM, KILL, INT, HUP, USR1, USR2, STOP, CONT, QUIT",
                                      max_len=16))


@dataclass(frozen=True, slots=True)
class HostSignalReply(Body):
    job: str
    signal: int
    state: str


@dataclass(frozen=True, slots=True)
class HostJobs(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("host.jobs",)
    SUMMARY: ClassVar[str] = "the sender's jobs on this host, with CPU and memory"


@dataclass(frozen=True, slots=True)
class HostJobsReply(Body):
    account: str
    jobs: list[Any] = field(metadata=meta(
        doc="[{`job`, `state`, `argv`, `pid`, `started_ns`, `cpu_s`, `memory`|`peak_memory`, "
            "`status`?, `dropped`}]"))
    cpu_s: float = field(metadata=meta(doc="the account's sandbox, from the cgroup"))
    memory: int = field(metadata=meta(doc="bytes the sandbox holds now, from the cgroup"))
    frozen: bool
    cores: int = field(default=1, metadata=meta(doc="the host's CPU cores (an agent runs "
                                                    "cores × share tasks there)"))


@dataclass(frozen=True, slots=True)
class HostJob(Body):
    """One row of a ``host.jobs`` reply (:meth:`tycoon.auctioneer.jobs.Job.view`, with
    CPU and memory sampled by the host while it runs)."""

    job: str
    state: str = field(metadata=meta(doc="`running`, `frozen` or `exited`"))
    argv: list[Any] = field(metadata=meta(doc="its first 8 arguments"))
    pid: int
    started_ns: int
    dropped: int = field(metadata=meta(doc="output bytes dropped by the caps"))
    adopted: bool | None = field(default=None, metadata=meta(doc="re-adopted after a restart"))
    result: str | None = field(default=None, metadata=meta(doc="collected outputs' digest"))
    status: int | None = field(default=None, metadata=meta(doc="exited: as in `job.exit`"))
    cpu_s: float | None = field(default=None, metadata=meta(doc="user + system seconds"))
    peak_memory: int | None = field(default=None, metadata=meta(doc="exited: bytes"))
    signal: int | None = field(default=None, metadata=meta(doc="exited: the signal sent"))
    memory: int | None = field(default=None, metadata=meta(doc="running: bytes now"))


@dataclass(frozen=True, slots=True)
class JobOutput(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("job.output",)
    SUMMARY: ClassVar[str] = ("a chunk of a job's stdout/stderr, signed by the host; "
                              "empty with `dropped` > 0: output was dropped (caps)")
    job: str = field(metadata=meta(max_len=40))
    seq: int = field(metadata=meta(doc="1, 2, … over the job's output and exit"))
    stream: str = field(metadata=meta("`stdout` or `stderr`", max_len=8))
    data: bytes = field(metadata=meta(max_len=65536))
    dropped: int | None = field(default=None, metadata=meta(doc="bytes dropped so far"))


@dataclass(frozen=True, slots=True)
class JobExit(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("job.exit",)
    SUMMARY: ClassVar[str] = "a job ended: the last message of its sequence"
    job: str = field(metadata=meta(max_len=40))
    seq: int
    status: int | None = field(default=None, kw_only=True, metadata=meta(
        doc="exit code, or -N if killed by signal N (from the job's shim, also after a "
            "host restart); null: unknown (the shim's exit file was lost)"))
    cpu_s: float = field(metadata=meta(doc="user + system seconds (rusage; status unknown: "
                                           "as last sampled)"))
    peak_memory: int = field(metadata=meta(doc="largest resident set, bytes (rusage; status "
                                               "unknown: as last sampled)"))
    dropped: int = field(metadata=meta(doc="output bytes dropped by the caps"))
    result: str | None = field(default=None, kw_only=True, metadata=meta(
        doc="digest of the collected outputs in the account's bucket (`tycoon-pub pull`)"))
    result_error: str | None = field(default=None, kw_only=True, metadata=meta(
        doc="the error code when the outputs could not be collected"))


REPLIES: dict[str, type[Body]] = {
    "host.exec": HostExecReply, "host.signal": HostSignalReply, "host.jobs": HostJobsReply,
}
