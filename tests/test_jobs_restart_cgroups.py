"""An auctioneer restart on the real kernel: the job, still in the account's cgroup as the
account's uid, is re-adopted by a new driver and host; a record naming a foreign pid (root's,
outside the sandbox) with its true start time and the account's uid adopts nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import test_jobs_cgroups
from jobs_kit import until
from test_jobs_cgroups import PY, Setup
from test_jobs_restart import fake_record, restart

from tycoon.messages.jobs import JobExit, JobOutput
from tycoon.vmm.cgroups import CgroupsDriver

pytestmark = [pytest.mark.cgroups, pytest.mark.nats, pytest.mark.timeout(90)]
setup = test_jobs_cgroups.setup  # the fixture: a one-host cgroups market running jobs


def _driver(old: CgroupsDriver, tmp: Path) -> CgroupsDriver:
    return CgroupsDriver(root=old.root, parent="self", version="v1", state_dir=str(tmp))


async def test_a_confined_job_is_re_adopted_and_still_ended_by_a_refund(
        setup: Setup, tmp_path: Path) -> None:
    market = setup.market
    user = await market.user()
    await user.fund_and_bid(10)
    code = "import time\nfor i in range(600):\n print(i, flush=True); time.sleep(0.05)\n"
    reply, stream, sub = await user.jobs.start([PY, "-c", code])
    events = stream.events(timeout=15).__aiter__()
    first = await events.__anext__()
    driver = _driver(setup.driver, tmp_path)
    await restart(market, tmp_path, driver=driver)
    assert reply["pid"] in driver.procs(user.key)
    listed = (await user.jobs.jobs())["jobs"]
    assert [(j["job"], j["state"], j.get("adopted")) for j in listed] == \
        [(reply["job"], "running", True)]
    second = await events.__anext__()
    assert isinstance(second, JobOutput) and second.seq == first.seq + 1
    await user.host.refund()  # SIGTERM, grace, SIGKILL through the new host
    rest = [second, *[e async for e in events]]
    await sub.unsubscribe()
    assert isinstance(rest[-1], JobExit) and rest[-1].status == -15  # SIGTERM, by its shim
    numbers = b"".join(e.data for e in [first, *rest] if isinstance(e, JobOutput)).split()
    assert numbers == [str(i).encode() for i in range(len(numbers))]  # nothing lost
    assert driver.procs(user.key) == []


async def test_a_foreign_pid_is_not_adopted_even_with_its_start_time_and_uid(
        setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    market = setup.market
    user = await market.user()
    await user.fund_and_bid(10)
    await user.jobs.run([PY, "-c", "pass"])
    uid = market.jobhost.uids.uid(user.key)  # type: ignore[union-attr]
    fake_record(market, user.key, "zz1", 1, uid)
    fake_record(market, user.key, "zz2", os.getpid(), uid)
    signalled: list[int] = []
    real = os.killpg
    monkeypatch.setattr(os, "killpg", lambda pid, sig: signalled.append(pid)
                        if pid in (1, os.getpid()) else real(pid, sig))
    await restart(market, tmp_path, driver=_driver(setup.driver, tmp_path))
    for fake in ("zz1", "zz2"):
        await until(lambda fake=fake: market.jobhost.table.jobs[fake].state == "exited")
    await user.host.refund()
    await until(lambda: not market.jobhost.table.running(user.key))
    assert signalled == []
    assert os.getpid() not in setup.driver.procs(user.key)
