"""``tycoon up --driver cgroups``: every host is this machine, in its own cgroup subtree and
on its own CPU, and runs a user's job over the bus (root and cgroup v1 cpu + cpuset)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from up_kit import stop

from tycoon.bus.keys import subject_id
from tycoon.vmm import cgroups_v1
from tycoon.vmm.cgroupfs import find_mounts
from tycoon.vmm.cgroups import CgroupsDriver

pytestmark = [pytest.mark.cgroups, pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(240),
              pytest.mark.xdist_group("cpu")]


def _missing() -> str | None:
    lacking = cgroups_v1.lacks(pinned=True)
    if lacking is None and len(os.sched_getaffinity(0)) < 2:
        return "needs two CPUs (one per host)"
    return lacking


def tycoon(*args: str, home: Path, script: str = "tycoon.cli.main",
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", script, "--home", str(home), *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_up_with_cgroups_runs_jobs_on_pinned_hosts(nats_url: str, tmp_path: Path) -> None:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    state = tmp_path / "market"
    jobs = Path(tempfile.mkdtemp(prefix="tycoon-upjobs-", dir="/tmp"))
    jobs.chmod(0o755)
    env = {**os.environ, "TYCOON_JOBS_ROOT": str(jobs)}
    up = subprocess.Popen(
        [sys.executable, "-m", "tycoon.cli.main", "up", "--nats", nats_url, "--duration", "120",
         "--hosts", "2", "--agents", "0", "--driver", "cgroups", "--state", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (state / "pids" / "host-2.pid").exists():
            time.sleep(0.5)
        while time.monotonic() < deadline and \
                tycoon("--nats", nats_url, "--as", "operator", "status", "--check",
                       home=state).returncode != 0:
            time.sleep(0.5)
        home = ["--nats", nats_url, "--as", "alice"]
        assert tycoon("keys", "new", "alice", home=state).returncode == 0
        assert tycoon(*home, "bank", "open", home=state).returncode == 0
        key = json.loads(tycoon(*home, "keys", "show", "alice", "--json", home=state).stdout)
        minted = tycoon("--nats", nats_url, "--as", "operator", "bank", "mint",
                        key["public_key"], "100", home=state)
        assert minted.returncode == 0, minted.stderr
        code = ("import os; print('UID', os.getuid()); print('CPUS', sorted(os.sched_getaffinity"
                "(0))); print(open('/proc/self/cgroup').read())")
        seen = {}
        for host in ("host-1", "host-2"):
            for op in (("fund", host, "5"), ("bid", host, "1h", "cpu:1,0,1.0")):
                done = tycoon(*home, *op, home=state, script="tycoon.cli.pub")
                assert done.returncode == 0, done.stderr
            ran = tycoon(*home, "exec", host, "--", "/usr/bin/python3", "-c", code, home=state,
                         script="tycoon.cli.pub")
            assert ran.returncode == 0, ran.stderr
            lines = ran.stdout.splitlines()
            uid = int(lines[0].split()[1])
            assert 60000 <= uid <= 60999
            seen[host] = lines[1]
            public = json.loads(tycoon("keys", "show", host, "--json", home=state).stdout)
            root = f"tycoon-{subject_id(public['public_key'])[:8]}"
            cpu = next(x for x in lines if ":cpu:" in x or ":cpu," in x)
            assert cpu.endswith(f"/{root}/{key['public_key']}"), cpu
        assert seen == {"host-1": "CPUS [0]", "host-2": "CPUS [1]"}
    finally:
        stop(up)
        shutil.rmtree(jobs, ignore_errors=True)
        for host in ("host-1", "host-2"):  # the hosts keep their sandboxes for a restart
            shown = tycoon("keys", "show", host, "--json", home=state)
            if shown.returncode == 0:
                _remove_root(f"tycoon-{subject_id(json.loads(shown.stdout)['public_key'])[:8]}")


def _remove_root(root: str) -> None:
    """Kill what is left in a host's cgroup root and remove it in every hierarchy."""
    for mount in {*find_mounts().v1.values()}:
        base = mount / root
        if not base.is_dir():
            continue
        for sandbox in [p for p in base.iterdir() if p.is_dir()]:
            for pid in (sandbox / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        CgroupsDriver(root=root, version="v1", state_dir=None, strict=False).teardown()
        break
    for mount in {*find_mounts().v1.values()}:
        base = mount / root
        for sandbox in [p for p in base.iterdir() if p.is_dir()] if base.is_dir() else []:
            with contextlib.suppress(OSError):
                sandbox.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()
