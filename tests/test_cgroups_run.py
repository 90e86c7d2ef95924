"""``tycoon run --account ID -- CMD``: the command runs inside the account's real cgroups."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tycoon.resources import Shares
from tycoon.vmm.cgroupfs import find_mounts
from tycoon.vmm.cgroups import CgroupsDriver

pytestmark = pytest.mark.cgroups

KEY = "UR" + "R" * 54
ROOT_OK = os.geteuid() == 0 and "cpu" in find_mounts().v1


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[CgroupsDriver]:
    if not ROOT_OK:
        pytest.skip("needs root and a cgroup v1 cpu hierarchy")
    d = CgroupsDriver(root=f"tycoon-test-{uuid.uuid4().hex[:10]}", parent="self",
                      version="v1", state_dir=str(tmp_path))
    try:
        yield d
    finally:
        d.teardown()


def _run(driver: CgroupsDriver, *argv: str, account: str = KEY) -> subprocess.CompletedProcess:
    assert driver._state_file is not None
    return subprocess.run(
        [sys.executable, "-m", "tycoon.cli.main", "--log-level", "error", "run",
         "--account", account, "--driver-root", driver.root, "--driver-parent", "self",
         "--state-dir", str(driver._state_file.parent), "--", *argv],
        capture_output=True, text=True, timeout=60,
    )


def test_command_runs_in_the_sandbox_with_its_exit_code(driver: CgroupsDriver) -> None:
    driver.apply({KEY: Shares(cpu=0.5, memory=0.1, ports=(8080, 9000))})
    code = (
        "import os, sys\n"
        "print(open('/proc/self/cgroup').read())\n"
        "print('ACCOUNT', os.environ['TYCOON_ACCOUNT'])\n"
        "print('PORTS', os.environ['TYCOON_PORTS'])\n"
        "sys.exit(3)\n"
    )
    done = _run(driver, sys.executable, "-c", code)
    assert done.returncode == 3, done.stderr
    lines = {line.split(":", 2)[1]: line.split(":", 2)[2]
             for line in done.stdout.splitlines() if line.count(":") >= 2}
    assert lines["cpu"].endswith(f"/{driver.root}/{KEY}")
    assert lines["cpuacct"].endswith(f"/{driver.root}/{KEY}")
    assert lines["memory"].endswith(f"/{driver.root}/{KEY}")
    assert f"ACCOUNT {KEY}" in done.stdout
    assert "PORTS 8080,9000" in done.stdout
    assert driver.cpu_seconds(KEY) > 0.0  # the kernel charged the account


def test_unknown_account_is_refused(driver: CgroupsDriver) -> None:
    done = _run(driver, "true", account="Unobody")
    assert done.returncode == 1
    assert "unknown_account" in done.stderr
    created = _run(driver, "true", account="Unew")
    assert created.returncode == 1
    assert not driver.exists("Unew")


def test_create_flag_missing_command_and_signals(driver: CgroupsDriver) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tycoon.cli.run", "--account", "Unew", "--driver-root",
         driver.root, "--driver-parent", "self", "--state-dir", "/nonexistent/x", "--create",
         "--", "sh", "-c", "kill -TERM $$"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 128 + 15, done.stderr
    assert driver.backend.exists(driver.sandbox("Unew"))
    driver.create(KEY)
    assert _run(driver, "no-such-command-here").returncode == 127
    assert _run(driver).returncode == 2  # no command
