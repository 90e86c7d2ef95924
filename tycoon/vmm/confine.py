"""How a driver confines an account's jobs: freezing, the pids caps, ending what is left.

:func:`confinement` picks it: the cgroups driver with its freezer and pids controllers
(:class:`CgroupConfinement`); the simulated driver runs real **unconfined** processes
(tests, the local demo) and freezes them with SIGSTOP/SIGCONT (:class:`Confinement`). The
Xen driver runs none: a VM's owner runs work inside the VM (docs/drivers.md, docs/jobs.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tycoon.errors import Rejected
from tycoon.log import get_logger

log = get_logger("vmm.jobs")


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

    def cap_host(self, pids_max: int) -> bool:
        """Cap the processes of every sandbox together (False: nothing to cap here)."""
        return False

    def host_pids(self, pids: Sequence[int]) -> int:
        """Processes the host's jobs hold now (``pids``: the job leaders; here, unconfined:
        each leader's session, counted from /proc)."""
        sessions = {p for p in pids if p > 1}
        if not sessions:
            return 0
        count = 0
        with contextlib.suppress(OSError):
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    with contextlib.suppress(OSError, ValueError):
                        if os.getsid(int(entry.name)) in sessions:
                            count += 1
        return count

    def freeze(self, account: str, frozen: bool, pids: Sequence[int]) -> None:
        """Freeze or thaw the account's processes (``pids``: its job leaders' sessions)."""
        for pid in pids:
            if pid <= 1:  # a job not started yet: never killpg(0), this process's own group
                continue
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

    def cap_host(self, pids_max: int) -> bool:
        """The pids controller on the driver's root: the kernel caps all sandboxes."""
        try:
            return bool(self.driver.backend.set_pids_max("", pids_max))
        except (OSError, Rejected) as error:
            log.warning("host-wide pids cap not set", error=str(error))
            return False

    def host_pids(self, pids: Sequence[int]) -> int:
        """``pids.current`` of the driver's root (every sandbox together)."""
        paths = self.driver.backend.paths("")
        base = paths.get("unified") or paths.get("pids")
        if base is not None:
            with contextlib.suppress(OSError, ValueError):
                return int((Path(base) / "pids.current").read_text())
        return super().host_pids(pids)

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
