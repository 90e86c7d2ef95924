"""Running a user's process on a host: in the account's sandbox, as an unprivileged user.

:func:`spawn` starts one process: in the child, before ``exec``, it joins the account's
cgroups (writing its own pid to each ``cgroup.procs``, so no child of it escapes), drops
every supplementary group, sets the account's gid and uid, and only then changes to the
working directory (so the directory is reached with the user's rights, not root's).
:class:`UidMap` gives every account its own uid from a configured range, deterministic and
collision-checked, persisted in a file. :func:`confinement` picks how a driver freezes,
caps and ends an account's processes: the cgroups driver with its freezer and pids
controllers; the simulated driver runs real **unconfined** processes (tests, the local
demo) and freezes them with SIGSTOP/SIGCONT. The Xen driver runs none: a VM's owner runs
work inside the VM (docs/drivers.md). See docs/jobs.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import pwd
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.vmm.validate import sandbox_name

log = get_logger("vmm.jobs")
UID_RANGE = (60000, 60999)
"""The default range of per-account uids (and gids of the same numbers)."""
PATH = "/usr/local/bin:/usr/bin:/bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class UidMap:
    """account → uid, from ``[low, high]``: the start is the account's hash, the next free
    uid (not mapped, not a user of this system, not root) is taken; persisted in ``path``."""

    def __init__(self, path: Path, low: int = UID_RANGE[0], high: int = UID_RANGE[1]) -> None:
        if not 1000 <= low <= high < 2**31:
            raise ValueError("the uid range must lie in 1000..2^31 and be ordered")
        self.path, self.low, self.high = Path(path), low, high
        self.map: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError):
            loaded = json.loads(self.path.read_text())
            self.map = {str(k): int(v) for k, v in loaded.items()}

    def uid(self, account: str) -> int:
        """The account's uid (assigned and saved on first use)."""
        if account in self.map:
            return self.map[account]
        size = self.high - self.low + 1
        taken = set(self.map.values())
        start = int.from_bytes(hashlib.sha256(account.encode()).digest()[:8], "big") % size
        for step in range(size):
            uid = self.low + (start + step) % size
            if uid not in taken and not _system_user(uid):
                self.map[account] = uid
                self._save()
                return uid
        raise Rejected("job_limit", "no free uid left in the configured range")

    def release(self, account: str) -> None:
        """Free the account's uid (the account left the host)."""
        if self.map.pop(account, None) is not None:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.map, handle, sort_keys=True)
        os.replace(tmp, self.path)


def _system_user(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


@dataclass(frozen=True)
class Started:
    """A spawned job process."""

    process: subprocess.Popen[bytes]
    pid: int
    start_ticks: int
    """Its start time (clock ticks since boot): the pid's identity."""


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc`` says of a live process (for re-adopting it after a restart)."""

    start_ticks: int
    sid: int
    uid: int
    job_env: str | None
    """Its ``TYCOON_JOB`` (None: absent, or its environment is unreadable)."""


def spawn(argv: Sequence[str], *, env: dict[str, str], cwd: Path, uid: int | None,
          procs_files: Sequence[Path] = (), stdout: int, stderr: int) -> Started:
    """Start ``argv`` with stdin from /dev/null and stdout/stderr on the given descriptors
    (the host's output files, so the job outlives the host's process), in its own
    session, inside the cgroups whose ``cgroup.procs`` files are given, as ``uid`` (gid
    the same, no supplementary groups; None: as this process's user, unconfined).

    A start failure (no such program, no permission, cgroup refused) raises
    ``Rejected("malformed"|"driver_failed")`` naming it; nothing keeps running then."""
    if uid is not None and os.geteuid() != 0:
        raise Rejected("driver_failed", "running jobs as their own uid needs root")
    files = [str(p) for p in procs_files]
    workdir = str(cwd)

    def enter() -> None:  # in the child, between fork and exec: no allocation-heavy work
        pid = str(os.getpid())
        for name in files:
            fd = os.open(name, os.O_WRONLY)
            try:
                os.write(fd, pid.encode())
            finally:
                os.close(fd)
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        os.chdir(workdir)

    try:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env,
            close_fds=True, start_new_session=True,
            preexec_fn=enter,  # the cgroup and the uid are set before exec
        )
    except FileNotFoundError as error:
        raise Rejected("malformed", f"no such program: {argv[0][:200]}") from error
    except PermissionError as error:
        raise Rejected("forbidden", f"cannot run {argv[0][:200]}: {error.strerror}") from error
    except (OSError, subprocess.SubprocessError) as error:
        raise Rejected("driver_failed", f"cannot start the job: {error}") from error
    stat = proc_stat(process.pid)
    return Started(process, process.pid, stat.start_ticks if stat else 0)


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
    return ProcStat(int(fields[19]), int(fields[3]), uid, job_env)  # starttime, session


def boot_id() -> str:
    """This boot's id: start times count from boot, so a record of another boot adopts
    nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_PUNCH = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE


def punch(fd: int, length: int, start: int = 0) -> bool:
    """Free the disk blocks of a file's bytes ``start``..``length`` (already published or
    dropped), keeping its size and offsets; False where the file system cannot."""
    if length <= start:
        return True
    result = _LIBC.fallocate(fd, _PUNCH, ctypes.c_long(start), ctypes.c_long(length - start))
    return bool(result == 0)


def base_env(account: str, job: str, home: Path, extra: dict[str, str]) -> dict[str, str]:
    """The job's whole environment: nothing of the host's but PATH; the request's allowed
    names; HOME, TYCOON_ACCOUNT and TYCOON_JOB."""
    return {**extra, "PATH": PATH, "HOME": str(home), "TYCOON_ACCOUNT": account,
            "TYCOON_JOB": job}


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


class Confinement:
    """How one driver confines an account's jobs. This base: **unconfined** processes (the
    simulated driver): no cgroup, no uid change, freezing by SIGSTOP/SIGCONT."""

    confined = False

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def procs_files(self, account: str) -> list[Path]:
        return []

    def prepare(self, account: str, pids_max: int) -> None:
        """Ready the account's sandbox for jobs (the pids cap)."""

    def freeze(self, account: str, frozen: bool, pids: Sequence[int]) -> None:
        """Freeze or thaw the account's processes (``pids``: its job leaders' sessions)."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def kill_rest(self, account: str) -> None:
        """SIGKILL whatever of the account still runs (after the grace)."""

    def holds(self, account: str, pid: int) -> bool | None:
        """Whether ``pid`` is in the account's sandbox (None: no sandbox to ask)."""
        return None

    def cpu_seconds(self, account: str) -> float:
        return 0.0

    def memory_bytes(self, account: str) -> int:
        return 0


class CgroupConfinement(Confinement):
    """The cgroups driver: the account's cgroups, the freezer and the pids controller."""

    confined = True

    def _name(self, account: str) -> str:
        return str(self.driver.sandbox(account))

    def procs_files(self, account: str) -> list[Path]:
        if not self.driver.exists(account):
            self.driver.create(account)
        return list(self.driver.backend.procs_files(self._name(account)))

    def prepare(self, account: str, pids_max: int) -> None:
        self.procs_files(account)
        if not self.driver.backend.set_pids_max(self._name(account), pids_max):
            log.warning("no pids controller: job process counts are not capped")

    def freeze(self, account: str, frozen: bool, pids: Sequence[int]) -> None:
        if not self.driver.backend.freeze(self._name(account), frozen):
            super().freeze(account, frozen, pids)  # no freezer here: stop the sessions

    def kill_rest(self, account: str) -> None:
        if self.driver.exists(account):
            self.driver.backend.kill(self._name(account))

    def holds(self, account: str, pid: int) -> bool | None:
        if not self.driver.exists(account):
            return False
        return pid in self.driver.procs(account)

    def cpu_seconds(self, account: str) -> float:
        try:
            return float(self.driver.cpu_seconds(account))
        except Rejected:
            return 0.0

    def memory_bytes(self, account: str) -> int:
        try:
            return int(self.driver.backend.memory_bytes(self._name(account)))
        except Rejected:
            return 0


def confinement(driver: Any) -> Confinement:
    """The confinement of a driver's jobs; ``Rejected("driver_failed")`` if it runs none."""
    if getattr(driver, "name", "") == "cgroups":
        return CgroupConfinement(driver)
    if getattr(driver, "name", "") == "simulated":
        log.warning("simulated driver: jobs run as real UNCONFINED processes of this user "
                    "(no cgroup, no uid change): for tests and the local demo only")
        return Confinement(driver)
    raise Rejected("driver_failed", f"the {getattr(driver, 'name', '?')} driver runs no jobs "
                   "(a VM's owner runs work inside the VM: docs/drivers.md)")


def workdir(root: Path, account: str, uid: int | None) -> Path:
    """The account's own working directory ``<root>/<sandbox>`` (0700, owned by its uid)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / sandbox_name(account)
    path.mkdir(mode=0o700, exist_ok=True)
    if uid is not None:
        os.chown(path, uid, uid)
    os.chmod(path, 0o700)
    return path
