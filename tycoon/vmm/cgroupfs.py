"""The Linux cgroup file system as the cgroups driver sees it: mounts, files, host capacity.

Reads ``/proc/self/mounts`` to find the cgroup v1 hierarchies (one per controller, or
co-mounted) and the cgroup v2 unified hierarchy, and ``/proc/cpuinfo`` / ``/proc/meminfo``
for what the host has to sell. Nothing here decides anything; it only reads and writes.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tycoon.errors import Rejected

V1_CONTROLLERS: tuple[str, ...] = ("cpu", "cpuacct", "memory", "blkio", "freezer", "pids")
"""The v1 controllers the driver uses (cpu weights and caps, cpu time, memory, block io;
freezer and pids for jobs, docs/jobs.md)."""


@dataclass(frozen=True)
class Mounts:
    """Where the cgroup hierarchies are mounted."""

    v1: dict[str, Path] = field(default_factory=dict)  # controller -> mount point
    v2: Path | None = None  # the unified hierarchy, if mounted

    def v2_controllers(self) -> set[str]:
        """The controllers the unified hierarchy offers (``cgroup.controllers`` of its root)."""
        if self.v2 is None:
            return set()
        try:
            return set((self.v2 / "cgroup.controllers").read_text().split())
        except OSError:
            return set()


def find_mounts(mounts_file: str = "/proc/self/mounts") -> Mounts:
    """Parse the mount table for cgroup (v1) and cgroup2 mounts."""
    v1: dict[str, Path] = {}
    v2: Path | None = None
    try:
        lines = Path(mounts_file).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        point, fstype, options = _unescape(parts[1]), parts[2], parts[3].split(",")
        if fstype == "cgroup2" and v2 is None:
            v2 = Path(point)
        elif fstype == "cgroup":
            for option in options:
                if option in V1_CONTROLLERS or option == "cpuset":
                    v1.setdefault(option, Path(point))
    return Mounts(v1=v1, v2=v2)


def _unescape(text: str) -> str:
    """Undo the octal escapes of /proc/self/mounts (spaces in mount points)."""
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")


def self_cgroups(pid: int | str = "self") -> dict[str, str]:
    """The cgroup of a process per v1 controller, and under key ``""`` its v2 cgroup."""
    result: dict[str, str] = {}
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return result
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if not controllers:
            result[""] = path
        for controller in controllers.split(","):
            if controller:
                result[controller] = path
    return result


def read_text(path: Path) -> str:
    """A cgroup file's content, stripped; raises Rejected(driver_failed) if unreadable."""
    try:
        return path.read_text().strip()
    except OSError as error:
        raise Rejected("driver_failed", f"cannot read {path}: {error.strerror}") from error


def read_int(path: Path) -> int:
    """A cgroup file holding one integer."""
    text = read_text(path)
    try:
        return int(text.split()[0])
    except (ValueError, IndexError) as error:
        raise Rejected("driver_failed", f"{path} holds {text[:40]!r}, not an integer") from error


def read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (``key value`` per line), e.g. ``cpu.stat``."""
    values: dict[str, int] = {}
    for line in read_text(path).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            values[parts[0]] = int(parts[1])
    return values


def write(path: Path, value: str | int) -> None:
    """Write one value to a cgroup file; raises Rejected(driver_failed) with the reason."""
    try:
        with open(path, "w") as handle:
            handle.write(str(value))
    except OSError as error:
        raise Rejected(
            "driver_failed", f"cannot write {value!r} to {path}: {error.strerror}"
        ) from error


def writable(path: Path) -> bool:
    """Whether a cgroup file exists and this process may write it."""
    return path.is_file() and os.access(path, os.W_OK)


def make_dir(path: Path) -> None:
    """Create a cgroup directory (and its parents), idempotent."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise Rejected("driver_failed", f"cannot create {path}: {error.strerror}") from error


def remove_dir(path: Path) -> None:
    """Remove a cgroup directory and any child cgroups, bottom-up (no files: they are virtual)."""
    if not path.is_dir():
        return
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        remove_dir(child)
    try:
        path.rmdir()
    except FileNotFoundError:
        return
    except OSError as error:
        if error.errno != errno.ENOENT:
            raise Rejected("driver_failed", f"cannot remove {path}: {error.strerror}") from error


def pids(procs_file: Path) -> list[int]:
    """The processes listed in a ``cgroup.procs`` (or ``tasks``) file; [] if it is gone."""
    try:
        return [int(x) for x in procs_file.read_text().split()]
    except (OSError, ValueError):
        return []


def join(procs_files: Sequence[str]) -> None:
    """Move this process into the cgroups whose ``cgroup.procs`` files are given: plain
    syscalls only, so it may run in a child between fork and exec (``preexec_fn``)."""
    pid = str(os.getpid()).encode()
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)


# -- host capacity ------------------------------------------------------------------------

DEFAULT_MHZ = 2000
DEFAULT_NET = 1_000_000_000  # bit/s


def host_cores() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def host_mhz(cpuinfo: str = "/proc/cpuinfo") -> int:
    """The mean clock of the host's CPUs in MHz from /proc/cpuinfo, or a default of 2000."""
    clocks: list[float] = []
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "cpu MHz":
                clocks.append(float(value))
    except (OSError, ValueError):
        clocks = []
    return round(sum(clocks) / len(clocks)) if clocks else DEFAULT_MHZ


def host_memory(meminfo: str = "/proc/meminfo") -> int:
    """MemTotal in bytes."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def host_disk(path: str = "/") -> int:
    """The size in bytes of the file system holding ``path``."""
    return shutil.disk_usage(path).total
