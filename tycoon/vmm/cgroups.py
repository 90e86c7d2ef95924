"""The Linux cgroups driver: one cgroup per host account, shares as weights, usage from the kernel.

Layout: ``<mount>/<parent>/<root>/<sandbox>`` in every hierarchy used (v1) or in the unified
hierarchy (v2), where ``sandbox`` is the account id made safe (:func:`sandbox_name`).

Mapping (see docs/drivers.md): cpu share → ``cpu.shares`` / ``cpu.weight`` (proportional under
contention: work-conserving, an idle share flows to the busy sandboxes), optionally also a cap
(``cpu.cfs_quota_us`` / ``cpu.max``) at the share; memory share × capacity →
``memory.limit_in_bytes`` / ``memory.max``; disk share → ``blkio.weight`` / ``io.weight``;
net is recorded, not enforced.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.resources import Capacity, Shares, Usage
from tycoon.vmm import cgroupfs
from tycoon.vmm.cgroups_backend import Backend
from tycoon.vmm.cgroups_v1 import V1Backend
from tycoon.vmm.cgroups_v2 import V2Backend
from tycoon.vmm.validate import check_account, check_shares, sandbox_name

MiB = 1024**2
DEFAULT_ROOT = "tycoon"
DEFAULT_STATE_DIR = "/run/tycoon"
VERSIONS = ("auto", "v1", "v2")

log = get_logger("vmm.cgroups")


def detect_version(mounts: cgroupfs.Mounts) -> str:
    """``v2`` if the unified hierarchy offers the cpu controller, else ``v1`` if a v1 cpu
    hierarchy is mounted, else ``v2`` if any cgroup2 is mounted (cpu then missing)."""
    if mounts.v2 is not None and "cpu" in mounts.v2_controllers():
        return "v2"
    if "cpu" in mounts.v1:
        return "v1"
    if mounts.v2 is not None:
        return "v2"
    raise Rejected("driver_failed", "no cgroup file system is mounted")


class CgroupsDriver:
    """A :class:`~tycoon.vmm.driver.Driver` enforcing shares with Linux cgroups (v1 or v2)."""

    name = "cgroups"

    def __init__(
        self,
        *,
        root: str = DEFAULT_ROOT,
        parent: str = "/",
        version: str = "auto",
        cpu_cap: bool = False,
        idle_cap: bool = True,
        period_us: int = 100_000,
        memory_floor: int = 64 * MiB,
        memory_limits: bool = True,
        strict: bool = True,
        kill_on_destroy: bool = True,
        state_dir: str | None = DEFAULT_STATE_DIR,
        cores: int | None = None,
        mhz: int | None = None,
        cpu: int | None = None,
        memory: int | None = None,
        disk: int | None = None,
        net: int = cgroupfs.DEFAULT_NET,
        disk_path: str = "/",
        mounts_file: str = "/proc/self/mounts",
        clock_ns: Callable[[], int] = time.monotonic_ns,
        cpus: str | None = None,
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, not {version!r}")
        if not 1000 <= period_us <= 1_000_000:
            raise ValueError("period_us must be in 1000..1000000")
        mounts = cgroupfs.find_mounts(mounts_file)
        self.version = detect_version(mounts) if version == "auto" else version
        if cpus is not None and cores is None:
            cores = count_cpus(cpus)  # the host sells the CPUs it is pinned to
        if cpus is not None and self.version != "v1":
            raise ValueError("cpus (a cpuset per host) needs cgroup v1 here")
        self.backend: Backend = (V1Backend(mounts, root, parent, cpus) if self.version == "v1"
                                 else V2Backend(mounts, root, parent))
        self.root = root
        self._cpu_cap = bool(cpu_cap)
        self._idle_cap = bool(idle_cap)
        self._period_us = int(period_us)
        self._memory_floor = int(memory_floor)
        self._memory_limits = bool(memory_limits)
        self._kill_on_destroy = bool(kill_on_destroy)
        self._clock_ns = clock_ns
        self._capacity = _host_capacity(cores, mhz, cpu, memory, disk, net, disk_path)
        self.backend.setup()
        self.knobs = self.backend.knobs()
        if strict and "cpu_weight" not in self.knobs:
            for path in self.backend.root_dirs():
                with contextlib.suppress(OSError):
                    path.rmdir()  # only if empty: never someone else's sandboxes
            raise Rejected(
                "driver_failed",
                f"no writable cpu controller in cgroup {self.version} "
                f"(root {self.backend.root_dirs()[0]}); strict=False to run without cpu shares",
            )
        self._state_file = _state_file(state_dir, root)
        self._accounts: dict[str, str] = {}  # account -> sandbox name
        self._shares: dict[str, Shares] = {}
        self._written: dict[tuple[str, str], object] = {}  # (name, knob) -> value written
        self._last: dict[str, tuple[int, int]] = {}  # name -> (cpu ns, wall ns)
        for name in self.backend.names():  # adopt sandboxes left by a previous run
            self._accounts.setdefault(name, name)
            self._baseline(name)
        log.debug("cgroups driver ready", version=self.version, root=root, knobs=sorted(self.knobs))

    # -- the Driver interface -------------------------------------------------------------

    def capacity(self) -> Capacity:
        """Cores × MHz, MemTotal and disk size from the host; net from config."""
        return self._capacity

    def create(self, account: str) -> None:
        """Create the account's cgroup(s) with no share yet (idempotent)."""
        name = sandbox_name(check_account(account))
        if self._accounts.get(name) == name and name != account:
            del self._accounts[name]  # adopted under its directory name: now we know the id
        if account in self._accounts and self.backend.exists(name):
            return
        self.backend.create(name)
        self._accounts[account] = name
        self._written = {k: v for k, v in self._written.items() if k[0] != name}
        self._write(name, Shares())
        self._baseline(name)

    def destroy(self, account: str) -> None:
        """Kill the sandbox's processes (unless ``kill_on_destroy=False``) and remove it."""
        name = self._accounts.get(account) or sandbox_name(check_account(account))
        if any(p.exists() for p in self.backend.dirs(name)):
            if self._kill_on_destroy:
                self.backend.kill(name)
            elif self.backend.procs(name):
                raise Rejected("driver_failed", f"sandbox of {account[:24]} still has processes")
            self.backend.remove(name)
        self._accounts.pop(account, None)
        self._shares.pop(account, None)
        self._last.pop(name, None)
        self._written = {k: v for k, v in self._written.items() if k[0] != name}
        self._save_ports()

    def apply(self, shares: dict[str, Shares]) -> None:
        """Write every sandbox's knobs; sandboxes not named get the minimum.

        Invalid shares are refused before anything is written. A kernel refusal (e.g. a
        memory limit below what a sandbox already holds) does not stop the other writes;
        the first failure is raised as ``driver_failed`` once all were tried.
        """
        check_shares(shares)
        for account in shares:
            if account not in self._accounts:
                self.create(account)
        failures: list[Rejected] = []
        for account, name in list(self._accounts.items()):
            try:
                self._write(name, shares.get(account, Shares()))
            except Rejected as error:
                failures.append(error)
        self._shares = dict(shares)
        self._save_ports()
        if failures:
            log.warning("cgroup writes failed", count=len(failures), first=failures[0].message)
            raise Rejected("driver_failed", f"{len(failures)} write(s) failed; first: "
                           f"{failures[0].message}")

    def usage(self) -> dict[str, Usage]:
        """CPU: kernel CPU time since the last call / (wall time × cores); memory: held now /
        capacity; disk and net are not measured per sandbox and report the share held."""
        result: dict[str, Usage] = {}
        cores = self._capacity.cores
        for account, name in sorted(self._accounts.items()):
            now = self._clock_ns()
            try:
                cpu_ns = self.backend.cpu_ns(name)
                held = self.backend.memory_bytes(name)
            except Rejected as error:
                log.warning("sandbox unreadable", sandbox=name, reason=error.message)
                result[account] = Usage()
                continue
            last_cpu, last_wall = self._last.get(name, (cpu_ns, now))
            self._last[name] = (cpu_ns, now)
            wall = now - last_wall
            cpu = (cpu_ns - last_cpu) / (wall * cores) if wall > 0 else 0.0
            share = self._shares.get(account, Shares())
            result[account] = Usage(
                cpu=_fraction(cpu),
                memory=_fraction(held / self._capacity.memory),
                disk=share.disk,
                net=share.net,
            )
        return result

    # -- beyond the Protocol: for `tycoon run`, status and tests -----------------------------

    def sandbox(self, account: str) -> str:
        """The sandbox (cgroup directory) name of an account."""
        return self._accounts.get(account) or sandbox_name(check_account(account))

    def exists(self, account: str) -> bool:
        """Whether the account's sandbox exists on this host."""
        return self.backend.exists(self.sandbox(account))

    def attach(self, account: str, pid: int) -> None:
        """Move a process into the account's sandbox (its children follow)."""
        self.backend.attach(self.sandbox(account), pid)

    def procs(self, account: str) -> list[int]:
        """The processes in the account's sandbox."""
        return self.backend.procs(self.sandbox(account))

    def cpu_seconds(self, account: str) -> float:
        """The sandbox's total CPU time in seconds, as the kernel counts it."""
        return self.backend.cpu_ns(self.sandbox(account)) / 1e9

    def paths(self, account: str) -> dict[str, Path]:
        """Per hierarchy, the account's cgroup directory."""
        return {str(i): p for i, p in enumerate(self.backend.dirs(self.sandbox(account)))}

    def shares(self) -> dict[str, Shares]:
        """The shares last applied (a copy)."""
        return dict(self._shares)

    def accounts(self) -> list[str]:
        """The accounts with a sandbox, sorted."""
        return sorted(self._accounts)

    def ports_of(self, account: str) -> tuple[int, ...]:
        """The TCP ports granted to the account, from the last apply (also across processes,
        through the state file)."""
        if account in self._shares:
            return tuple(self._shares[account].ports)
        if self._state_file is None:
            return ()
        try:
            state = json.loads(self._state_file.read_text())
            return tuple(int(p) for p in state.get("ports", {}).get(account, []))
        except (OSError, ValueError, TypeError, AttributeError):
            return ()

    def teardown(self) -> None:
        """Kill everything in the driver's root and remove it (tests, uninstall)."""
        self.backend.teardown()
        self._accounts.clear()
        self._shares.clear()
        self._last.clear()
        self._written.clear()
        if self._state_file is not None:
            self._state_file.unlink(missing_ok=True)

    # -- internals ------------------------------------------------------------------------

    def _write(self, name: str, share: Shares) -> None:
        """Turn one sandbox's shares into knob values; only changed values are written."""
        if "cpu_weight" in self.knobs:
            self._set(name, "cpu_weight", share.cpu, self.backend.set_cpu_weight)
        if "cpu_cap" in self.knobs:
            quota: int | None = None
            if share.cpu <= 0.0 and self._idle_cap:
                quota = 0  # raised to the kernel's minimum, 1 ms per period
            elif self._cpu_cap:
                quota = math.ceil(share.cpu * self._capacity.cores * self._period_us)
            self._set(name, "cpu_cap", quota,
                      lambda n, q: self.backend.set_cpu_cap(n, q, self._period_us))
        if "memory" in self.knobs:
            limit: int | None = None
            if self._memory_limits:
                limit = self._memory_limit(name, share.memory)
            self._set(name, "memory", limit, self.backend.set_memory)
        if "io" in self.knobs:
            self._set(name, "io", share.disk, self.backend.set_io)

    def _memory_limit(self, name: str, share: float) -> int:
        """share × capacity (at least the floor), but never below what the sandbox holds now:
        the kernel would block for seconds reclaiming and then refuse (no swap), so the limit
        stops at the held amount (rounded up to a MiB) and the sandbox cannot grow; the next
        apply tries the target again."""
        target = max(self._memory_floor, int(share * self._capacity.memory))
        previous = self._written.get((name, "memory"))
        if isinstance(previous, int) and target >= previous:
            return target
        try:
            held = self.backend.memory_bytes(name)
        except Rejected:
            return target
        if held <= target:
            return target
        limit = -(-(held + MiB) // MiB) * MiB
        log.warning("memory limit held above target", sandbox=name, target=target, limit=limit)
        return limit

    def _set(self, name: str, knob: str, value: object, setter: Callable) -> None:
        if self._written.get((name, knob), ...) == value:
            return
        setter(name, value)
        self._written[(name, knob)] = value

    def _baseline(self, name: str) -> None:
        try:
            self._last[name] = (self.backend.cpu_ns(name), self._clock_ns())
        except Rejected:
            self._last.pop(name, None)

    def _save_ports(self) -> None:
        if self._state_file is None:
            return
        ports = {a: list(s.ports) for a, s in self._shares.items() if s.ports}
        try:
            self._state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"root": self.root, "ports": ports}, sort_keys=True))
            os.replace(tmp, self._state_file)
        except OSError as error:
            log.warning("cannot save port grants", file=str(self._state_file), error=str(error))


def count_cpus(cpus: str) -> int:
    """The number of CPUs in a cpuset list (``0``, ``0,2-3``); ValueError if malformed."""
    total = 0
    for part in cpus.split(","):
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()) or (sep and int(high) < int(low)):
            raise ValueError(f"not a CPU list: {cpus!r} (e.g. 0 or 0,2-3)")
        total += int(high) - int(low) + 1 if sep else 1
    return total


def _fraction(value: float) -> float:
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0


def _state_file(state_dir: str | None, root: str) -> Path | None:
    if state_dir is None:
        return None
    return Path(state_dir) / (sandbox_name(root.replace("/", "_")) + ".json")


def _host_capacity(
    cores: int | None, mhz: int | None, cpu: int | None, memory: int | None,
    disk: int | None, net: int, disk_path: str,
) -> Capacity:
    values = {
        "cores": cores if cores is not None else cgroupfs.host_cores(),
        "mhz": mhz if mhz is not None else cgroupfs.host_mhz(),
        "memory": memory if memory is not None else cgroupfs.host_memory(),
        "disk": disk if disk is not None else cgroupfs.host_disk(disk_path),
        "net": net,
    }
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"capacity {key} must be a positive integer, not {value!r}")
    total_cpu = cpu if cpu is not None else values["cores"] * values["mhz"]
    if isinstance(total_cpu, bool) or not isinstance(total_cpu, int) or total_cpu <= 0:
        raise ValueError(f"capacity cpu must be a positive integer, not {total_cpu!r}")
    return Capacity(cpu=total_cpu, memory=values["memory"], disk=values["disk"],
                    net=values["net"], cores=values["cores"])
