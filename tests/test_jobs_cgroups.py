"""Jobs on the real kernel: cgroups driver (v1 here), per-account uids, freezer, pids.

Skipped (with the reason) only when this kernel or user lacks what a test needs: root, a
cgroup v1 cpu hierarchy, the freezer and pids controllers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from jobs_kit import JobMarket, job_market, until

from tycoon.auctioneer.jobhost import JobConfig
from tycoon.auctioneer.jobs import Limits
from tycoon.errors import Rejected
from tycoon.messages.jobs import JobExit, JobOutput
from tycoon.vmm import cgroups_v1
from tycoon.vmm.cgroupfs import read_text
from tycoon.vmm.cgroups import CgroupsDriver

pytestmark = [pytest.mark.cgroups, pytest.mark.nats, pytest.mark.timeout(90)]

PY = "/usr/bin/python3"  # readable by any uid (the venv's python lives under /root)
UIDS = (61000, 61999)


def _missing() -> str | None:
    lacking = cgroups_v1.lacks()
    if lacking is None and not os.access(PY, os.X_OK):
        return f"needs {PY}"
    return lacking


@dataclass
class Setup:
    market: JobMarket
    driver: CgroupsDriver
    root: Path
    secrets: Path


def _driver_and_base(tmp_path: Path, prefix: str) -> tuple[CgroupsDriver, Path]:
    """A fresh v1 cgroups driver (the test skipped if this kernel lacks what it needs) and a
    new directory under /tmp for the host's files: a world-traversable place, modes must hold."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    driver = CgroupsDriver(root=f"tycoon-test-{uuid.uuid4().hex[:10]}", parent="self",
                           version="v1", state_dir=str(tmp_path))
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    return driver, base


@pytest.fixture
async def setup(nats_url: str, tmp_path: Path) -> AsyncIterator[Setup]:
    driver, base = _driver_and_base(tmp_path, "tycoon-jobs-")
    secrets = base / "state"
    secrets.mkdir(mode=0o700)
    (secrets / "host.seed").write_text("SUAHOSTSEED")
    (base / "host.key").write_text("SUAHOSTKEY")
    (base / "host.key").chmod(0o600)
    limits = Limits(pids_per_account=32, output_total=32 * 1024, grace_s=0.5)
    config = JobConfig(root=base / "jobs", uid_file=tmp_path / "uids.json", uid_range=UIDS,
                       limits=limits)
    try:
        async with job_market(nats_url, tmp_path, driver, config, idle_s=1.0) as market:
            yield Setup(market, driver, base / "jobs", base)
    finally:
        driver.teardown()
        shutil.rmtree(base, ignore_errors=True)


def _text(chunks: list[JobOutput], stream: str = "stdout") -> str:
    return b"".join(c.data for c in chunks if c.stream == stream).decode()


async def test_a_job_runs_in_its_cgroups_as_its_own_uid_and_cannot_read_the_host(
        setup: Setup) -> None:
    user = await setup.market.user()
    await user.fund_and_bid(10)
    code = (
        "import os\n"
        "print(open('/proc/self/cgroup').read())\n"
        "print([l for l in open('/proc/self/status') if l[:4] in ('Uid:', 'Gid:', 'Grou')])\n"
        f"for p in ('{setup.secrets}/state/host.seed', '{setup.secrets}/host.key'):\n"
        "    try:\n        open(p).read(); print('READ', p)\n"
        "    except PermissionError: print('DENIED', p)\n"
        "print('CWD', os.getcwd())\n"
    )
    chunks, done = await user.jobs.run([PY, "-c", code])
    out = _text(chunks)
    assert done.status == 0, _text(chunks, "stderr")
    uid = setup.market.jobhost.uids.uid(user.key)  # type: ignore[union-attr]
    assert UIDS[0] <= uid <= UIDS[1]
    for controller in ("cpu", "cpuacct", "memory", "freezer", "pids"):
        line = next(x for x in out.splitlines() if f":{controller}:" in x
                    or x.split(":")[1:2] == [controller])
        assert line.endswith(f"/{setup.driver.root}/{user.key}"), line
    assert f"'Uid:\\t{uid}\\t{uid}\\t{uid}\\t{uid}\\n'" in out
    assert f"'Gid:\\t{uid}\\t{uid}\\t{uid}\\t{uid}\\n'" in out
    assert "'Groups:\\t \\n'" in out  # no supplementary group
    assert out.count("DENIED") == 2 and "READ" not in out
    home = setup.root / user.key
    assert f"CWD {home}" in out
    mode = home.stat()
    assert (mode.st_uid, stat.S_IMODE(mode.st_mode)) == (uid, 0o700)


async def test_the_pids_controller_caps_the_process_count(setup: Setup) -> None:
    user = await setup.market.user()
    await user.fund_and_bid(10)
    code = (
        "import os, time\nmade = 0\n"
        "for _ in range(80):\n"
        "    try:\n        pid = os.fork()\n    except OSError: break\n"
        "    if pid == 0:\n        time.sleep(2); os._exit(0)\n"
        "    made += 1\n"
        "print('MADE', made)\n"
    )
    chunks, done = await user.jobs.run([PY, "-c", code])
    made = int(_text(chunks).split()[-1])
    assert done.status == 0 and 20 <= made < 32  # 32 pids in all, the job itself among them
    name = setup.driver.sandbox(user.key)
    pids_dir = setup.driver.backend.bases["pids"] / name  # type: ignore[attr-defined]
    assert read_text(pids_dir / "pids.max") == "32"


@pytest.mark.xdist_group("cpu")  # CPU-time ratios on CPU 0: one such test at a time
async def test_cpu_time_follows_the_shares_on_one_core(setup: Setup) -> None:
    rich, poor = await setup.market.user(), await setup.market.user()
    await rich.fund_and_bid(300)
    await poor.fund_and_bid(100)
    burn = "import os, time\nos.sched_setaffinity(0, {0})\nend = time.time() + 8\n" \
           "while time.time() < end: pass\n"
    started = [await u.jobs.start([PY, "-c", burn]) for u in (rich, poor)]
    driver = setup.driver
    await asyncio.sleep(1.0)  # both burning, shares settled
    before = [driver.cpu_seconds(u.key) for u in (rich, poor)]
    await asyncio.sleep(4.0)
    after = [driver.cpu_seconds(u.key) for u in (rich, poor)]
    got = (after[0] - before[0]) / (after[1] - before[1])
    shares = driver.shares()
    want = shares[rich.key].cpu / shares[poor.key].cpu
    print(f"cpu seconds ratio {got:.3f} for a share ratio of {want:.3f}")  # shown with -s
    assert abs(got / want - 1) < 0.10, (got, want)
    for reply, _, sub in started:
        await (rich if reply["account"] == rich.key else poor).jobs.signal(reply["job"], "KILL")
        await sub.unsubscribe()


async def test_zero_funds_freeze_funding_thaws_refund_kills(setup: Setup) -> None:
    user = await setup.market.user()
    await user.fund_and_bid(1, duration="1s")  # the balance is spent within a second
    code = ("import signal, subprocess, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "subprocess.Popen(['setsid', 'sleep', '300'])\n"  # escapes the job's session
            "while True: pass\n")
    reply, stream, sub = await user.jobs.start([PY, "-c", code])
    driver, jobhost = setup.driver, setup.market.jobhost
    freezer = driver.backend.bases["freezer"] / driver.sandbox(user.key)  # type: ignore
    await until(lambda: read_text(freezer / "freezer.state") == "FROZEN", timeout=15)
    assert user.key in jobhost.frozen
    held = driver.cpu_seconds(user.key)
    await asyncio.sleep(0.5)
    assert driver.cpu_seconds(user.key) - held < 0.01  # frozen: no CPU at all
    assert Path(f"/proc/{reply['pid']}").exists()  # frozen, not killed
    await user.fund_and_bid(1)
    await until(lambda: read_text(freezer / "freezer.state") == "THAWED", timeout=10)
    await until(lambda: driver.cpu_seconds(user.key) - held > 0.2, timeout=10)
    await user.host.refund()
    events = [e async for e in stream.events(timeout=15)]
    assert isinstance(events[-1], JobExit) and events[-1].status == -9  # TERM ignored: KILL
    await until(lambda: not driver.procs(user.key), timeout=10)  # the escaped sleep too
    await sub.unsubscribe()
    # idle for idle_s: the account goes, with its directory and its uid
    home = setup.root / user.key
    await until(lambda: not home.exists(), timeout=15)
    assert user.key not in jobhost.uids.map  # type: ignore[union-attr]


async def test_output_order_and_caps(setup: Setup) -> None:
    user = await setup.market.user()
    await user.fund_and_bid(10)
    code = "import sys\nfor i in range(20000): print(i)\n"
    chunks, done = await user.jobs.run([PY, "-c", code])
    assert [c.seq for c in chunks] + [done.seq] == list(range(1, len(chunks) + 2))
    data = b"".join(c.data for c in chunks)
    assert len(data) == 32 * 1024 and done.dropped > 0
    assert data.decode().split()[:100] == [str(i) for i in range(100)]
    assert sum(1 for c in chunks if c.dropped) == 1


async def test_refusals_start_nothing(setup: Setup) -> None:
    owner, other = await setup.market.user(), await setup.market.user()
    await owner.fund_and_bid(10)
    with pytest.raises(Rejected) as forbidden:
        await other.jobs.auctioneer._call("exec", {"argv": [PY], "account": owner.key})
    assert forbidden.value.code == "forbidden"
    for argv in ([PY, "-c", "x\x00"], ["a" * 30000, "b" * 30000, "c" * 30000]):
        with pytest.raises(Rejected) as bad:
            await owner.jobs.run(argv)
        assert bad.value.code == "malformed"
    assert setup.market.jobhost.table.jobs == {}
    assert setup.driver.procs(owner.key) == []


async def test_a_job_cannot_leave_its_sandbox_thaw_itself_or_touch_another(
        setup: Setup) -> None:
    victim, attacker = await setup.market.user(), await setup.market.user()
    await victim.fund_and_bid(10)
    await attacker.fund_and_bid(10)
    reply, _, sub = await victim.jobs.start([PY, "-c", "import time; time.sleep(60)"])
    driver = setup.driver
    own = driver.backend.bases  # type: ignore[attr-defined]
    name = driver.sandbox(attacker.key)
    code = (
        "import os, signal\n"
        "def attempt(what, act):\n"
        "    try:\n        act(); print('DID', what)\n"
        "    except (PermissionError, ProcessLookupError): print('REFUSED', what)\n"
        f"attempt('leave', lambda: open('{own['cpu'].parent}/cgroup.procs', 'w')"
        ".write(str(os.getpid())))\n"
        f"attempt('thaw', lambda: open('{own['freezer'] / name}/freezer.state', 'w')"
        ".write('THAWED'))\n"
        f"attempt('weight', lambda: open('{own['cpu'] / name}/cpu.shares', 'w')"
        ".write('262144'))\n"
        f"attempt('kill', lambda: os.kill({reply['pid']}, signal.SIGKILL))\n"
        f"attempt('read', lambda: os.listdir('{setup.root / victim.key}'))\n"
        "attempt('root', lambda: os.setuid(0))\n"
        "attempt('reopen', lambda: open('/proc/self/fd/1', 'r'))\n"  # its output file
        f"attempt('state', lambda: os.listdir('{setup.root}/.host'))\n"
    )
    chunks, done = await attacker.jobs.run([PY, "-c", code])
    out = _text(chunks)
    assert done.status == 0, _text(chunks, "stderr")
    assert "DID" not in out and out.count("REFUSED") == 8, out
    assert Path(f"/proc/{reply['pid']}").exists()
    await victim.jobs.signal(reply["job"], "KILL")
    await sub.unsubscribe()
