"""Red team: host-wide caps on jobs and their processes, all accounts together (docs/jobs.md,
"Host-wide caps"). Per account a host allows 16 jobs and 256 processes; many accounts (or
one user with many keys) would still take the whole machine without a cap on the host."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from jobs_kit import JobMarket, job_market, until

from tycoon.auctioneer.jobhost import JobConfig
from tycoon.auctioneer.jobs import Limits
from tycoon.errors import Rejected
from tycoon.vmm import jobs as runner
from tycoon.vmm.simulated import SimulatedDriver

PY = sys.executable
SLEEP = [PY, "-c", "import time; time.sleep(30)"]
FORKS = [PY, "-c", "import os, time\nfor _ in range(4):\n if os.fork() == 0: break\n"
         "time.sleep(30)"]  # five processes in the job's session


def test_defaults_come_from_the_cores_and_pid_max() -> None:
    assert runner.host_jobs_default(2) == 2 * runner.JOBS_PER_CORE
    assert runner.host_pids_default(2, 4_194_304) == 2 * runner.PIDS_PER_CORE
    assert runner.host_pids_default(64, 32_768) == 32_768 // runner.PIDS_SHARE
    assert runner.host_pids_default(1, 100) == 64  # never below a usable floor


@pytest.fixture
async def market(nats_url: str, tmp_path: Path) -> AsyncIterator[JobMarket]:
    config = JobConfig(root=tmp_path / "jobs", limits=Limits(grace_s=0.2), host_jobs=3,
                       host_pids=6)
    async with job_market(nats_url, tmp_path, SimulatedDriver(preset="small"), config) as m:
        yield m


@pytest.mark.nats
@pytest.mark.hostile
@pytest.mark.timeout(60)
async def test_many_accounts_cannot_run_more_jobs_or_processes_than_the_host_allows(
        market: JobMarket) -> None:
    """Two accounts, each far under its own caps, together reach the host's: the next exec
    is refused with ``job_limit`` naming the host-wide cap, and nothing starts."""
    alice, bob = await market.user(), await market.user()
    for user in (alice, bob):
        await user.fund_and_bid(10)
    await alice.jobs.exec(SLEEP)
    await bob.jobs.exec(SLEEP)
    await bob.jobs.exec(SLEEP)
    with pytest.raises(Rejected) as full:  # 3 jobs on the host: a fourth from anyone
        await alice.jobs.exec(["true"])
    assert full.value.code == "job_limit" and "all accounts together" in full.value.message
    assert len(market.jobhost.table.running()) == 3
    for job in [j for j in market.jobhost.table.running() if j.account == bob.key]:
        await bob.jobs.signal(job.id, "KILL")
    await until(lambda: len(market.jobhost.table.running()) == 1)
    await bob.jobs.exec(FORKS)  # 1 + 5 processes: the host's 6, in 2 jobs of its 3
    await until(lambda: market.jobhost.confine.host_pids(
        [j.pid for j in market.jobhost.table.running()]) >= 6)
    with pytest.raises(Rejected) as full:
        await alice.jobs.exec(["true"])
    assert full.value.code == "job_limit" and "processes" in full.value.message


@pytest.mark.cgroups
@pytest.mark.nats
@pytest.mark.hostile
@pytest.mark.timeout(90)
async def test_the_kernel_caps_all_sandboxes_together(nats_url: str, tmp_path: Path) -> None:
    """cgroups driver: the host-wide cap is the pids controller on the driver's root, so a
    fork bomb spread over accounts stops there whatever the admission check saw."""
    import os
    import shutil
    import tempfile
    import uuid

    from tycoon.vmm.cgroupfs import find_mounts
    from tycoon.vmm.cgroups import CgroupsDriver

    if os.geteuid() != 0 or "pids" not in find_mounts().v1:
        pytest.skip("needs root and the cgroup v1 pids controller")
    driver = CgroupsDriver(root=f"tycoon-test-{uuid.uuid4().hex[:10]}", parent="self",
                           version="v1", state_dir=str(tmp_path))
    base = Path(tempfile.mkdtemp(prefix="tycoon-jobs-", dir="/tmp"))
    base.chmod(0o755)
    config = JobConfig(root=base / "jobs", uid_file=tmp_path / "uids.json",
                       uid_range=(61000, 61999), limits=Limits(grace_s=0.2), host_pids=8)
    try:
        async with job_market(nats_url, tmp_path, driver, config, idle_s=1.0) as market:
            pids = Path(driver.backend.paths("")["pids"])
            assert (pids / "pids.max").read_text().strip() == "8"
            alice, bob = await market.user(), await market.user()
            for user in (alice, bob):
                await user.fund_and_bid(10)
            bomb = ["/usr/bin/python3", "-c", "import os, time\nfor _ in range(20):\n"
                    " try:\n  if os.fork() == 0: break\n except OSError: break\ntime.sleep(30)"]
            await alice.jobs.exec(bomb)
            await until(lambda: market.jobhost.confine.host_pids([]) >= 8)
            await until(lambda: int((pids / "pids.current").read_text()) == 8)
            with pytest.raises(Rejected) as full:
                await bob.jobs.exec(["/bin/true"])
            assert full.value.code == "job_limit" and "processes" in full.value.message
    finally:
        driver.teardown()
        shutil.rmtree(base, ignore_errors=True)
