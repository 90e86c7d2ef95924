"""cgroup v2 and host discovery: the real unified hierarchy where it runs, file formats, parsing.

On the CI machine the unified hierarchy is mounted beside v1 with no cpu controller (cpu is
bound to v1), so the real-v2 tests cover what v2 can do there: create, join, count CPU time
(``cpu.stat`` exists without the cpu controller), kill through ``cgroup.kill``, remove; and the
strict refusal. The knob formats are checked on a directory laid out like a cgroup2 sandbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tycoon.errors import Rejected
from tycoon.resources import Shares
from tycoon.vmm import cgroupfs
from tycoon.vmm.cgroups import CgroupsDriver, detect_version
from tycoon.vmm.cgroups_backend import scale
from tycoon.vmm.cgroups_v1 import JOB_CONTROLLERS, lacks
from tycoon.vmm.cgroups_v2 import V2Backend

KEY = "UC" + "C" * 54
MOUNTS = cgroupfs.find_mounts()


def _v2_reason() -> str | None:
    if MOUNTS.v2 is None:
        return "no cgroup2 file system mounted"
    probe = MOUNTS.v2 / f"tycoon-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as error:
        return f"cgroup2 at {MOUNTS.v2} is not writable: {error.strerror}"
    return None


V2_REASON = _v2_reason()
needs_v2 = pytest.mark.skipif(V2_REASON is not None, reason=V2_REASON or "")


@pytest.fixture
def v2_driver() -> Iterator[CgroupsDriver]:
    d = CgroupsDriver(root=f"tycoon-test-{uuid.uuid4().hex[:10]}", parent="self",
                      version="v2", strict=False, state_dir=None)
    try:
        yield d
    finally:
        d.teardown()
        assert not any(p.exists() for p in d.backend.root_dirs())


@pytest.mark.cgroups
@needs_v2
def test_v2_sandbox_counts_cpu_and_is_killed_on_destroy(v2_driver: CgroupsDriver) -> None:
    assert v2_driver.version == "v2"
    v2_driver.apply({KEY: Shares(cpu=0.5)})  # writes only the knobs this host offers
    code = "import time\nend = time.time() + 30\nwhile time.time() < end: pass\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        v2_driver.attach(KEY, proc.pid)
        assert v2_driver.procs(KEY) == [proc.pid]
        v2_driver.usage()
        time.sleep(0.5)
        assert v2_driver.usage()[KEY].cpu > 0.0
        assert v2_driver.cpu_seconds(KEY) > 0.0
        dirs = v2_driver.backend.dirs(v2_driver.sandbox(KEY))
        v2_driver.destroy(KEY)
        assert proc.wait(timeout=10) == -9
        assert not any(p.exists() for p in dirs)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.cgroups
@needs_v2
def test_v2_strict_needs_a_cpu_controller() -> None:
    if "cpu" in MOUNTS.v2_controllers():
        pytest.skip("this host's cgroup2 has the cpu controller: nothing to refuse")
    root = f"tycoon-test-{uuid.uuid4().hex[:10]}"
    with pytest.raises(Rejected) as info:
        CgroupsDriver(root=root, version="v2", state_dir=None)
    assert info.value.code == "driver_failed"
    assert "no writable cpu controller" in info.value.message
    assert MOUNTS.v2 is not None and not (MOUNTS.v2 / root).exists()  # cleaned up


@pytest.mark.cgroups
@pytest.mark.skipif(MOUNTS.v2 is None or "cpu" not in MOUNTS.v2_controllers(),
                    reason="cgroup2 here has no cpu controller (cpu is bound to v1)")
def test_v2_real_cpu_weight() -> None:
    d = CgroupsDriver(root=f"tycoon-test-{uuid.uuid4().hex[:10]}", version="v2",
                      state_dir=None)
    try:
        d.apply({KEY: Shares(cpu=0.75)})
        sandbox = d.backend.dirs(d.sandbox(KEY))[0]
        assert (sandbox / "cpu.weight").read_text().strip() == "7500"
        assert (sandbox / "cpu.max").read_text().split()[0] == "max"
    finally:
        d.teardown()


def _sandbox_tree(tmp_path: Path) -> tuple[V2Backend, Path]:
    """A directory laid out like ``<cgroup2>/tycoon/<sandbox>`` with the files the kernel makes."""
    mount = tmp_path / "unified"
    sandbox = mount / "tycoon" / "S"
    sandbox.mkdir(parents=True)
    (mount / "cgroup.controllers").write_text("cpu memory io pids\n")
    for name, text in {"cpu.weight": "100", "cpu.max": "max 100000", "memory.max": "max",
                       "io.weight": "default 100", "memory.current": "123456",
                       "cpu.stat": "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
                       "cgroup.procs": ""}.items():
        (sandbox / name).write_text(text)
    return V2Backend(cgroupfs.Mounts(v2=mount), "tycoon"), sandbox


def test_v2_knob_formats(tmp_path: Path) -> None:
    backend, sandbox = _sandbox_tree(tmp_path)
    backend.set_cpu_weight("S", 0.75)
    assert (sandbox / "cpu.weight").read_text() == "7500"
    backend.set_cpu_weight("S", 0.0)
    assert (sandbox / "cpu.weight").read_text() == "1"
    backend.set_cpu_cap("S", 150_000, 100_000)
    assert (sandbox / "cpu.max").read_text() == "150000 100000"
    backend.set_cpu_cap("S", 0, 100_000)
    assert (sandbox / "cpu.max").read_text() == "1000 100000"
    backend.set_cpu_cap("S", None, 100_000)
    assert (sandbox / "cpu.max").read_text() == "max 100000"
    backend.set_memory("S", 512 << 20)
    assert (sandbox / "memory.max").read_text() == str(512 << 20)
    backend.set_memory("S", None)
    assert (sandbox / "memory.max").read_text() == "max"
    backend.set_io("S", 0.25)
    assert (sandbox / "io.weight").read_text() == "default 2500"
    assert backend.cpu_ns("S") == 2_500_000
    assert backend.memory_bytes("S") == 123456


def test_scale_clamps() -> None:
    assert scale(0.0, 10_000, 1, 10_000) == 1
    assert scale(1.0, 100_000, 2, 262_144) == 100_000
    assert scale(0.5, 1000, 10, 1000) == 500
    assert scale(1e-9, 1000, 10, 1000) == 10


def test_mount_table_parsing(tmp_path: Path) -> None:
    table = tmp_path / "mounts"
    table.write_text(
        "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
        "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
        "cgroup2 /nonexistent/unified cgroup2 rw,nsdelegate 0 0\n"
        "cgroup /sys/fs/cgroup/my\\040dir cgroup rw,blkio 0 0\n"
        "garbage\n"
    )
    mounts = cgroupfs.find_mounts(str(table))
    assert mounts.v1["cpu"] == mounts.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert mounts.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert mounts.v1["blkio"] == Path("/sys/fs/cgroup/my dir")
    assert mounts.v2 == Path("/nonexistent/unified")
    assert detect_version(mounts) == "v1"  # the unified mount offers no cpu
    assert detect_version(cgroupfs.Mounts(v2=Path("/nonexistent"))) == "v2"
    with pytest.raises(Rejected):
        detect_version(cgroupfs.Mounts())
    # what a jobs host lacks, read from the same table: freezer and pids (cpuset if pinned)
    if os.geteuid() == 0:
        assert lacks(mounts=mounts) == "needs the cgroup v1 controllers ['freezer', 'pids']"
        assert lacks(pinned=True, mounts=mounts) == \
            "needs the cgroup v1 controllers ['freezer', 'pids', 'cpuset']"
        full = cgroupfs.Mounts(v1=dict.fromkeys((*JOB_CONTROLLERS, "cpuset"), Path("/x")))
        assert lacks(pinned=True, mounts=full) is None
    else:
        assert lacks(mounts=mounts) == "needs root (cgroups and per-account uids)"
    assert cgroupfs.find_mounts(str(tmp_path / "missing")) == cgroupfs.Mounts()


def test_v2_with_cpu_is_preferred(tmp_path: Path) -> None:
    mount = tmp_path / "cg2"
    mount.mkdir()
    (mount / "cgroup.controllers").write_text("cpuset cpu io memory\n")
    mounts = cgroupfs.Mounts(v1={"cpu": Path("/x")}, v2=mount)
    assert detect_version(mounts) == "v2"


def test_host_capacity_parsing(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\ncpu MHz : 2000.0\n\nprocessor : 1\ncpu MHz\t: 3000.5\n")
    assert cgroupfs.host_mhz(str(cpuinfo)) == 2500
    assert cgroupfs.host_mhz(str(tmp_path / "none")) == cgroupfs.DEFAULT_MHZ
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1024 kB\nMemFree: 1 kB\n")
    assert cgroupfs.host_memory(str(meminfo)) == 1024 * 1024
    assert cgroupfs.host_cores() >= 1
    assert cgroupfs.host_disk("/") > 0
    assert cgroupfs.self_cgroups()  # /proc/self/cgroup parses
