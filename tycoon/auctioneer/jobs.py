"""The job table of one host: who runs what, in which state, and how much output goes out.

Pure (no I/O, time passed in): the adapter (:mod:`tycoon.auctioneer.jobhost`) spawns the
processes through :mod:`tycoon.vmm.jobs` and tells this table what happened. It checks an
exec request (argv, environment, working directory), assigns job ids, numbers every
message of a job (``job.output`` chunks and the final ``job.exit`` share one ``seq``), and
caps each job's output by rate (a token bucket: what is over waits, up to a burst) and in
total, with a marker chunk when output was dropped. See docs/jobs.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tycoon.bundles.pack import check_collect, check_digest
from tycoon.errors import Rejected

MAX_ARGS = 256
"""At most this many argv entries."""
MAX_ARGV_BYTES = 64 * 1024
"""At most this many bytes of argv (UTF-8, all entries together)."""
MAX_ENV = 32
MAX_ENV_VALUE = 4096
MAX_CWD = 255
ENV_ALLOWED = frozenset({"LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "PYTHONUNBUFFERED",
                         "OMP_NUM_THREADS"})
"""Environment names a request may set, besides any starting with :data:`ENV_PREFIX`."""
ENV_PREFIX = "JOB_"
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
SIGNALS = {"TERM": 15, "KILL": 9, "INT": 2, "HUP": 1, "USR1": 10, "USR2": 12,
           "STOP": 19, "CONT": 18, "QUIT": 3}
"""Signals a user may send to a job, by name (without ``SIG``)."""

RUNNING, FROZEN, EXITED = "running", "frozen", "exited"


@dataclass(frozen=True)
class Limits:
    """Per-host job limits (configurable: ``tycoon auctioneer serve --job-*``)."""

    jobs_per_account: int = 16
    """Jobs running at once per account (``job_limit`` beyond)."""
    pids_per_account: int = 256
    """The pids controller's cap on the account's sandbox."""
    output_total: int = 4 * 1024 * 1024
    """Bytes of output published per job; the rest is dropped (and counted)."""
    output_rate: int = 256 * 1024
    """Bytes per second of output published per job (token bucket) …"""
    output_burst: int = 512 * 1024
    """… with this burst."""
    chunk: int = 16 * 1024
    """Largest ``job.output`` chunk."""
    finished_kept: int = 32
    """Exited jobs listed per account (the oldest are forgotten)."""
    grace_s: float = 2.0
    """SIGTERM → SIGKILL grace when an account is refunded or removed."""


@dataclass(frozen=True)
class ExecRequest:
    """A checked ``host.exec`` body."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    """Relative to the account's working directory; ``""`` for the directory itself."""
    bundle: str = ""
    """A bundle's digest to unpack into the working directory first (``""``: none)."""
    collect: tuple[str, ...] = ()
    """Outputs (relative to the working directory) packed into the account's bucket at exit."""


@dataclass
class Job:
    """One job's record (mutable: the table's own)."""

    id: str
    account: str
    argv: tuple[str, ...]
    started_ns: int
    pid: int = 0
    start_ticks: int = 0
    """The process's start time (``/proc/<pid>/stat``, clock ticks since boot): a re-used pid
    has another, so a restarted host never adopts a stranger."""
    uid: int = -1
    """The uid it runs as (-1: this host's own user, unconfined)."""
    shim_pid: int = 0
    shim_ticks: int = 0
    """Its parent, the shim that writes its exit status (``tycoon.vmm.jobshim``), and that
    process's start time; 0: none (a record of an older version)."""
    state: str = RUNNING
    seq: int = 0
    sent: int = 0
    dropped: int = 0
    marked: bool = False
    tokens: float = 0.0
    refilled_ns: int = 0
    status: int | None = None
    """Exit code (−N: signal N); None once exited: unknown (its shim's exit file is gone)."""
    signal: int | None = None
    cpu_s: float = 0.0
    peak_memory: int = 0
    ended_ns: int = 0
    collect: tuple[str, ...] = ()
    """``--collect``: its outputs, packed into the account's bucket when it exits."""
    workdir: str = ""
    """Its working directory (absolute), where the outputs are collected from."""
    result: str | None = None
    """The digest of its collected outputs, once it exited (``host.jobs`` lists it)."""
    proof: bytes = b""
    """With ``collect``: the account's signed ``host.exec``, the bank's proof that this
    host may store results in the account's bucket."""
    offsets: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    """Bytes of each output file read so far (the adapter's)."""
    adopted: bool = False
    """Re-adopted by a restarted host (its shim reports its exit status)."""
    exit_sent: bool = False

    def view(self) -> dict[str, Any]:
        """The job as ``host.jobs`` lists it (CPU and memory added by the adapter)."""
        out: dict[str, Any] = {"job": self.id, "state": self.state, "argv": list(self.argv[:8]),
                               "pid": self.pid, "started_ns": self.started_ns,
                               "dropped": self.dropped}
        if self.adopted:
            out["adopted"] = True
        if self.result:
            out["result"] = self.result
        if self.state == EXITED:
            out.update(status=self.status, cpu_s=self.cpu_s, peak_memory=self.peak_memory)
            if self.signal is not None:
                out["signal"] = self.signal
        return out


@dataclass(frozen=True)
class Chunk:
    """One ``job.output`` message to publish."""

    job: str
    account: str
    seq: int
    stream: str
    data: bytes
    dropped: int = 0
    """Total bytes dropped so far; set (non-zero) on a marker chunk."""


def check_exec(body: dict[str, Any]) -> ExecRequest:
    """An exec request from a decoded ``host.exec`` body, or ``Rejected("malformed")``."""
    argv = body.get("argv")
    if not isinstance(argv, list) or not argv:
        raise Rejected("malformed", "argv must be a non-empty array of strings")
    if len(argv) > MAX_ARGS:
        raise Rejected("malformed", f"argv has {len(argv)} entries; at most {MAX_ARGS}")
    size = 0
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise Rejected("malformed", f"argv[{i}] is not a string")
        if "\x00" in arg:
            raise Rejected("malformed", f"argv[{i}] contains a NUL byte")
        size += len(arg.encode("utf-8", "surrogatepass")) + 1
        if size > MAX_ARGV_BYTES:
            raise Rejected("malformed", f"argv is longer than {MAX_ARGV_BYTES} bytes")
    if not argv[0]:
        raise Rejected("malformed", "argv[0] is empty")
    env = body.get("env") or {}
    if not isinstance(env, dict) or len(env) > MAX_ENV:
        raise Rejected("malformed", f"env must be a map of at most {MAX_ENV} names")
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise Rejected("malformed", f"env name {str(name)[:64]!r} is not NAME_LIKE_THIS")
        if name not in ENV_ALLOWED and not name.startswith(ENV_PREFIX):
            raise Rejected("forbidden", f"env {name} is not allowed (allowed: "
                           f"{', '.join(sorted(ENV_ALLOWED))} and {ENV_PREFIX}*)")
        if not isinstance(value, str) or "\x00" in value or len(value) > MAX_ENV_VALUE:
            raise Rejected("malformed", f"env {name}: a string without NUL, "
                           f"at most {MAX_ENV_VALUE} characters")
    bundle = body.get("bundle")
    return ExecRequest(tuple(argv), dict(env), check_cwd(body.get("cwd")),
                       check_digest(bundle) if bundle is not None else "",
                       check_collect(body.get("collect")))


def check_cwd(cwd: Any) -> str:
    """A working directory relative to the sandbox's: no absolute path, no ``..``."""
    if cwd is None or cwd in ("", "."):
        return ""
    if not isinstance(cwd, str) or len(cwd) > MAX_CWD or "\x00" in cwd:
        raise Rejected("malformed", f"cwd must be a relative path of at most {MAX_CWD} bytes")
    parts = [p for p in cwd.split("/") if p not in ("", ".")]
    if cwd.startswith("/") or ".." in parts:
        raise Rejected("forbidden", "cwd must stay inside the sandbox (relative, no '..')")
    return "/".join(parts)


def check_signal(name: Any) -> int:
    """A signal number from its name (``TERM``, ``SIGTERM``, ``15``)."""
    text = str(name).upper().removeprefix("SIG")
    if text.isdigit() and int(text) in SIGNALS.values():
        return int(text)
    if text not in SIGNALS:
        raise Rejected("malformed", f"signal must be one of {', '.join(SIGNALS)}")
    return SIGNALS[text]


@dataclass
class JobTable:
    """Every job of one host, by id; ids are ``<prefix><counter>`` (subject tokens)."""

    prefix: str
    limits: Limits = field(default_factory=Limits)
    jobs: dict[str, Job] = field(default_factory=dict)
    counter: int = 0

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z0-9]{1,16}$", self.prefix):
            raise ValueError("a job id prefix is 1..16 lowercase letters or digits")

    def of(self, account: str) -> list[Job]:
        """The account's jobs, oldest first."""
        return [j for j in self.jobs.values() if j.account == account]

    def running(self, account: str | None = None) -> list[Job]:
        """Jobs not exited (of one account, or all)."""
        return [j for j in self.jobs.values() if j.state != EXITED
                and (account is None or j.account == account)]

    def get(self, account: str, job_id: Any) -> Job:
        """The account's job, or ``unknown_job`` (also for another account's job)."""
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise Rejected("unknown_job", f"no job {str(job_id)[:40]!r} here")
        if job.account != account:
            raise Rejected("forbidden", "only the account's own key may touch its jobs")
        return job

    def admit(self, account: str, request: ExecRequest, now_ns: int) -> Job:
        """A new job record (state running, pid unset), or ``job_limit``."""
        if len(self.running(account)) >= self.limits.jobs_per_account:
            raise Rejected("job_limit", f"at most {self.limits.jobs_per_account} jobs run at "
                           "once per account")
        self.counter += 1
        job = Job(f"{self.prefix}{self.counter}", account, request.argv, now_ns,
                  tokens=float(self.limits.output_burst), refilled_ns=now_ns)
        self.jobs[job.id] = job
        return job

    def started(self, job_id: str, pid: int, frozen: bool) -> None:
        """The job's process runs as ``pid``."""
        job = self.jobs[job_id]
        job.pid = pid
        job.state = FROZEN if frozen else RUNNING

    def failed(self, job_id: str) -> None:
        """The process could not start: the job is forgotten."""
        self.jobs.pop(job_id, None)

    def set_frozen(self, account: str, frozen: bool) -> None:
        """Mark the account's live jobs frozen or running."""
        for job in self.running(account):
            job.state = FROZEN if frozen else RUNNING

    def plan(self, job_id: str, available: int, now_ns: int) -> tuple[int, int]:
        """(read, skip) for ``available`` unread bytes of a job's output file: read the first
        ``read`` bytes now (the bucket and the total admit them), then drop ``skip`` bytes;
        the rest waits for the bucket (at most a burst's worth: older bytes over it are
        dropped). Past the total, everything is dropped."""
        job = self.jobs[job_id]
        lim = self.limits
        elapsed = max(0, now_ns - job.refilled_ns) / 1e9
        job.tokens = min(float(lim.output_burst), job.tokens + elapsed * lim.output_rate)
        job.refilled_ns = now_ns
        left = max(0, lim.output_total - job.sent)
        read = max(0, min(available, int(job.tokens), left))
        rest = available - read
        skip = rest if read >= left else max(0, rest - lim.output_burst)
        return read, skip

    def emit(self, job_id: str, stream: str, data: bytes, skipped: int = 0) -> list[Chunk]:
        """The chunks for ``data`` (admitted by :meth:`plan`) and, for ``skipped`` dropped
        bytes, the marker: the first drop since output last went out adds one (empty,
        ``dropped`` = total so far)."""
        job = self.jobs[job_id]
        job.tokens -= len(data)
        job.sent += len(data)
        out: list[Chunk] = []
        for start in range(0, len(data), self.limits.chunk):
            piece = data[start:start + self.limits.chunk]
            out.append(Chunk(job.id, job.account, self._next(job), stream, piece))
        if data:
            job.marked = False
        if skipped > 0:
            job.dropped += skipped
            if not job.marked:
                job.marked = True
                out.append(Chunk(job.id, job.account, self._next(job), stream, b"", job.dropped))
        return out

    def output(self, job_id: str, stream: str, data: bytes, now_ns: int) -> list[Chunk]:
        """The chunks to publish for ``data`` read at once (nothing waits: what the rate or
        the total does not admit is dropped and counted, with one marker)."""
        read, _ = self.plan(job_id, len(data), now_ns)
        return self.emit(job_id, stream, data[:read], len(data) - read)

    def exited(self, job_id: str, status: int | None, sig: int | None, cpu_s: float,
               peak_memory: int, now_ns: int) -> Job:
        """Record the exit; returns the job with the ``seq`` of its ``job.exit``."""
        job = self.jobs[job_id]
        job.state, job.status, job.signal = EXITED, status, sig
        job.cpu_s, job.peak_memory, job.ended_ns = cpu_s, peak_memory, now_ns
        self._next(job)
        done = [j for j in self.of(job.account) if j.state == EXITED]
        for old in done[:max(0, len(done) - self.limits.finished_kept)]:
            del self.jobs[old.id]
        return job

    def forget(self, account: str) -> None:
        """Drop every record of an account that left the host."""
        for job in self.of(account):
            del self.jobs[job.id]

    @staticmethod
    def _next(job: Job) -> int:
        job.seq += 1
        return job.seq
