"""What the cgroups driver needs from one cgroup version: the knobs, the counters, the dirs.

:class:`Backend` is implemented by :mod:`tycoon.vmm.cgroups_v1` and :mod:`tycoon.vmm.cgroups_v2`;
the driver (:mod:`tycoon.vmm.cgroups`) turns shares into the backend's knob values.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from abc import ABC, abstractmethod
from pathlib import Path

from tycoon.errors import Rejected
from tycoon.vmm import cgroupfs

KNOBS: tuple[str, ...] = ("cpu_weight", "cpu_cap", "memory", "io")
"""The knobs a backend may offer; :meth:`Backend.knobs` says which this host has."""

MIN_QUOTA_US = 1000
"""The smallest CFS quota the kernel accepts (1 ms per period)."""


def scale(share: float, top: int, low: int, high: int) -> int:
    """A share in [0, 1] as an integer weight ``round(share × top)`` clamped to [low, high]."""
    return max(low, min(high, round(share * top)))


class Backend(ABC):
    """One cgroup version's view of the driver's root: ``<mount>/<parent>/<root>/<name>``."""

    version: str = ""

    def __init__(self, root: str, parent: str = "/") -> None:
        self.root = root.strip("/")
        self.parent = parent
        if not self.root or ".." in self.root.split("/"):
            raise ValueError(f"bad cgroup root {root!r}")

    def _base(self, mount: Path, controller: str) -> Path:
        """``<mount>/<parent>/<root>``, where parent ``self`` is this process's own cgroup."""
        parent = self.parent
        if parent == "self":
            parent = cgroupfs.self_cgroups().get(controller, "/")
        parent = parent.strip("/")
        if ".." in parent.split("/"):
            raise ValueError(f"bad cgroup parent {self.parent!r}")
        return mount / parent / self.root if parent else mount / self.root

    @abstractmethod
    def knobs(self) -> set[str]:
        """The knobs of :data:`KNOBS` this host lets the driver write."""

    @abstractmethod
    def setup(self) -> None:
        """Create the driver's root (idempotent)."""

    @abstractmethod
    def dirs(self, name: str) -> list[Path]:
        """The cgroup directories of one sandbox (one per hierarchy used)."""

    @abstractmethod
    def root_dirs(self) -> list[Path]:
        """The driver's root directories (one per hierarchy used)."""

    @abstractmethod
    def set_cpu_weight(self, name: str, share: float) -> None:
        """Proportional CPU share under contention."""

    @abstractmethod
    def set_cpu_cap(self, name: str, quota_us: int | None, period_us: int) -> None:
        """A hard CPU cap (quota per period, None for none)."""

    @abstractmethod
    def set_memory(self, name: str, limit: int | None) -> None:
        """A memory limit in bytes (None for none)."""

    @abstractmethod
    def set_io(self, name: str, share: float) -> None:
        """Proportional block-io share."""

    @abstractmethod
    def cpu_ns(self, name: str) -> int:
        """CPU time used by the sandbox since it was created, in nanoseconds."""

    @abstractmethod
    def memory_bytes(self, name: str) -> int:
        """Memory the sandbox holds now, in bytes (0 if not measurable)."""

    @abstractmethod
    def procs_files(self, name: str) -> list[Path]:
        """The ``cgroup.procs`` files a process is written to, to join the sandbox."""

    def freeze(self, name: str, frozen: bool) -> bool:
        """Freeze (or thaw) every process of the sandbox; False if this host cannot."""
        return False

    def set_pids_max(self, name: str, limit: int | None) -> bool:
        """Cap the sandbox's process count (None: no cap); False if this host cannot."""
        return False

    # -- shared behaviour -------------------------------------------------------------------

    def create(self, name: str) -> None:
        """Create the sandbox's directories (idempotent)."""
        for path in self.dirs(name):
            cgroupfs.make_dir(path)

    def exists(self, name: str) -> bool:
        """Whether the sandbox exists in every hierarchy."""
        return all(path.is_dir() for path in self.dirs(name))

    def names(self) -> list[str]:
        """The sandboxes that exist under the root (in its first hierarchy)."""
        roots = self.root_dirs()
        if not roots or not roots[0].is_dir():
            return []
        return sorted(p.name for p in roots[0].iterdir() if p.is_dir())

    def procs(self, name: str) -> list[int]:
        """The processes in the sandbox (union over hierarchies)."""
        found: set[int] = set()
        for path in self.procs_files(name):
            found.update(cgroupfs.pids(path))
        return sorted(found)

    def attach(self, name: str, pid: int) -> None:
        """Move a process (and so its future children) into the sandbox."""
        if not self.exists(name):
            raise Rejected("unknown_account", f"no sandbox {name!r} under {self.root}")
        for path in self.procs_files(name):
            cgroupfs.write(path, pid)

    def kill(self, name: str, timeout: float = 5.0) -> None:
        """SIGKILL every process in the sandbox and wait until it is empty."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(Rejected):
            self.freeze(name, False)  # a frozen v1 task does not die until thawed
        while True:
            members = self.procs(name)
            if not members:
                return
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                except PermissionError as error:
                    raise Rejected("driver_failed", f"cannot kill {pid}: {error}") from error
            if time.monotonic() > deadline:
                raise Rejected("driver_failed", f"sandbox {name!r} still has {members}")
            time.sleep(0.01)

    def remove(self, name: str) -> None:
        """Remove the sandbox's directories (they must hold no process)."""
        for path in self.dirs(name):
            cgroupfs.remove_dir(path)

    def teardown(self) -> None:
        """Kill every sandbox's processes and remove the root (for tests and uninstall)."""
        for name in self.names():
            self.kill(name)
            self.remove(name)
        for path in self.root_dirs():
            cgroupfs.remove_dir(path)
