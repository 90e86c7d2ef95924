"""Jobs over the bus with the simulated driver (real, UNCONFINED processes of this user)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from jobs_kit import JobMarket, job_market, until
from policy_kit import may_publish, may_subscribe

from tycoon.auctioneer.jobhost import JobConfig
from tycoon.auctioneer.jobs import Limits
from tycoon.bus import subjects
from tycoon.bus.keys import Identity, subject_id
from tycoon.errors import Rejected
from tycoon.messages.jobs import JobExit, JobOutput
from tycoon.natspolicy import Principal, permissions
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]
PY = sys.executable


@pytest.fixture
async def market(nats_url: str, tmp_path: Path) -> AsyncIterator[JobMarket]:
    limits = Limits(output_total=64 * 1024, output_rate=10**9, output_burst=10**9,
                    chunk=4096, grace_s=0.5)
    config = JobConfig(root=tmp_path / "jobs", limits=limits)
    async with job_market(nats_url, tmp_path, SimulatedDriver(preset="small"), config) as m:
        yield m


async def test_exec_streams_ordered_output_and_exit(market: JobMarket) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    code = ("import sys\nfor i in range(200):\n print(i, flush=True)\n"
            "sys.stderr.write('bye')\nsys.exit(7)\n")
    chunks, done = await user.jobs.run([PY, "-c", code], env={"JOB_X": "1"})
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    assert done.seq == len(chunks) + 1 and done.status == 7 and done.dropped == 0
    out = b"".join(c.data for c in chunks if c.stream == "stdout").decode()
    assert out.split() == [str(i) for i in range(200)]
    assert b"".join(c.data for c in chunks if c.stream == "stderr") == b"bye"
    assert done.cpu_s > 0 and done.peak_memory > 0


async def test_environment_is_the_allowed_one_and_the_cwd_is_the_sandbox(
        market: JobMarket) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    os.environ["TYCOON_SECRET_TEST"] = "leak"
    code = "import os; print(sorted(os.environ)); print(os.getcwd())"
    chunks, done = await user.jobs.run([PY, "-c", code], env={"LANG": "C"})
    text = b"".join(c.data for c in chunks).decode()
    assert done.status == 0
    assert "TYCOON_SECRET_TEST" not in text and "'LANG'" in text and "'TYCOON_JOB'" in text
    assert text.strip().splitlines()[-1] == str(market.jobhost.config.root / user.key)


async def test_output_over_the_total_cap_is_dropped_with_one_marker(market: JobMarket) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    chunks, done = await user.jobs.run([PY, "-c", "import sys; sys.stdout.write('x' * 200000)"])
    data = b"".join(c.data for c in chunks)
    assert len(data) == 64 * 1024 and set(data) == {ord("x")}
    markers = [c for c in chunks if c.dropped]
    assert len(markers) == 1 and markers[0].data == b""
    assert done.dropped == 200000 - 64 * 1024


async def test_only_the_signer_runs_in_its_account(market: JobMarket) -> None:
    owner, other = await market.user(), await market.user()
    await owner.fund_and_bid(10)
    with pytest.raises(Rejected) as forbidden:  # another key naming the owner's account
        await other.jobs.auctioneer._call("exec", {"argv": ["true"], "account": owner.key})
    assert forbidden.value.code == "forbidden"
    with pytest.raises(Rejected) as unfunded:  # its own account is not open here
        await other.jobs.run(["true"])
    assert unfunded.value.code == "unknown_account"
    reply, stream, sub = await owner.jobs.start([PY, "-c", "import time; time.sleep(30)"])
    for call in (other.jobs.signal(reply["job"], "KILL"),):
        with pytest.raises(Rejected) as caught:
            await call
        assert caught.value.code == "forbidden"
    assert (await other.jobs.jobs())["jobs"] == []
    listed = await owner.jobs.jobs()
    assert [j["job"] for j in listed["jobs"]] == [reply["job"]]
    await owner.jobs.signal(reply["job"], "TERM")
    events = [e async for e in stream.events(timeout=10)]
    assert isinstance(events[-1], JobExit) and events[-1].status == -15
    await sub.unsubscribe()


async def test_bad_argv_starts_nothing(market: JobMarket) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    for argv, words in (([PY, "a\x00b"], "NUL"), (["x" * 40000, "y" * 40000], "bytes"),
                        (["x"] * 300, "256"), (["/no/such/program"], "no such program")):
        with pytest.raises(Rejected) as caught:
            await user.jobs.run(argv)
        assert caught.value.code == "malformed" and words in caught.value.message
    assert market.jobhost.table.jobs == {}


async def test_a_forged_chunk_from_another_host_is_ignored(market: JobMarket) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    reply, stream, sub = await user.jobs.start([PY, "-c", "import time; time.sleep(0.5)"])
    from tycoon.bus.connection import open_bus

    liar = await open_bus(market.url, Identity.generate())  # no permissions on this server
    market.buses.append(liar)
    subject = subjects.job(subject_id(user.key), reply["job"], "out")
    await liar.publish(subject, "job.output",
                       JobOutput(reply["job"], 1, "stdout", b"forged").to_body())
    events = [e async for e in stream.events(timeout=10)]
    assert all(getattr(e, "data", b"") != b"forged" for e in events)
    assert isinstance(events[-1], JobExit) and events[-1].status == 0
    await sub.unsubscribe()


async def test_expiry_freezes_and_funding_thaws_then_refund_ends(market: JobMarket) -> None:
    user = await market.user()
    await user.fund_and_bid(1, duration="1s")
    reply, stream, sub = await user.jobs.start([PY, "-c", "import time; time.sleep(60)"])
    jobhost = market.jobhost
    await until(lambda: user.key in jobhost.frozen, timeout=15)
    state = Path(f"/proc/{reply['pid']}/stat").read_text().split(") ")[1][0]
    assert state == "T"  # SIGSTOPped: the simulated driver's freezer
    assert (await user.jobs.jobs())["frozen"] is True
    await user.fund_and_bid(1)
    await until(lambda: user.key not in jobhost.frozen, timeout=10)
    await user.host.refund()
    events = [e async for e in stream.events(timeout=15)]
    assert isinstance(events[-1], JobExit) and events[-1].status == -15
    await sub.unsubscribe()


def test_job_subjects_are_readable_by_their_account_only() -> None:
    a, b = Identity.generate().public_key, Identity.generate().public_key
    host = Identity.generate().public_key
    own = subjects.job(subject_id(a), "abc1", "out")
    for role in ("user", "agent", "broker"):
        assert may_subscribe(permissions(Principal(a, role)), subjects.job_all(subject_id(a)))
        assert not may_subscribe(permissions(Principal(b, role)), own)
        assert not may_subscribe(permissions(Principal(b, role)), subjects.JOBS_ALL)
        assert not may_publish(permissions(Principal(a, role)), own)  # no forged output
    assert may_publish(permissions(Principal(host, "host")), own)
    assert not may_subscribe(permissions(Principal(host, "viewer")), own)


async def test_stop_leaves_jobs_running_and_end_all_ends_them(market: JobMarket) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    reply, _, sub = await user.jobs.start([PY, "-c", "import time; time.sleep(60)"])
    await sub.unsubscribe()
    await market.jobhost.stop()  # a restart re-adopts it: tests/test_jobs_restart.py
    assert Path(f"/proc/{reply['pid']}").exists()
    await market.jobhost.end_all()
    await asyncio.sleep(0.1)
    stat = Path(f"/proc/{reply['pid']}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1][0] == "Z"


async def test_a_job_started_after_funding_runs_even_if_the_last_one_ended_frozen(
        market: JobMarket) -> None:
    user = await market.user()
    await user.fund_and_bid(1, duration="1s")
    reply, stream, sub = await user.jobs.start([PY, "-c", "import time; time.sleep(60)"])
    await until(lambda: user.key in market.jobhost.frozen, timeout=15)
    await user.jobs.signal(reply["job"], "KILL")  # it ends while frozen
    events = [e async for e in stream.events(timeout=10)]
    assert isinstance(events[-1], JobExit) and events[-1].status == -9
    await sub.unsubscribe()
    await user.fund_and_bid(1)
    chunks, done = await user.jobs.run([PY, "-c", "print('ran')"])
    assert done.status == 0 and b"".join(c.data for c in chunks) == b"ran\n"
    assert user.key not in market.jobhost.frozen
