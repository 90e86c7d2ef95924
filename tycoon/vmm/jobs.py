"""Running a user's process on a host: in the account's sandbox, as an unprivileged user.

:func:`spawn` starts one process: in the child, before ``exec``, it joins the account's
cgroups (writing its own pid to each ``cgroup.procs``, so no child of it escapes), drops
every supplementary group, sets the account's gid and uid, and only then changes to the
working directory (so the directory is reached with the user's rights, not root's).
:class:`UidMap` gives every account its own uid from a configured range, deterministic and
collision-checked, persisted in a file. How a driver freezes, caps and ends an account's
processes is :mod:`.confine`; what ``/proc`` says of them, :mod:`.procinfo`. See
docs/jobs.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tycoon.errors import Rejected
from tycoon.vmm.procinfo import proc_stat
from tycoon.vmm.validate import sandbox_name
from tycoon.waiting import wait_set

UID_RANGE = (60000, 60999)
"""The default range of per-account uids (and gids of the same numbers)."""
PATH = "/usr/local/bin:/usr/bin:/bin"
JOBS_PER_CORE = 32
"""Default host-wide cap on running jobs, all accounts together: this many per core."""
PIDS_PER_CORE, PIDS_SHARE = 2048, 4
"""Default host-wide cap on the jobs' processes: this many per core, and never more than
1/``PIDS_SHARE`` of the kernel's ``pid_max`` (the rest is the system's)."""


def host_jobs_default(cores: int | None = None) -> int:
    """Jobs a host runs at once for all accounts together (``--host-jobs``)."""
    return JOBS_PER_CORE * max(1, cores or os.cpu_count() or 1)


def host_pids_default(cores: int | None = None, pid_max: int | None = None) -> int:
    """Processes a host's jobs hold at once for all accounts together (``--host-pids``):
    from the cores, capped by ``/proc/sys/kernel/pid_max``."""
    if pid_max is None:
        try:
            pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        except (OSError, ValueError):
            pid_max = 32768
    per_cores = PIDS_PER_CORE * max(1, cores or os.cpu_count() or 1)
    return max(64, min(per_cores, pid_max // PIDS_SHARE))


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
    """A spawned job: its program, and the shim that is its parent (:mod:`.jobshim`)."""

    process: subprocess.Popen[bytes]
    """The shim (this process's child; the program is the shim's)."""
    pid: int
    """The program: its own session and process group (signals go there)."""
    start_ticks: int
    """The program's start time (clock ticks since boot): the pid's identity."""
    shim_pid: int = 0
    shim_ticks: int = 0



SHIM = Path(__file__).with_name("jobshim.py")
SHIM_TIMEOUT_S = 10.0
"""How long a start may take (the shim's interpreter, the program's exec) before it fails."""


async def spawn(argv: Sequence[str], *, env: dict[str, str], cwd: Path, uid: int | None,
                procs_files: Sequence[Path] = (), stdout: int, stderr: int,
                exit_file: Path, frozen: Callable[[], bool] = lambda: False) -> Started:
    """Start ``argv`` through its shim (:mod:`.jobshim`): stdin /dev/null, stdout/stderr on
    the given descriptors (the host's output files, so the job outlives the host's
    process), in its own session, inside the cgroups whose ``cgroup.procs`` files are
    given, as ``uid`` (gid the same, no supplementary groups; None: as this process's user,
    unconfined); the shim writes its exit status to ``exit_file``.

    A start failure (no such program, no permission, cgroup refused) raises
    ``Rejected("malformed"|"forbidden"|"driver_failed")`` naming it; nothing keeps running
    then. ``frozen()``: whether the account's cgroup is frozen now (asked while waiting):
    the program stops before its exec — this returns once it is forked, and a failed exec
    ends the job with status 127 (its reason on the job's stderr)."""
    if uid is not None and os.geteuid() != 0:
        raise Rejected("driver_failed", "running jobs as their own uid needs root")
    spec = shim_spec(argv, env, cwd, uid, procs_files, exit_file)
    memfd = os.memfd_create("tycoon-job", os.MFD_CLOEXEC)
    read_end, write_end = os.pipe()
    try:
        os.write(memfd, spec)
        os.lseek(memfd, 0, os.SEEK_SET)
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(SHIM), str(write_end)], stdin=memfd,
            stdout=stdout, stderr=stderr, close_fds=True, pass_fds=(write_end,),
            start_new_session=True, env={"PATH": PATH, "TYCOON_JOB": env["TYCOON_JOB"]})
    except OSError as error:
        os.close(read_end)
        raise Rejected("driver_failed", f"cannot start the job's shim: {error}") from error
    finally:
        os.close(memfd)
        os.close(write_end)
    try:
        lines = await _lines(read_end, frozen)
    finally:
        os.close(read_end)
    pid = int(lines[0].split()[1]) if lines and lines[0].startswith("pid ") else 0
    if not lines or pid <= 1 or (len(lines) < 2 and not frozen()):
        _abandon(process, pid)
        raise Rejected("driver_failed", "the job's shim did not start it in time")
    if len(lines) > 1 and lines[1] != "ok":
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=2.0)  # it exits at once (its exit file: status 127)
        number, stage = [*lines[1].split(), "0", "?"][1:3]
        reason = os.strerror(int(number)) if number.isdigit() else "?"
        if stage == "exec" and number == str(errno.ENOENT):
            raise Rejected("malformed", f"no such program: {argv[0][:200]}")
        if stage == "exec" and number in (str(errno.EACCES), str(errno.EPERM)):
            raise Rejected("forbidden", f"cannot run {argv[0][:200]}: {reason}")
        raise Rejected("driver_failed", f"cannot start the job ({stage}): {reason}")
    stat, shim = proc_stat(pid), proc_stat(process.pid)
    return Started(process, pid, stat.start_ticks if stat else 0, process.pid,
                   shim.start_ticks if shim else 0)


def shim_spec(argv: Sequence[str], env: dict[str, str], cwd: Path, uid: int | None,
              procs_files: Sequence[Path], exit_file: Path) -> bytes:
    """What the shim reads on its stdin (:func:`tycoon.vmm.jobshim.parse`): NUL-separated
    fields (none of them holds a NUL: ``Rejected("malformed")`` if one does)."""
    procs = [str(p) for p in procs_files]
    entries = [f"{k}={v}" for k, v in env.items()]
    items = [str(-1 if uid is None else uid), str(cwd), str(exit_file),
             str(len(procs)), *procs, str(len(argv)), *argv, str(len(entries)), *entries]
    if any("\0" in item for item in items) or any("=" in k or not k for k in env):
        raise Rejected("malformed", "a NUL byte (or a bad name) in argv, env or a path")
    return "\0".join(items).encode()


async def _lines(fd: int, frozen: Callable[[], bool]) -> list[str]:
    """The shim's ``pid`` line and its exec's outcome (only the first while ``frozen()``;
    fewer: it ended or timed out)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    data = b""
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        deadline = loop.time() + SHIM_TIMEOUT_S
        while data.count(b"\n") < (1 if frozen() else 2):
            ready.clear()
            try:
                part = os.read(fd, 4096)
            except BlockingIOError:
                if loop.time() >= deadline:
                    break
                await wait_set(ready, 0.1)  # frozen() may change meanwhile
                continue
            if not part:
                break
            data += part
    finally:
        loop.remove_reader(fd)
    return [line.decode(errors="replace") for line in data.split(b"\n")[:2] if line]


def _abandon(process: subprocess.Popen[bytes], pid: int) -> None:
    """A start that failed half-way: kill the program's group and the shim, reap the shim."""
    if pid > 1:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=2.0)



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


def workdir(root: Path, account: str, uid: int | None) -> Path:
    """The account's own working directory ``<root>/<sandbox>`` (0700, owned by its uid)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / sandbox_name(account)
    path.mkdir(mode=0o700, exist_ok=True)
    if uid is not None:
        os.chown(path, uid, uid)
    os.chmod(path, 0o700)
    return path
