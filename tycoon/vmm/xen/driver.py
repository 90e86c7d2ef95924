"""The Xen driver: one VM per host account through XAPI (the ``XenAPI`` package).

Each host account gets a VM cloned from a template (``VM.clone`` + ``VM.provision``, marked
with ``other_config:tycoon_account``) and started. Shares map to:

- cpu → the credit scheduler's ``VCPUs_params``: ``weight`` = share × ``weight_scale`` (1..65535;
  dom0 keeps its default 256), and ``cap`` (percent of one pCPU, 0 = none): none by default
  (work-conserving), the share × cores × 100 with ``cpu_cap=True``, 1 % for a zero share;
- memory → ``VM.set_memory_dynamic_range(share × host memory)``, kept inside the VM's static
  range (min = max: the balloon driver holds the VM at its share);
- ports → forwarded to the VM's first IP through the ``forwarder`` hook (see ports.py);
- disk and net are not enforced (reported as the share held).

Usage: ``VM_metrics.VCPUs_utilisation`` (or, where XAPI no longer fills it, the ``cpuN``
RRD data sources through ``VM.query_data_source``) summed over vCPUs / host pCPUs; memory
``VM_metrics.memory_actual`` / host memory. All int64 values go on the wire as strings.

Jobs (docs/jobs.md): this driver runs none — ``host.exec`` needs ``--jobs``, which it
refuses. A VM's owner runs work inside the VM; a Xen host that ran jobs would start them
inside the account's VM (an agent in the template, enrolled with a key of its own, taking
``host.exec`` for that VM on the bus; or XAPI guest-agent calls), never in dom0.
"""

from __future__ import annotations

import contextlib
import math
import xmlrpc.client
from collections.abc import Callable
from typing import Any

import XenAPI

from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.resources import Capacity, Shares, Usage
from tycoon.vmm.validate import check_account, check_shares, sandbox_name

ACCOUNT_KEY = "tycoon_account"
NULL_REF = "OpaqueRef:NULL"
WEIGHT_MAX = 65535
DEFAULT_NET = 1_000_000_000
log = get_logger("xen")

Forwarder = Callable[[dict[int, str]], None]


class XenDriver:
    """A :class:`~tycoon.vmm.driver.Driver` for a Xen host managed by XAPI."""

    name = "xen"

    def __init__(
        self,
        *,
        url: str,
        username: str = "root",
        password: str = "",
        template: str = "tycoon-template",
        prefix: str = "tycoon-",
        start: bool = True,
        weight_scale: int = 10_000,
        cpu_cap: bool = False,
        idle_cap: bool = True,
        memory_limits: bool = True,
        destroy_disks: bool = True,
        net: int = DEFAULT_NET,
        disk: int | None = None,
        ignore_ssl: bool = False,
        forwarder: Forwarder | None = None,
    ) -> None:
        if not 1 <= weight_scale <= WEIGHT_MAX:
            raise ValueError(f"weight_scale must be in 1..{WEIGHT_MAX}")
        self._template, self._prefix, self._start = template, prefix, bool(start)
        self._weight_scale = int(weight_scale)
        self._cpu_cap, self._idle_cap = bool(cpu_cap), bool(idle_cap)
        self._memory_limits, self._destroy_disks = bool(memory_limits), bool(destroy_disks)
        self._forwarder = forwarder
        self.session = XenAPI.Session(url, ignore_ssl=ignore_ssl)
        self._call("login_with_password", username, password, "1.0", "tycoon")
        self._capacity = self._read_capacity(net, disk)
        self._vms: dict[str, str] = {}  # account -> VM ref
        self._shares: dict[str, Shares] = {}
        self._written: dict[tuple[str, str], object] = {}
        self._forwards: dict[int, str] = {}
        self._adopt()

    # -- plumbing -------------------------------------------------------------------------

    def _call(self, method: str, *args: Any) -> Any:
        """One XAPI call; failures become Rejected(driver_failed) naming the call."""
        target: Any = self.session.xenapi
        for part in method.split("."):
            target = getattr(target, part)
        try:
            return target(*args)
        except XenAPI.Failure as failure:
            raise Rejected("driver_failed", f"XAPI {method}: {failure.details}") from failure
        except (OSError, xmlrpc.client.Error) as error:
            raise Rejected("driver_failed", f"XAPI {method}: {error}") from error

    def close(self) -> None:
        """Log out of XAPI."""
        with contextlib.suppress(XenAPI.Failure, OSError, xmlrpc.client.Error):
            self.session.xenapi.session.logout()

    def _read_capacity(self, net: int, disk: int | None) -> Capacity:
        pool = self._call("pool.get_all")[0]
        host = self._call("pool.get_master", pool)
        info = self._call("host.get_cpu_info", host)
        cores = int(info.get("cpu_count", "1"))
        mhz = round(float(info.get("speed", "2000")))
        memory = int(self._call("host_metrics.get_memory_total",
                                self._call("host.get_metrics", host)))
        if disk is None:
            sr = self._call("pool.get_default_SR", pool)
            disk = int(self._call("SR.get_physical_size", sr)) if sr != NULL_REF else 1
        return Capacity(cpu=cores * mhz, memory=memory, disk=max(1, disk), net=net, cores=cores)

    def _adopt(self) -> None:
        """Take over the VMs a previous run created (marked in other_config)."""
        for ref, record in self._call("VM.get_all_records").items():
            account = record.get("other_config", {}).get(ACCOUNT_KEY)
            if account and not record.get("is_a_template") and \
                    record.get("name_label", "").startswith(self._prefix):
                self._vms[account] = ref

    def label(self, account: str) -> str:
        """The VM name label of an account."""
        return sandbox_name(check_account(account), self._prefix)

    # -- the Driver interface -------------------------------------------------------------

    def capacity(self) -> Capacity:
        """pCPUs × MHz and memory of the pool master; disk from the default SR."""
        return self._capacity

    def create(self, account: str) -> None:
        """Clone, provision and start the account's VM (idempotent), with no share yet."""
        label = self.label(account)
        if account in self._vms:
            return
        for ref in self._call("VM.get_by_name_label", label):
            if not self._call("VM.get_is_a_template", ref):
                self._vms[account] = ref
                return
        templates = [r for r in self._call("VM.get_by_name_label", self._template)
                     if self._call("VM.get_is_a_template", r)]
        if not templates:
            raise Rejected("driver_failed", f"no VM template named {self._template!r}")
        vm = self._call("VM.clone", templates[0], label)
        try:
            self._call("VM.provision", vm)
            self._call("VM.set_is_a_template", vm, False)
            self._call("VM.add_to_other_config", vm, ACCOUNT_KEY, account)
            self._vms[account] = vm
            self._write(account, vm, Shares())
            if self._start:
                self._call("VM.start", vm, False, True)
        except Rejected:
            self._vms.pop(account, None)
            try:
                self._remove(vm)
            except Rejected as cleanup:  # keep the first error; say what was left behind
                log.warning("half-made vm left behind", label=label, reason=cleanup.message)
            raise
        log.info("vm created", account=account[:24], label=label)

    def destroy(self, account: str) -> None:
        """Shut the VM down, destroy it and (by default) its disks; idempotent."""
        vm = self._vms.pop(account, None)
        self._shares.pop(account, None)
        if vm is None:
            return
        self._written = {k: v for k, v in self._written.items() if k[0] != vm}
        self._remove(vm)
        self._update_forwards()

    def apply(self, shares: dict[str, Shares]) -> None:
        """Write every VM's scheduler parameters and memory range; VMs not named get the
        minimum. Invalid shares are refused before any call; XAPI failures do not stop the
        other VMs and the first is raised as ``driver_failed`` afterwards."""
        check_shares(shares)
        for account in shares:
            if account not in self._vms:
                self.create(account)
        failures: list[Rejected] = []
        for account, vm in list(self._vms.items()):
            try:
                self._write(account, vm, shares.get(account, Shares()))
            except Rejected as error:
                failures.append(error)
        self._shares = dict(shares)
        try:
            self._update_forwards()
        except Rejected as error:
            failures.append(error)
        if failures:
            raise Rejected("driver_failed", f"{len(failures)} XAPI update(s) failed; first: "
                           f"{failures[0].message}")

    def usage(self) -> dict[str, Usage]:
        """Per VM: vCPU utilisation summed / host pCPUs, memory_actual / host memory."""
        result: dict[str, Usage] = {}
        for account, vm in sorted(self._vms.items()):
            share = self._shares.get(account, Shares())
            try:
                cpu, memory = self._measure(vm)
            except Rejected as error:
                log.warning("vm metrics unreadable", account=account[:24], reason=error.message)
                cpu, memory = 0.0, 0
            result[account] = Usage(
                cpu=_fraction(cpu / self._capacity.cores),
                memory=_fraction(memory / self._capacity.memory),
                disk=share.disk,
                net=share.net,
            )
        return result

    # -- beyond the Protocol ---------------------------------------------------------------

    def accounts(self) -> list[str]:
        """The accounts that have a VM, sorted."""
        return sorted(self._vms)

    def vm(self, account: str) -> str | None:
        """The VM ref of an account, if it has one."""
        return self._vms.get(account)

    def forwards(self) -> dict[int, str]:
        """The current port forwards: TCP port -> the holder VM's IP."""
        return dict(self._forwards)

    # -- internals ------------------------------------------------------------------------

    def _write(self, account: str, vm: str, share: Shares) -> None:
        weight = max(1, min(WEIGHT_MAX, round(share.cpu * self._weight_scale)))
        cap = 0
        if share.cpu <= 0.0 and self._idle_cap:
            cap = 1
        elif self._cpu_cap:
            cap = max(1, math.ceil(share.cpu * self._capacity.cores * 100))
        if self._written.get((vm, "cpu")) != (weight, cap):
            params = dict(self._call("VM.get_VCPUs_params", vm))
            params.update({"weight": str(weight), "cap": str(cap)})
            self._call("VM.set_VCPUs_params", vm, params)
            self._written[(vm, "cpu")] = (weight, cap)
        if self._memory_limits:
            static = self._written.get((vm, "static"))
            if not isinstance(static, tuple):
                static = (int(self._call("VM.get_memory_static_min", vm)),
                          int(self._call("VM.get_memory_static_max", vm)))
                self._written[(vm, "static")] = static
            low, high = static
            target = min(high, max(low, int(share.memory * self._capacity.memory)))
            if self._written.get((vm, "memory")) != target:
                self._call("VM.set_memory_dynamic_range", vm, str(target), str(target))
                self._written[(vm, "memory")] = target

    def _measure(self, vm: str) -> tuple[float, int]:
        if self._call("VM.get_power_state", vm) != "Running":
            return 0.0, 0
        metrics = self._call("VM.get_metrics", vm)
        per_vcpu = self._call("VM_metrics.get_VCPUs_utilisation", metrics)
        if per_vcpu:
            cpu = sum(float(v) for v in per_vcpu.values())
        else:  # XAPI >= 7 leaves it empty: read the RRD data sources cpu0..cpuN-1
            count = int(self._call("VM_metrics.get_VCPUs_number", metrics))
            cpu = sum(float(self._call("VM.query_data_source", vm, f"cpu{i}"))
                      for i in range(count))
        memory = int(self._call("VM_metrics.get_memory_actual", metrics))
        return cpu, memory

    def _remove(self, vm: str) -> None:
        """Hard shutdown (if running), destroy, then destroy its disks."""
        disks: list[str] = []
        if self._destroy_disks:
            for vbd in self._call("VM.get_VBDs", vm):
                if self._call("VBD.get_type", vbd) == "Disk":
                    disks.append(self._call("VBD.get_VDI", vbd))
        if self._call("VM.get_power_state", vm) != "Halted":
            self._call("VM.hard_shutdown", vm)
        self._call("VM.destroy", vm)
        for vdi in disks:
            if vdi != NULL_REF:
                self._call("VDI.destroy", vdi)

    def _update_forwards(self) -> None:
        wanted: dict[int, str] = {}
        for account, share in self._shares.items():
            vm = self._vms.get(account)
            if vm is None or not share.ports:
                continue
            guest = self._call("VM.get_guest_metrics", vm)
            if guest == NULL_REF:
                continue  # no guest agent yet: no IP to forward to
            ip = self._call("VM_guest_metrics.get_networks", guest).get("0/ip")
            if ip:
                for port in share.ports:
                    wanted[port] = ip
        if wanted != self._forwards:
            self._forwards = wanted
            if self._forwarder is not None:
                self._forwarder(dict(wanted))
            log.info("port forwards", forwards={str(p): ip for p, ip in wanted.items()})


def _fraction(value: float) -> float:
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0
