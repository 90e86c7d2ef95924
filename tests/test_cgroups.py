"""The cgroups driver against the real cgroup file system (v1 here; v2 where it can run).

Every test uses a unique driver root nested under this process's own cgroups (parent="self")
and removes it afterwards, killing anything left inside.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tycoon.errors import Rejected
from tycoon.resources import Shares, Usage
from tycoon.vmm import make_driver
from tycoon.vmm.cgroupfs import find_mounts
from tycoon.vmm.cgroups import CgroupsDriver

pytestmark = pytest.mark.cgroups

MiB = 1024**2
KEY_A = "UA" + "A" * 54
KEY_B = "UB" + "B" * 54


def _v1_reason() -> str | None:
    """Why the v1 driver cannot run here, or None."""
    try:
        driver = CgroupsDriver(root=f"tycoon-probe-{uuid.uuid4().hex[:8]}", parent="self",
                               version="v1", state_dir=None)
    except (Rejected, ValueError) as error:
        return f"no writable cgroup v1 cpu controller: {error}"
    driver.teardown()
    return None


V1_REASON = _v1_reason() if "cpu" in find_mounts().v1 else "no cgroup v1 cpu hierarchy mounted"
needs_v1 = pytest.mark.skipif(V1_REASON is not None, reason=V1_REASON or "")


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[CgroupsDriver]:
    d = CgroupsDriver(root=f"tycoon-test-{uuid.uuid4().hex[:10]}", parent="self",
                      version="v1", state_dir=str(tmp_path), memory_floor=32 * MiB)
    try:
        yield d
    finally:
        d.teardown()
        assert not any(p.exists() for p in d.backend.root_dirs())


def _busy(seconds: float = 30.0) -> subprocess.Popen:
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def _dir(driver: CgroupsDriver, account: str, controller: str) -> Path:
    return driver.backend.paths(driver.sandbox(account))[controller]  # type: ignore[attr-defined]


def _read(driver: CgroupsDriver, account: str, controller: str, knob: str) -> str:
    return (_dir(driver, account, controller) / knob).read_text().strip()


@needs_v1
def test_create_writes_the_minimum(driver: CgroupsDriver) -> None:
    assert driver.version == "v1"
    assert {"cpu_weight", "cpu_cap", "memory"} <= driver.knobs
    driver.create(KEY_A)
    driver.create(KEY_A)  # idempotent
    assert driver.exists(KEY_A)
    assert driver.accounts() == [KEY_A]
    assert _read(driver, KEY_A, "cpu", "cpu.shares") == "2"
    assert _read(driver, KEY_A, "cpu", "cpu.cfs_quota_us") == "1000"  # idle cap: 1 ms / period
    assert int(_read(driver, KEY_A, "memory", "memory.limit_in_bytes")) == 32 * MiB


@needs_v1
def test_apply_writes_weights_and_limits(driver: CgroupsDriver) -> None:
    driver.create(KEY_A)
    memory = driver.capacity().memory
    driver.apply({KEY_A: Shares(cpu=0.75, memory=0.25, disk=0.5, ports=(8080,)),
                  KEY_B: Shares(cpu=0.25, memory=0.1)})
    assert driver.accounts() == sorted([KEY_A, KEY_B])  # B created by apply
    assert _read(driver, KEY_A, "cpu", "cpu.shares") == "75000"
    assert _read(driver, KEY_B, "cpu", "cpu.shares") == "25000"
    assert _read(driver, KEY_A, "cpu", "cpu.cfs_quota_us") == "-1"  # work-conserving: no cap
    limit = int(_read(driver, KEY_A, "memory", "memory.limit_in_bytes"))
    page = 4096
    assert abs(limit - int(0.25 * memory)) < page  # the kernel rounds to pages
    blkio = _dir(driver, KEY_A, "blkio")
    weight_files = [f for f in ("blkio.weight", "blkio.bfq.weight") if (blkio / f).exists()]
    if weight_files:
        assert "500" in (blkio / weight_files[0]).read_text()
    assert driver.ports_of(KEY_A) == (8080,)
    # another process reads the grants from the state file
    other = CgroupsDriver(root=driver.root, parent="self", version="v1",
                          state_dir=str(driver._state_file.parent))  # type: ignore[union-attr]
    assert other.ports_of(KEY_A) == (8080,)
    assert sorted(other.accounts()) == sorted([KEY_A, KEY_B])  # adopted from the file system
    # B absent from the next allocation: back to the minimum
    driver.apply({KEY_A: Shares(cpu=1.0)})
    assert _read(driver, KEY_B, "cpu", "cpu.shares") == "2"
    assert _read(driver, KEY_B, "cpu", "cpu.cfs_quota_us") == "1000"
    assert _read(driver, KEY_A, "cpu", "cpu.shares") == "100000"
    assert driver.ports_of(KEY_A) == ()


@needs_v1
def test_cpu_cap_mode_caps_at_the_share(tmp_path: Path) -> None:
    d = CgroupsDriver(root=f"tycoon-test-{uuid.uuid4().hex[:10]}", parent="self",
                      version="v1", state_dir=None, cpu_cap=True, period_us=50_000)
    try:
        d.apply({KEY_A: Shares(cpu=0.3)})
        cores = d.capacity().cores
        assert _read(d, KEY_A, "cpu", "cpu.cfs_period_us") == "50000"
        assert _read(d, KEY_A, "cpu", "cpu.cfs_quota_us") == str(math.ceil(0.3 * cores * 50_000))
    finally:
        d.teardown()


@needs_v1
@pytest.mark.parametrize(
    "bad", [{KEY_A: Shares(cpu=2.0)}, {KEY_A: Shares(cpu=0.7), KEY_B: Shares(cpu=0.7)},
            {KEY_A: Shares(memory=math.inf)}, {"": Shares(cpu=0.1)}],
)
def test_bad_shares_write_nothing(driver: CgroupsDriver, bad: dict) -> None:
    driver.apply({KEY_A: Shares(cpu=0.4)})
    with pytest.raises(Rejected):
        driver.apply(bad)
    assert _read(driver, KEY_A, "cpu", "cpu.shares") == "40000"
    assert driver.accounts() == [KEY_A]


@needs_v1
def test_usage_counts_the_kernels_cpu_time(driver: CgroupsDriver) -> None:
    driver.apply({KEY_A: Shares(cpu=0.5, memory=0.1), KEY_B: Shares(cpu=0.5, memory=0.1)})
    proc = _busy()
    try:
        driver.attach(KEY_A, proc.pid)
        assert proc.pid in driver.procs(KEY_A)
        driver.usage()
        before = driver.cpu_seconds(KEY_A)
        time.sleep(1.0)
        usage = driver.usage()
        assert driver.cpu_seconds(KEY_A) > before
        assert 0.0 < usage[KEY_A].cpu <= 1.0
        # v1 charges a page to the cgroup where it faults, and the busy loop had faulted its
        # pages in before it was attached: memory charged here may be 0 (it was, once, on a
        # busy machine). The kernel guarantees a count, not a positive one.
        assert usage[KEY_A].memory >= 0.0
        assert usage[KEY_B] == Usage()  # nothing ran there
    finally:
        proc.kill()
        proc.wait()


@needs_v1
def test_memory_limit_never_below_what_is_held(driver: CgroupsDriver) -> None:
    driver.apply({KEY_A: Shares(cpu=0.5, memory=0.1)})  # cpu 0 would be the 1% idle cap
    # allocate (and touch) only once inside the sandbox: v1 charges pages where they fault
    code = (
        "import sys, time\nsys.stdin.readline()\nb = b'x' * (96 << 20)\n"
        "print('held', flush=True)\ntime.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        driver.attach(KEY_A, proc.pid)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "held"
        assert driver.usage()[KEY_A].memory * driver.capacity().memory > 90 * MiB
        # the 32 MiB floor < 96 MiB held: the limit stops at what is held (no stall, no kill)
        driver.apply({KEY_A: Shares(cpu=0.5)})
        limit = int(_read(driver, KEY_A, "memory", "memory.limit_in_bytes"))
        assert 96 * MiB <= limit < 128 * MiB
        assert proc.poll() is None
        # once the memory is freed, the next apply reaches the target
        proc.kill()
        proc.wait()
        driver.apply({KEY_A: Shares(cpu=0.5)})
        assert int(_read(driver, KEY_A, "memory", "memory.limit_in_bytes")) == 32 * MiB
    finally:
        proc.kill()
        proc.wait()


@needs_v1
def test_destroy_kills_and_removes(driver: CgroupsDriver) -> None:
    driver.apply({KEY_A: Shares(cpu=1.0)})
    proc = _busy()
    driver.attach(KEY_A, proc.pid)
    dirs = driver.backend.dirs(driver.sandbox(KEY_A))
    driver.destroy(KEY_A)
    assert proc.wait(timeout=10) == -9
    assert not any(p.exists() for p in dirs)
    assert driver.accounts() == []
    driver.destroy(KEY_A)  # idempotent
    with pytest.raises(Rejected) as info:
        driver.attach(KEY_A, 1)
    assert info.value.code == "unknown_account"


@needs_v1
def test_odd_account_ids_get_safe_names(driver: CgroupsDriver) -> None:
    odd = "../../etc/passwd"
    driver.create(odd)
    name = driver.sandbox(odd)
    assert "/" not in name and not name.startswith(".")
    for path in driver.backend.dirs(name):
        assert path.parent in driver.backend.root_dirs()
    # a second driver adopts it under its directory name, then learns the real id
    other = CgroupsDriver(root=driver.root, parent="self", version="v1", state_dir=None)
    assert other.accounts() == [name]
    other.create(odd)
    assert other.accounts() == [odd]
    driver.destroy(odd)
    assert not driver.exists(odd)


@needs_v1
def test_make_driver_builds_the_cgroups_driver(tmp_path: Path) -> None:
    d = make_driver("cgroups", root=f"tycoon-test-{uuid.uuid4().hex[:10]}", parent="self",
                    state_dir=None, cores=3, mhz=1000, net=5)
    try:
        assert d.name == "cgroups"
        capacity = d.capacity()
        assert (capacity.cpu, capacity.cores, capacity.net) == (3000, 3, 5)
        assert capacity.memory > 0 and capacity.disk > 0
    finally:
        d.teardown()  # type: ignore[attr-defined]


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        make_driver("cgroups", version="v3")
    with pytest.raises(ValueError):
        make_driver("cgroups", root="../x")
    with pytest.raises(ValueError):
        make_driver("cgroups", period_us=10)
