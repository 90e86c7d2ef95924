"""What a host keeps of its jobs across a restart, and whom a restarted host adopts.

Pure (no I/O): the adapter (:mod:`tycoon.auctioneer.jobhost`) writes these records next to
the jobs' output files and reads them back when the auctioneer starts again. A record holds
the job's pid *and* its start time (``/proc/<pid>/stat``, clock ticks since boot), its
account and uid, how far its output files were read, the sequence number reached and the
chunks last published (``pending``: republished, same ``seq`` and bytes, after a crash
between writing the record and publishing them, so no reader sees a gap).

:func:`refusal` is the rule protecting other people's processes: a restarted host takes
back a pid only if it is still the process it started — same boot, same start time, still
the leader of its own session, and (confined) still running as the account's uid inside
the account's cgroup, or (unconfined, the simulated driver) still carrying
``TYCOON_JOB=<id>`` in its environment. Anything else is a stranger that got the pid: it is
never signalled. :func:`shim_refusal` decides the same of the job's shim (its parent, which
writes its exit status: :func:`exit_fields` reads it), so the job ends with its real status
— unknown only if the shim's file is missing. docs/jobs.md.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from tycoon.auctioneer.jobs import EXITED, FROZEN, RUNNING, Job

_ID = re.compile(r"^[a-z0-9]{1,40}$")
STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class Pending:
    """One chunk published last (or about to be): where its bytes are in the output file."""

    seq: int
    stream: str
    offset: int
    length: int
    dropped: int = 0
    """Non-zero: a marker chunk (no bytes)."""


def to_record(job: Job, pending: list[Pending]) -> dict[str, Any]:
    """The job as JSON-able data."""
    return {
        "id": job.id, "account": job.account, "argv": list(job.argv),
        "started_ns": job.started_ns, "pid": job.pid, "start_ticks": job.start_ticks,
        "uid": job.uid, "shim": [job.shim_pid, job.shim_ticks], "state": job.state,
        "seq": job.seq, "sent": job.sent,
        "dropped": job.dropped, "marked": job.marked, "status": job.status,
        "signal": job.signal, "cpu_s": job.cpu_s, "peak_memory": job.peak_memory,
        "ended_ns": job.ended_ns, "offsets": dict(job.offsets), "adopted": job.adopted,
        "exit_sent": job.exit_sent, "collect": list(job.collect), "workdir": job.workdir,
        "proof": base64.b64encode(job.proof).decode(),
        "pending": [[p.seq, p.stream, p.offset, p.length, p.dropped] for p in pending],
    }


def from_record(data: dict[str, Any]) -> tuple[Job, list[Pending]]:
    """A job and its pending chunks from :func:`to_record`'s data; ``ValueError`` if any
    field is missing or of the wrong type (the record is then ignored)."""
    try:
        job = Job(_text(data["id"]), _text(data["account"]),
                  tuple(_text(a, 1 << 16) for a in _list(data["argv"])),
                  _int(data["started_ns"]),
                  pid=_int(data["pid"]), start_ticks=_int(data["start_ticks"]),
                  uid=_int(data["uid"], low=-1), state=_state(data["state"]),
                  shim_pid=_int(_list(data.get("shim", [0, 0]))[0]),
                  shim_ticks=_int(_list(data.get("shim", [0, 0]))[1]),
                  seq=_int(data["seq"]), sent=_int(data["sent"]), dropped=_int(data["dropped"]),
                  marked=bool(data["marked"]),
                  status=None if data["status"] is None else _int(data["status"], low=-64),
                  signal=None if data["signal"] is None else _int(data["signal"]),
                  cpu_s=float(data["cpu_s"]), peak_memory=_int(data["peak_memory"]),
                  ended_ns=_int(data["ended_ns"]),
                  offsets={s: _int(data["offsets"][s]) for s in STREAMS},
                  adopted=bool(data["adopted"]), exit_sent=bool(data["exit_sent"]),
                  collect=tuple(_text(p, 255) for p in _list(data.get("collect", []))),
                  workdir=_text(data.get("workdir", ""), 4096),  # bundles: collect at exit
                  proof=base64.b64decode(_text(data.get("proof", ""), 1 << 19)))
        pending = [Pending(_int(seq), _stream(stream), _int(offset), _int(length), _int(drop))
                   for seq, stream, offset, length, drop in _list(data["pending"])]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"bad job record: {error}") from error
    if not _ID.match(job.id):
        raise ValueError(f"bad job id {job.id[:40]!r}")
    return job, pending


def refusal(job: Job, *, alive: bool, start_ticks: int, sid: int, uid: int,
            job_env: str | None, in_sandbox: bool | None, confined: bool) -> str | None:
    """Why the process now at ``job.pid`` must not be adopted as ``job``; None: it is the job.

    ``alive``: a process has the pid; ``job_env``: its ``TYCOON_JOB`` (None: unreadable or
    absent); ``in_sandbox``: it is in the account's cgroup (None: no cgroup here)."""
    if job.pid <= 1:
        return "pid 0 or 1 is never a job"
    if not alive:
        return "gone"
    if start_ticks != job.start_ticks:
        return "pid reused (another start time)"
    if sid != job.pid:
        return "not the leader of the job's session"
    if confined:
        if job.uid < 0 or uid != job.uid:
            return "runs as another uid"
        if in_sandbox is not True:
            return "not in the account's sandbox"
    elif job_env != job.id:
        return "no TYCOON_JOB of this job in its environment"
    return None


def shim_refusal(job: Job, *, alive: bool, start_ticks: int, uid: int, job_env: str | None,
                 in_sandbox: bool | None, confined: bool, host_uid: int) -> str | None:
    """Why the process now at ``job.shim_pid`` must not be taken as the job's shim (the
    process whose end means the exit file is written); None: it is. Like :func:`refusal`:
    same start time, and (confined) still this host's uid (root: the job's uid cannot have
    replaced it) inside the account's cgroup, or (unconfined) ``TYCOON_JOB`` of this job."""
    if job.shim_pid <= 1:
        return "no shim"
    if not alive:
        return "gone"
    if start_ticks != job.shim_ticks:
        return "pid reused (another start time)"
    if confined:
        if uid != host_uid:
            return "runs as another uid"
        if in_sandbox is not True:
            return "not in the account's sandbox"
    elif job_env != job.id:
        return "no TYCOON_JOB of this job in its environment"
    return None


def exit_fields(data: Any) -> tuple[int, float, int] | None:
    """(status, CPU seconds, peak memory) from a shim's exit file; None if malformed."""
    if not isinstance(data, dict):
        return None
    status, cpu_s, peak = data.get("status"), data.get("cpu_s"), data.get("peak_memory")
    if isinstance(status, bool) or not isinstance(status, int) or not -64 <= status <= 255:
        return None
    if isinstance(cpu_s, bool) or not isinstance(cpu_s, int | float) or not 0 <= cpu_s < 1e12:
        return None
    if isinstance(peak, bool) or not isinstance(peak, int) or peak < 0:
        return None
    return status, float(cpu_s), peak


def _int(value: Any, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{value!r} is not an integer ≥ {low}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError("not a list")
    return value


def _text(value: Any, most: int = 128) -> str:
    if not isinstance(value, str) or len(value) > most:
        raise ValueError("not a short string")
    return value


def _state(value: Any) -> str:
    if value not in (RUNNING, FROZEN, EXITED):
        raise ValueError(f"unknown state {value!r}")
    return str(value)


def _stream(value: Any) -> str:
    if value not in STREAMS:
        raise ValueError(f"unknown stream {value!r}")
    return str(value)
