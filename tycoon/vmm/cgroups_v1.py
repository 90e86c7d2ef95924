"""cgroup v1: one hierarchy per controller (``cpu``, ``cpuacct``, ``memory``, ``blkio``).

Knobs: ``cpu.shares`` (2..262144) for the proportional CPU share, ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us`` for a hard cap, ``memory.limit_in_bytes`` for memory, ``blkio.weight``
(10..1000, CFQ) or ``blkio.bfq.weight`` (1..1000, BFQ) for block io. CPU time comes from
``cpuacct.usage`` (ns), memory from ``memory.usage_in_bytes``.
"""

from __future__ import annotations

import os
from pathlib import Path

from tycoon.errors import Rejected
from tycoon.vmm import cgroupfs
from tycoon.vmm.cgroups_backend import MIN_QUOTA_US, Backend, scale

CPU_SHARES_TOP = 100_000
"""A share of 1.0 is 100000 ``cpu.shares`` (so 0.00002 still gets the kernel's minimum, 2)."""
CPU_SHARES_MIN, CPU_SHARES_MAX = 2, 262_144
UNLIMITED = -1
JOB_CONTROLLERS: tuple[str, ...] = ("cpu", "cpuacct", "freezer", "pids")
"""What a v1 host running jobs needs: cpu weights, cpu time, freezing and process caps."""


def lacks(*, pinned: bool = False, mounts: cgroupfs.Mounts | None = None) -> str | None:
    """What this machine lacks to be a cgroup v1 host running jobs (None: nothing): root
    (cgroups and per-account uids) and :data:`JOB_CONTROLLERS`, with ``cpuset`` when hosts
    are ``pinned`` to CPUs (``tycoon up --driver cgroups``)."""
    if os.geteuid() != 0:
        return "needs root (cgroups and per-account uids)"
    v1 = (mounts or cgroupfs.find_mounts()).v1
    wanted = (*JOB_CONTROLLERS, "cpuset") if pinned else JOB_CONTROLLERS
    lacking = [c for c in wanted if c not in v1]
    return f"needs the cgroup v1 controllers {lacking}" if lacking else None


class V1Backend(Backend):
    """The driver's sandboxes in the v1 hierarchies."""

    version = "v1"

    def __init__(self, mounts: cgroupfs.Mounts, root: str, parent: str = "/",
                 cpus: str | None = None) -> None:
        """``cpus``: pin every sandbox to these CPUs (``0``, ``2-3``) with a cpuset."""
        super().__init__(root, parent)
        missing = [c for c in ("cpu", "cpuacct") if c not in mounts.v1]
        if missing:
            raise Rejected("driver_failed", f"cgroup v1 controller(s) not mounted: {missing}")
        self.mounts = mounts
        # controller -> root dir; co-mounted controllers (cpu,cpuacct) share one dir
        self.bases: dict[str, Path] = {
            c: self._base(mounts.v1[c], c)
            for c in ("cpu", "cpuacct", "memory", "blkio", "freezer", "pids")
            if c in mounts.v1
        }
        self._io_file: str | None = None
        self.cpus = cpus
        if cpus is not None:
            if "cpuset" not in mounts.v1:
                raise Rejected("driver_failed", "cpus given but no cgroup v1 cpuset is mounted")
            self.bases["cpuset"] = self._base(mounts.v1["cpuset"], "cpuset")

    def _dir(self, controller: str, name: str) -> Path:
        return self.bases[controller] / name

    def _unique_bases(self) -> list[Path]:
        seen: list[Path] = []
        for path in self.bases.values():
            if path not in seen:
                seen.append(path)
        return seen

    def knobs(self) -> set[str]:
        found: set[str] = set()
        cpu_mount = self.mounts.v1["cpu"]
        if cgroupfs.writable(cpu_mount / "cpu.shares"):
            found.add("cpu_weight")
        if (cpu_mount / "cpu.cfs_quota_us").exists():
            found.add("cpu_cap")
        if "memory" in self.mounts.v1:
            found.add("memory")
        if "blkio" in self.mounts.v1:
            found.add("io")
        return found

    def setup(self) -> None:
        for path in self._unique_bases():
            cgroupfs.make_dir(path)
        if self.cpus is not None:
            self._setup_cpuset(self.bases["cpuset"], self.cpus)

    def _setup_cpuset(self, root: Path, cpus: str) -> None:
        """The root's CPUs, its parent's memory nodes, and ``clone_children`` so that every
        sandbox created under it starts with the same cpuset (a v1 cpuset starts empty)."""
        mems = cgroupfs.read_text(root.parent / "cpuset.mems")
        cgroupfs.write(root / "cpuset.cpus", cpus)
        cgroupfs.write(root / "cpuset.mems", mems)
        cgroupfs.write(root / "cgroup.clone_children", 1)
        for sandbox in (p for p in root.iterdir() if p.is_dir()):  # adopted from a last run
            cgroupfs.write(sandbox / "cpuset.cpus", cpus)
            cgroupfs.write(sandbox / "cpuset.mems", mems)

    def root_dirs(self) -> list[Path]:
        return self._unique_bases()

    def dirs(self, name: str) -> list[Path]:
        return [base / name for base in self._unique_bases()]

    def procs_files(self, name: str) -> list[Path]:
        return [path / "cgroup.procs" for path in self.dirs(name)]

    def set_cpu_weight(self, name: str, share: float) -> None:
        value = scale(share, CPU_SHARES_TOP, CPU_SHARES_MIN, CPU_SHARES_MAX)
        cgroupfs.write(self._dir("cpu", name) / "cpu.shares", value)

    def set_cpu_cap(self, name: str, quota_us: int | None, period_us: int) -> None:
        cpu = self._dir("cpu", name)
        if quota_us is None:
            cgroupfs.write(cpu / "cpu.cfs_quota_us", UNLIMITED)
            return
        if cgroupfs.read_int(cpu / "cpu.cfs_period_us") != period_us:
            cgroupfs.write(cpu / "cpu.cfs_period_us", period_us)
        cgroupfs.write(cpu / "cpu.cfs_quota_us", max(MIN_QUOTA_US, quota_us))

    def set_memory(self, name: str, limit: int | None) -> None:
        if "memory" not in self.bases:
            return
        value = UNLIMITED if limit is None else limit
        cgroupfs.write(self._dir("memory", name) / "memory.limit_in_bytes", value)

    def set_io(self, name: str, share: float) -> None:
        if "blkio" not in self.bases:
            return
        blkio = self._dir("blkio", name)
        if self._io_file is None:
            # CFQ's blkio.weight (10..1000) when present, else BFQ's blkio.bfq.weight (1..1000)
            for candidate in ("blkio.weight", "blkio.bfq.weight"):
                if (blkio / candidate).exists():
                    self._io_file = candidate
                    break
            else:
                self._io_file = ""
        if not self._io_file:
            return  # no proportional io scheduler on this host
        low = 10 if self._io_file == "blkio.weight" else 1
        cgroupfs.write(blkio / self._io_file, scale(share, 1000, low, 1000))

    def cpu_ns(self, name: str) -> int:
        return cgroupfs.read_int(self._dir("cpuacct", name) / "cpuacct.usage")

    def memory_bytes(self, name: str) -> int:
        if "memory" not in self.bases:
            return 0
        return cgroupfs.read_int(self._dir("memory", name) / "memory.usage_in_bytes")

    def freeze(self, name: str, frozen: bool) -> bool:
        if "freezer" not in self.bases:
            return False
        cgroupfs.write(self._dir("freezer", name) / "freezer.state",
                       "FROZEN" if frozen else "THAWED")
        return True

    def set_pids_max(self, name: str, limit: int | None) -> bool:
        if "pids" not in self.bases:
            return False
        cgroupfs.write(self._dir("pids", name) / "pids.max", "max" if limit is None else limit)
        return True

    def paths(self, name: str) -> dict[str, Path]:
        """Per controller, the sandbox's directory (for status and docs)."""
        return {c: self._dir(c, name) for c in self.bases}
