"""A stand-in XAPI server (XML-RPC on 127.0.0.1) implementing the calls the Xen driver makes.

It follows XAPI's wire conventions, so the real ``XenAPI`` client talks to it unchanged:
every call returns ``{"Status": "Success", "Value": ...}`` or ``{"Status": "Failure",
"ErrorDescription": [code, ...]}``; the first argument of every call but login is a session
ref; refs are ``OpaqueRef:<uuid>`` strings; int64 values travel as decimal strings; maps are
string-keyed (``VCPUs_utilisation`` has its int keys as strings). Arguments are type-checked
as XAPI does (``FIELD_TYPE_ERROR``, ``MESSAGE_PARAMETER_COUNT_MISMATCH``, ``HANDLE_INVALID``).

A tiny credit-scheduler model makes the metrics respond to ``VCPUs_params``: running VMs are
greedy, share the host's pCPUs in proportion to their ``weight`` and are held to their ``cap``
(percent of one pCPU) and their vCPU count. For tests only (tests/test_xen.py); not a hypervisor.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

GiB = 1024**3
MiB = 1024**2
DEFAULT_WEIGHT = 256


class XapiError(Exception):
    """A XAPI failure: its ErrorDescription list."""

    def __init__(self, *description: str) -> None:
        super().__init__(description)
        self.description = [str(d) for d in description]


def _ref() -> str:
    return f"OpaqueRef:{uuid.uuid4()}"


class _Quiet(SimpleXMLRPCRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class FakeXapi:
    """The fake XAPI host: a pool with one host, an SR and VM templates."""

    def __init__(
        self,
        *,
        username: str = "root",
        password: str = "secret",
        cores: int = 4,
        mhz: float = 2400.0,
        memory: int = 16 * GiB,
        disk: int = 500 * GiB,
        templates: tuple[str, ...] = ("tycoon-template",),
        vcpus: int = 2,
        static_min: int = 128 * MiB,
        static_max: int = 4 * GiB,
        utilisation_deprecated: bool = False,
    ) -> None:
        self.username, self.password = username, password
        self.cores = cores
        self.utilisation_deprecated = utilisation_deprecated
        self.sessions: set[str] = set()
        self.calls: list[str] = []
        self.faults: dict[str, list[str]] = {}  # method -> ErrorDescription for its next call
        self.db: dict[str, dict[str, dict[str, Any]]] = {
            c: {} for c in ("pool", "host", "host_metrics", "SR", "VM", "VM_metrics",
                            "VM_guest_metrics", "VBD", "VDI")
        }
        hm = self._new("host_metrics", {"memory_total": memory, "memory_free": memory})
        host = self._new("host", {"name_label": "fake-xen", "metrics": hm, "cpu_info": {
            "cpu_count": str(cores), "speed": f"{mhz:.3f}", "vendor": "FakeCPU"}})
        sr = self._new("SR", {"name_label": "Local storage", "physical_size": disk})
        self._new("pool", {"master": host, "default_SR": sr})
        for label in templates:
            self._new_vm(label, template=True, vcpus=vcpus, smin=static_min, smax=static_max)
        self._server: SimpleXMLRPCServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a free loopback port in a thread; returns the URL."""
        self._server = SimpleXMLRPCServer(("127.0.0.1", 0), requestHandler=_Quiet,
                                          allow_none=True, logRequests=False)
        self._server.register_instance(self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True, name="fake-xapi")
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeXapi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection for tests -------------------------------------------------------------

    def vm_by_label(self, label: str) -> dict[str, Any] | None:
        """The record of the (non-template) VM with this label, if any."""
        for record in self.db["VM"].values():
            if record["name_label"] == label and not record["is_a_template"]:
                return record
        return None

    def fail_next(self, method: str, *description: str) -> None:
        """Make the next call of ``method`` fail with this ErrorDescription."""
        self.faults[method] = list(description)

    # -- the XML-RPC entry point ----------------------------------------------------------

    def _dispatch(self, method: str, params: tuple) -> dict[str, Any]:
        with self._lock:
            self.calls.append(method)
            try:
                if method in self.faults:
                    raise XapiError(*self.faults.pop(method))
                if method == "session.login_with_password":
                    return {"Status": "Success", "Value": self._login(params)}
                spec = _API.get(method)
                if spec is None:
                    raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
                types, handler = spec
                if len(params) != len(types) + 1:
                    raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method,
                                    str(len(types) + 1), str(len(params)))
                if params[0] not in self.sessions:
                    raise XapiError("SESSION_INVALID", str(params[0]))
                args = [self._check(t, v) for t, v in zip(types, params[1:], strict=True)]
                value = handler(self, *args)
                return {"Status": "Success", "Value": "" if value is None else value}
            except XapiError as error:
                return {"Status": "Failure", "ErrorDescription": error.description}

    def _login(self, params: tuple) -> str:
        if len(params) not in (2, 3, 4):
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", "session.login_with_password",
                            "4", str(len(params)))
        if params[0] != self.username or params[1] != self.password:
            raise XapiError("SESSION_AUTHENTICATION_FAILED", str(params[0]),
                            "Authentication failure")
        ref = _ref()
        self.sessions.add(ref)
        return ref

    def _check(self, kind: str, value: Any) -> Any:
        if kind.startswith("ref:"):
            cls = kind[4:]
            if not isinstance(value, str) or value not in self.db[cls]:
                raise XapiError("HANDLE_INVALID", cls, str(value))
            return value
        ok = {
            "string": isinstance(value, str),
            "bool": isinstance(value, bool),
            "int64": isinstance(value, str) and value.lstrip("-").isdigit(),
            "map": isinstance(value, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()),
        }[kind]
        if not ok:
            raise XapiError("FIELD_TYPE_ERROR", f"expected {kind}, got {type(value).__name__}")
        return int(value) if kind == "int64" else value

    # -- the object store -----------------------------------------------------------------

    def _new(self, cls: str, record: dict[str, Any]) -> str:
        ref = _ref()
        self.db[cls][ref] = {"uuid": str(uuid.uuid4()), **record}
        return ref

    def _new_vm(self, label: str, *, template: bool, vcpus: int, smin: int, smax: int) -> str:
        metrics = self._new("VM_metrics", {"memory_actual": 0, "VCPUs_number": vcpus})
        guest = self._new("VM_guest_metrics", {"networks": {}})
        return self._new("VM", {
            "name_label": label, "is_a_template": template, "power_state": "Halted",
            "VCPUs_max": vcpus, "VCPUs_params": {}, "memory_static_min": smin,
            "memory_static_max": smax, "memory_dynamic_min": smax, "memory_dynamic_max": smax,
            "other_config": {}, "metrics": metrics, "guest_metrics": guest, "VBDs": [],
            "provisioned": False,
        })

    def _vm(self, ref: str) -> dict[str, Any]:
        return self.db["VM"][ref]

    def _utilisation(self) -> dict[str, float]:
        """Per running VM, the pCPUs it gets: weighted water-filling under caps and vCPUs."""
        running = {r: v for r, v in self.db["VM"].items() if v["power_state"] == "Running"}
        limit: dict[str, float] = {}
        weight: dict[str, float] = {}
        for ref, vm in running.items():
            params = vm["VCPUs_params"]
            weight[ref] = float(params.get("weight", DEFAULT_WEIGHT))
            cap = int(params.get("cap", "0"))
            limit[ref] = min(float(vm["VCPUs_max"]), cap / 100.0 if cap > 0 else float("inf"))
        got = dict.fromkeys(running, 0.0)
        free, open_ = float(self.cores), set(running)
        while open_ and free > 1e-12:
            total = sum(weight[r] for r in open_)
            capped = {r for r in open_ if free * weight[r] / total >= limit[r]}
            if not capped:
                for r in open_:
                    got[r] = free * weight[r] / total
                break
            for r in capped:
                got[r] = limit[r]
                free -= limit[r]
                open_.discard(r)
        return got


# -- the API: method -> (argument types after the session, handler) ---------------------------

def _get(cls: str, field: str, wire: Callable[[Any], Any] = lambda v: v) -> tuple:
    return ([f"ref:{cls}"], lambda self, ref: wire(self.db[cls][ref][field]))


def _vm_clone(self: FakeXapi, vm: str, label: str) -> str:
    src = self._vm(vm)
    ref = self._new_vm(label, template=src["is_a_template"], vcpus=src["VCPUs_max"],
                       smin=src["memory_static_min"], smax=src["memory_static_max"])
    self._vm(ref)["VCPUs_params"] = dict(src["VCPUs_params"])
    return ref


def _vm_provision(self: FakeXapi, vm: str) -> None:
    record = self._vm(vm)
    vdi = self._new("VDI", {"name_label": f"{record['name_label']} disk", "size": 8 * GiB})
    vbd = self._new("VBD", {"VM": vm, "VDI": vdi, "type": "Disk"})
    record["VBDs"].append(vbd)
    record["provisioned"] = True


def _vm_start(self: FakeXapi, vm: str, paused: bool, force: bool) -> None:
    record = self._vm(vm)
    if record["is_a_template"]:
        raise XapiError("VM_IS_TEMPLATE", vm, "start")
    if record["power_state"] != "Halted":
        raise XapiError("VM_BAD_POWER_STATE", vm, "halted", record["power_state"].lower())
    record["power_state"] = "Paused" if paused else "Running"
    metrics = self.db["VM_metrics"][record["metrics"]]
    metrics["memory_actual"] = record["memory_dynamic_max"]
    index = len(self.db["VM"]) % 250 + 2
    self.db["VM_guest_metrics"][record["guest_metrics"]]["networks"] = {"0/ip": f"10.0.0.{index}"}


def _vm_hard_shutdown(self: FakeXapi, vm: str) -> None:
    record = self._vm(vm)
    if record["power_state"] == "Halted":
        raise XapiError("VM_BAD_POWER_STATE", vm, "running", "halted")
    record["power_state"] = "Halted"
    self.db["VM_metrics"][record["metrics"]]["memory_actual"] = 0


def _vm_destroy(self: FakeXapi, vm: str) -> None:
    record = self._vm(vm)
    if record["power_state"] != "Halted":
        raise XapiError("VM_BAD_POWER_STATE", vm, "halted", record["power_state"].lower())
    for vbd in record["VBDs"]:
        self.db["VBD"].pop(vbd, None)  # VBDs go with the VM; VDIs stay until destroyed
    self.db["VM_metrics"].pop(record["metrics"], None)
    self.db["VM_guest_metrics"].pop(record["guest_metrics"], None)
    del self.db["VM"][vm]


def _vm_dynamic_range(self: FakeXapi, vm: str, low: int, high: int) -> None:
    record = self._vm(vm)
    if not record["memory_static_min"] <= low <= high <= record["memory_static_max"]:
        raise XapiError("MEMORY_CONSTRAINT_VIOLATION",
                        "Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max "
                        "<= static_max")
    record["memory_dynamic_min"], record["memory_dynamic_max"] = low, high
    if record["power_state"] == "Running":
        self.db["VM_metrics"][record["metrics"]]["memory_actual"] = high


def _set_vcpus_params(self: FakeXapi, vm: str, params: dict[str, str]) -> None:
    bounds = {"weight": (1, 65535), "cap": (0, 100 * self.cores)}
    for key, (low, high) in bounds.items():
        text = params.get(key)
        if text is not None and not (text.isdigit() and low <= int(text) <= high):
            raise XapiError("INVALID_VALUE", f"VCPUs_params:{key}", text)
    self._vm(vm)["VCPUs_params"] = dict(params)


def _vcpus_utilisation(self: FakeXapi, metrics: str) -> dict[str, float]:
    if self.utilisation_deprecated:
        return {}  # recent XAPI: use the RRD data sources instead
    vm = next(r for r, v in self.db["VM"].items() if v["metrics"] == metrics)
    record = self._vm(vm)
    pcpus = self._utilisation().get(vm, 0.0)
    n = record["VCPUs_max"]
    return {str(i): pcpus / n for i in range(n)}


def _query_data_source(self: FakeXapi, vm: str, name: str) -> float:
    record = self._vm(vm)
    if record["power_state"] != "Running" or not name.startswith("cpu"):
        raise XapiError("VM_BAD_POWER_STATE" if record["power_state"] != "Running"
                        else "UNKNOWN_DATA_SOURCE", name)
    index = int(name[3:])
    if index >= record["VCPUs_max"]:
        raise XapiError("UNKNOWN_DATA_SOURCE", name)
    return self._utilisation().get(vm, 0.0) / record["VCPUs_max"]


def _add_to_other_config(self: FakeXapi, vm: str, key: str, value: str) -> None:
    config = self._vm(vm)["other_config"]
    if key in config:
        raise XapiError("MAP_DUPLICATE_KEY", "VM", "other_config", vm, key)
    config[key] = value


def _vm_record(self: FakeXapi, ref: str) -> dict[str, Any]:
    record = self._vm(ref)
    wire = {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v)
            for k, v in record.items() if k != "provisioned"}
    return wire


def _vdi_destroy(self: FakeXapi, vdi: str) -> None:
    if any(b["VDI"] == vdi for b in self.db["VBD"].values()):
        raise XapiError("VDI_IN_USE", vdi, "destroy")
    del self.db["VDI"][vdi]


_API: dict[str, tuple[list[str], Callable[..., Any]]] = {
    "session.logout": ([], lambda self: None),
    "pool.get_all": ([], lambda self: list(self.db["pool"])),
    "pool.get_master": _get("pool", "master"),
    "pool.get_default_SR": _get("pool", "default_SR"),
    "SR.get_physical_size": _get("SR", "physical_size", str),
    "host.get_cpu_info": _get("host", "cpu_info"),
    "host.get_metrics": _get("host", "metrics"),
    "host_metrics.get_memory_total": _get("host_metrics", "memory_total", str),
    "VM.get_by_name_label": (["string"], lambda self, label: [
        r for r, v in self.db["VM"].items() if v["name_label"] == label]),
    "VM.get_all_records": ([], lambda self: {r: _vm_record(self, r) for r in self.db["VM"]}),
    "VM.get_record": (["ref:VM"], _vm_record),
    "VM.get_is_a_template": _get("VM", "is_a_template"),
    "VM.get_power_state": _get("VM", "power_state"),
    "VM.get_VCPUs_params": _get("VM", "VCPUs_params", dict),
    "VM.get_VCPUs_max": _get("VM", "VCPUs_max", str),
    "VM.get_memory_static_min": _get("VM", "memory_static_min", str),
    "VM.get_memory_static_max": _get("VM", "memory_static_max", str),
    "VM.get_metrics": _get("VM", "metrics"),
    "VM.get_guest_metrics": _get("VM", "guest_metrics"),
    "VM.get_VBDs": _get("VM", "VBDs", list),
    "VM.get_other_config": _get("VM", "other_config", dict),
    "VM.clone": (["ref:VM", "string"], _vm_clone),
    "VM.provision": (["ref:VM"], _vm_provision),
    "VM.set_is_a_template": (["ref:VM", "bool"],
                             lambda self, vm, v: self._vm(vm).__setitem__("is_a_template", v)),
    "VM.add_to_other_config": (["ref:VM", "string", "string"], _add_to_other_config),
    "VM.start": (["ref:VM", "bool", "bool"], _vm_start),
    "VM.hard_shutdown": (["ref:VM"], _vm_hard_shutdown),
    "VM.destroy": (["ref:VM"], _vm_destroy),
    "VM.set_VCPUs_params": (["ref:VM", "map"], _set_vcpus_params),
    "VM.set_memory_dynamic_range": (["ref:VM", "int64", "int64"], _vm_dynamic_range),
    "VM.query_data_source": (["ref:VM", "string"], _query_data_source),
    "VM_metrics.get_VCPUs_utilisation": (["ref:VM_metrics"], _vcpus_utilisation),
    "VM_metrics.get_VCPUs_number": _get("VM_metrics", "VCPUs_number", str),
    "VM_metrics.get_memory_actual": _get("VM_metrics", "memory_actual", str),
    "VM_guest_metrics.get_networks": _get("VM_guest_metrics", "networks", dict),
    "VBD.get_VDI": _get("VBD", "VDI"),
    "VBD.get_type": _get("VBD", "type"),
    "VDI.destroy": (["ref:VDI"], _vdi_destroy),
}
