"""What ``/proc`` says of a job's processes: identity (start time, session, uid,
``TYCOON_JOB``), this boot's id, CPU time and resident memory (Linux, no privileges).

A pid is reused; its start time (clock ticks since boot) and the boot's id are what tell a
job's process from another that took its number (docs/jobs.md, "Restart").
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc`` says of a live process (for re-adopting it after a restart)."""

    start_ticks: int
    sid: int
    uid: int
    job_env: str | None
    """Its ``TYCOON_JOB`` (None: absent, or its environment is unreadable)."""
    ppid: int = 0


def proc_stat(pid: int) -> ProcStat | None:
    """Start time, session, real uid and ``TYCOON_JOB`` of a live process; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    fields = text[text.rfind(")") + 2:].split()
    uid = next((int(line.split()[1]) for line in status.splitlines()
                if line.startswith("Uid:")), -1)
    job_env = None
    with contextlib.suppress(OSError):
        for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if item.startswith(b"TYCOON_JOB="):
                job_env = item[len(b"TYCOON_JOB="):].decode("ascii", "replace")
    return ProcStat(int(fields[19]), int(fields[3]), uid, job_env,  # starttime, session
                    int(fields[1]))  # ppid


def boot_id() -> str:
    """This boot's id: start times count from boot, so a record of another boot adopts
    nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float:
    """CPU time of a live process and its reaped children (``/proc/<pid>/stat``); 0 if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rfind(")") + 2:].split()
    return sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime stime cutime cstime


def rss_bytes(pid: int) -> int:
    """Resident memory of a live process (``/proc/<pid>/statm``); 0 if gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
