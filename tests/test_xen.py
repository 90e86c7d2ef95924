"""The Xen driver, through the real XenAPI client, against a local XML-RPC XAPI stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import XenAPI

from tycoon.errors import Rejected
from tycoon.resources import Capacity, Shares
from tycoon.testing.fake_xapi import FakeXapi, GiB, MiB
from tycoon.vmm import make_driver
from tycoon.vmm.xen.driver import ACCOUNT_KEY, XenDriver
from tycoon.vmm.xen.ports import IptablesForwarder, iptables_commands, setup_commands

KEY_A = "UA" + "A" * 54
KEY_B = "UB" + "B" * 54


@pytest.fixture
def fake() -> Iterator[FakeXapi]:
    with FakeXapi(cores=2, mhz=2500.0, memory=8 * GiB, vcpus=2) as server:
        yield server


@pytest.fixture
def driver(fake: FakeXapi) -> Iterator[XenDriver]:
    d = make_driver("xen", url=fake.url, password="secret")
    assert isinstance(d, XenDriver)
    yield d
    d.close()


def test_capacity_from_the_host(driver: XenDriver) -> None:
    assert driver.name == "xen"
    assert driver.capacity() == Capacity(cpu=5000, memory=8 * GiB, disk=500 * GiB,
                                         net=1_000_000_000, cores=2)


def test_create_clones_provisions_and_starts(fake: FakeXapi, driver: XenDriver) -> None:
    driver.create(KEY_A)
    driver.create(KEY_A)  # idempotent
    vm = fake.vm_by_label(f"tycoon-{KEY_A}")
    assert vm is not None
    assert vm["power_state"] == "Running" and not vm["is_a_template"] and vm["provisioned"]
    assert vm["other_config"][ACCOUNT_KEY] == KEY_A
    assert vm["VCPUs_params"] == {"weight": "1", "cap": "1"}  # no share yet: the minimum
    assert vm["memory_dynamic_max"] == vm["memory_static_min"] == 128 * MiB
    assert fake.calls.count("VM.clone") == 1
    assert driver.accounts() == [KEY_A]


def test_apply_sets_credit_scheduler_and_memory(fake: FakeXapi, driver: XenDriver) -> None:
    driver.apply({KEY_A: Shares(cpu=0.75, memory=0.25), KEY_B: Shares(cpu=0.25, memory=0.7)})
    a = fake.vm_by_label(f"tycoon-{KEY_A}")
    b = fake.vm_by_label(f"tycoon-{KEY_B}")
    assert a is not None and b is not None
    assert a["VCPUs_params"] == {"weight": "7500", "cap": "0"}  # work-conserving: no cap
    assert b["VCPUs_params"] == {"weight": "2500", "cap": "0"}
    assert a["memory_dynamic_min"] == a["memory_dynamic_max"] == 2 * GiB
    assert b["memory_dynamic_max"] == 4 * GiB  # 0.7 × 8 GiB held to static_max
    calls = len(fake.calls)
    driver.apply({KEY_A: Shares(cpu=0.75, memory=0.25), KEY_B: Shares(cpu=0.25, memory=0.7)})
    assert "VM.set_VCPUs_params" not in fake.calls[calls:]  # unchanged values are not re-sent
    driver.apply({KEY_A: Shares(cpu=1.0)})
    assert b["VCPUs_params"] == {"weight": "1", "cap": "1"}  # absent: the minimum


def test_usage_follows_the_weights(fake: FakeXapi, driver: XenDriver) -> None:
    driver.apply({KEY_A: Shares(cpu=0.75, memory=0.5), KEY_B: Shares(cpu=0.25, memory=0.25)})
    usage = driver.usage()
    assert usage[KEY_A].cpu == pytest.approx(0.75)
    assert usage[KEY_B].cpu == pytest.approx(0.25)
    assert usage[KEY_A].memory == pytest.approx(0.5)
    driver.apply({KEY_A: Shares(cpu=0.5), KEY_B: Shares(cpu=0.5)})
    usage = driver.usage()
    assert usage[KEY_A].cpu == pytest.approx(usage[KEY_B].cpu)


def test_usage_from_data_sources_when_utilisation_is_empty() -> None:
    with FakeXapi(cores=2, vcpus=2, utilisation_deprecated=True) as fake:
        d = XenDriver(url=fake.url, password="secret", cpu_cap=True)
        d.apply({KEY_A: Shares(cpu=0.2), KEY_B: Shares(cpu=0.8)})
        vm = fake.vm_by_label(f"tycoon-{KEY_A}")
        assert vm is not None and vm["VCPUs_params"]["cap"] == "40"  # 0.2 × 2 pCPUs × 100 %
        usage = d.usage()
        assert "VM.query_data_source" in fake.calls
        assert usage[KEY_A].cpu == pytest.approx(0.2)
        assert usage[KEY_B].cpu == pytest.approx(0.8)
        d.close()


def test_destroy_removes_vm_and_disks(fake: FakeXapi, driver: XenDriver) -> None:
    driver.apply({KEY_A: Shares(cpu=0.5), KEY_B: Shares(cpu=0.5)})
    assert len(fake.db["VDI"]) == 2
    driver.destroy(KEY_A)
    driver.destroy(KEY_A)  # idempotent
    assert fake.vm_by_label(f"tycoon-{KEY_A}") is None
    assert len(fake.db["VDI"]) == 1
    assert driver.accounts() == [KEY_B]
    assert set(driver.usage()) == {KEY_B}


def test_a_new_driver_adopts_existing_vms(fake: FakeXapi, driver: XenDriver) -> None:
    driver.apply({KEY_A: Shares(cpu=0.5)})
    again = XenDriver(url=fake.url, password="secret")
    assert again.accounts() == [KEY_A]
    assert again.vm(KEY_A) == driver.vm(KEY_A)
    again.create(KEY_A)
    assert fake.calls.count("VM.clone") == 1


def test_ports_are_forwarded_to_the_vm(fake: FakeXapi) -> None:
    seen: list[dict[int, str]] = []
    d = XenDriver(url=fake.url, password="secret", forwarder=seen.append)
    d.apply({KEY_A: Shares(cpu=0.5, ports=(8080,)), KEY_B: Shares(cpu=0.5, ports=(22, 443))})
    ip_a = fake.db["VM_guest_metrics"][fake.vm_by_label(f"tycoon-{KEY_A}")["guest_metrics"]]
    assert seen[-1][8080] == ip_a["networks"]["0/ip"]
    assert set(seen[-1]) == {22, 443, 8080}
    d.apply({KEY_A: Shares(cpu=0.5, ports=(8080,))})
    assert set(seen[-1]) == {8080}
    assert d.forwards() == seen[-1]


def test_iptables_rules() -> None:
    rules = iptables_commands({8080: "10.0.0.5"}, interface="eth0")
    assert rules[0] == ["iptables", "-t", "nat", "-F", "TYCOON"]
    assert rules[1][-4:] == ["-j", "DNAT", "--to-destination", "10.0.0.5:8080"]
    assert rules[1][rules[1].index("-i"):rules[1].index("-i") + 2] == ["-i", "eth0"]
    assert setup_commands()[1][-2:] == ["-j", "TYCOON"]
    with pytest.raises(Rejected):
        iptables_commands({80: "10.0.0.5; rm -rf /"})
    with pytest.raises(Rejected):
        iptables_commands({0: "10.0.0.5"})
    ran: list[list[str]] = []
    IptablesForwarder(run=lambda argv: ran.append(list(argv)))({443: "10.0.0.9"})
    assert len(ran) == 2


# -- failure paths -----------------------------------------------------------------------------

def test_wrong_password_is_refused(fake: FakeXapi) -> None:
    with pytest.raises(Rejected) as info:
        XenDriver(url=fake.url, password="wrong")
    assert info.value.code == "driver_failed"
    assert "SESSION_AUTHENTICATION_FAILED" in info.value.message


def test_missing_template_is_refused(fake: FakeXapi) -> None:
    d = XenDriver(url=fake.url, password="secret", template="no-such-template")
    with pytest.raises(Rejected) as info:
        d.create(KEY_A)
    assert "no VM template" in info.value.message
    assert d.accounts() == []


def test_failed_start_leaves_nothing_behind(fake: FakeXapi, driver: XenDriver) -> None:
    fake.fail_next("VM.start", "HOST_NOT_ENOUGH_FREE_MEMORY", "4294967296", "1024")
    with pytest.raises(Rejected) as info:
        driver.create(KEY_A)
    assert "HOST_NOT_ENOUGH_FREE_MEMORY" in info.value.message
    assert fake.vm_by_label(f"tycoon-{KEY_A}") is None
    assert driver.accounts() == []
    assert len(fake.db["VDI"]) == 0


def test_xapi_failure_during_apply_reports_and_continues(fake: FakeXapi,
                                                        driver: XenDriver) -> None:
    driver.apply({KEY_A: Shares(cpu=0.5), KEY_B: Shares(cpu=0.5)})
    fake.fail_next("VM.set_VCPUs_params", "INTERNAL_ERROR", "boom")
    with pytest.raises(Rejected) as info:
        driver.apply({KEY_A: Shares(cpu=0.3), KEY_B: Shares(cpu=0.7)})
    assert info.value.code == "driver_failed" and "INTERNAL_ERROR" in info.value.message
    params = sorted(fake.vm_by_label(f"tycoon-{k}")["VCPUs_params"]["weight"]
                    for k in (KEY_A, KEY_B))
    assert "7000" in params  # the other VM was still updated
    driver.apply({KEY_A: Shares(cpu=0.3), KEY_B: Shares(cpu=0.7)})  # the retry succeeds
    assert fake.vm_by_label(f"tycoon-{KEY_A}")["VCPUs_params"]["weight"] == "3000"


def test_bad_shares_make_no_call(fake: FakeXapi, driver: XenDriver) -> None:
    calls = len(fake.calls)
    with pytest.raises(Rejected) as info:
        driver.apply({KEY_A: Shares(cpu=0.8), KEY_B: Shares(cpu=0.8)})
    assert info.value.code == "bad_share"
    assert len(fake.calls) == calls


def test_expired_session_is_renewed(fake: FakeXapi, driver: XenDriver) -> None:
    fake.sessions.clear()  # the host restarted: every session is gone
    driver.create(KEY_A)  # the client sees SESSION_INVALID, logs in again, retries
    assert driver.accounts() == [KEY_A]


def test_unreachable_host_is_refused() -> None:
    with FakeXapi() as fake:
        url = fake.url
    with pytest.raises(Rejected) as info:
        XenDriver(url=url, password="secret")
    assert info.value.code == "driver_failed"


def test_the_wire_follows_xapi_conventions(fake: FakeXapi) -> None:
    session = XenAPI.Session(fake.url)
    session.xenapi.login_with_password("root", "secret", "1.0", "test")
    vm = session.xenapi.VM.get_by_name_label("tycoon-template")[0]
    assert vm.startswith("OpaqueRef:")
    assert session.xenapi.VM.get_memory_static_max(vm) == str(4 * GiB)  # int64 as a string
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.VM.set_memory_dynamic_range(vm, 1, 2)  # ints: wrong wire type
    assert info.value.details[0] == "FIELD_TYPE_ERROR"
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.VM.start("OpaqueRef:nope", False, True)
    assert info.value.details[:2] == ["HANDLE_INVALID", "VM"]
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.VM.start(vm, False, True)
    assert info.value.details[0] == "VM_IS_TEMPLATE"
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.VM.set_VCPUs_params(vm, {"weight": 256})
    assert info.value.details[0] == "FIELD_TYPE_ERROR"
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.VM.no_such_call(vm)
    assert info.value.details[0] == "MESSAGE_METHOD_UNKNOWN"
    session.xenapi.session.logout()
