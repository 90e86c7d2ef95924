"""cgroup v2: one unified hierarchy; controllers are enabled down the tree.

Knobs: ``cpu.weight`` (1..10000) for the proportional CPU share, ``cpu.max`` (``$QUOTA $PERIOD``
or ``max $PERIOD``) for a hard cap, ``memory.max`` for memory, ``io.weight`` (``default N``,
1..10000) for block io. CPU time comes from ``cpu.stat`` ``usage_usec`` (present even without
the cpu controller), memory from ``memory.current``. Controllers are enabled by writing
``+cpu +memory +io`` into ``cgroup.subtree_control`` of every ancestor of the sandboxes.
"""

from __future__ import annotations

import time
from pathlib import Path

from tycoon.errors import Rejected
from tycoon.vmm import cgroupfs
from tycoon.vmm.cgroups_backend import MIN_QUOTA_US, Backend, scale

WEIGHT_TOP = 10_000
"""A share of 1.0 is ``cpu.weight`` 10000 (the kernel's maximum); the minimum is 1."""
WANTED: tuple[str, ...] = ("cpu", "memory", "io", "pids")


class V2Backend(Backend):
    """The driver's sandboxes in the unified hierarchy."""

    version = "v2"

    def __init__(self, mounts: cgroupfs.Mounts, root: str, parent: str = "/") -> None:
        super().__init__(root, parent)
        if mounts.v2 is None:
            raise Rejected("driver_failed", "no cgroup2 file system is mounted")
        self.mount = mounts.v2
        self.base = self._base(mounts.v2, "")

    def _enabled(self) -> set[str]:
        """Controllers enabled for the sandboxes (the root's subtree_control)."""
        control = self.base / "cgroup.subtree_control"
        if control.exists():
            return set(cgroupfs.read_text(control).split())
        return set()

    def knobs(self) -> set[str]:
        enabled = self._enabled()
        found: set[str] = set()
        if "cpu" in enabled:
            found.update({"cpu_weight", "cpu_cap"})
        if "memory" in enabled:
            found.add("memory")
        if "io" in enabled:
            found.add("io")
        return found

    def setup(self) -> None:
        cgroupfs.make_dir(self.base)
        offered = set(cgroupfs.read_text(self.mount / "cgroup.controllers").split())
        wanted = [c for c in WANTED if c in offered]
        # every ancestor from the mount down to the root itself, which enables them for sandboxes
        chain = [self.mount / p for p in reversed(self.base.relative_to(self.mount).parents)]
        for directory in [*chain, self.base]:
            control = directory / "cgroup.subtree_control"
            enabled = set(cgroupfs.read_text(control).split())
            for controller in wanted:
                if controller not in enabled:
                    # refused when the cgroup holds processes (no internal processes rule);
                    # the knob is then missing and knobs() says so
                    try:
                        cgroupfs.write(control, f"+{controller}")
                    except Rejected:
                        continue

    def root_dirs(self) -> list[Path]:
        return [self.base]

    def dirs(self, name: str) -> list[Path]:
        return [self.base / name]

    def procs_files(self, name: str) -> list[Path]:
        return [self.base / name / "cgroup.procs"]

    def set_cpu_weight(self, name: str, share: float) -> None:
        cgroupfs.write(self.base / name / "cpu.weight", scale(share, WEIGHT_TOP, 1, WEIGHT_TOP))

    def set_cpu_cap(self, name: str, quota_us: int | None, period_us: int) -> None:
        quota = "max" if quota_us is None else str(max(MIN_QUOTA_US, quota_us))
        cgroupfs.write(self.base / name / "cpu.max", f"{quota} {period_us}")

    def set_memory(self, name: str, limit: int | None) -> None:
        path = self.base / name / "memory.max"
        if path.exists():
            cgroupfs.write(path, "max" if limit is None else limit)

    def set_io(self, name: str, share: float) -> None:
        path = self.base / name / "io.weight"
        if path.exists():
            cgroupfs.write(path, f"default {scale(share, WEIGHT_TOP, 1, WEIGHT_TOP)}")

    def cpu_ns(self, name: str) -> int:
        stat = cgroupfs.read_keyed(self.base / name / "cpu.stat")
        if "usage_usec" not in stat:
            raise Rejected("driver_failed", f"no usage_usec in {self.base / name / 'cpu.stat'}")
        return stat["usage_usec"] * 1000

    def memory_bytes(self, name: str) -> int:
        path = self.base / name / "memory.current"
        return cgroupfs.read_int(path) if path.exists() else 0

    def kill(self, name: str, timeout: float = 5.0) -> None:
        """``cgroup.kill`` (Linux 5.14+) when present, then wait; else SIGKILL one by one."""
        kill_file = self.base / name / "cgroup.kill"
        if kill_file.exists() and self.procs(name):
            cgroupfs.write(kill_file, 1)
            deadline = time.monotonic() + timeout
            while self.procs(name) and time.monotonic() < deadline:
                time.sleep(0.01)
        super().kill(name, timeout)

    def freeze(self, name: str, frozen: bool) -> bool:
        path = self.base / name / "cgroup.freeze"
        if not path.exists():
            return False
        cgroupfs.write(path, 1 if frozen else 0)
        return True

    def set_pids_max(self, name: str, limit: int | None) -> bool:
        path = self.base / name / "pids.max"
        if not path.exists():
            return False
        cgroupfs.write(path, "max" if limit is None else limit)
        return True

    def paths(self, name: str) -> dict[str, Path]:
        """The sandbox's directory (for status and docs)."""
        return {"unified": self.base / name}
