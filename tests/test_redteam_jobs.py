"""Red team: a hostile user's jobs against the host (docs/jobs.md, docs/security.md).

A job that daemonises (fork, setsid, fork) and lets its leader exit must still be frozen
when its account's share is zero and killed when the account is refunded; a job flooding
its stdout past the output cap must not fill the host's disk; an exec whose bundle takes
longer than its bid lasts must start its job frozen."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from jobs_kit import JobMarket, job_market, until
from test_agent_tasks_runner import FakeHost, bus, job_msg, settle
from test_bundles_jobs import bucket_for, js_url  # noqa: F401  (a JetStream server)
from test_jobs_cgroups import PY, Setup, setup  # noqa: F401  (the cgroups fixture)

from tycoon.agent.bag import EARLY, TaskRunner
from tycoon.agent.journal import Journal
from tycoon.agent.tasks import DONE, Bag, Seat
from tycoon.auctioneer import jobhost
from tycoon.auctioneer.jobclient import HELD, JobStream
from tycoon.auctioneer.jobhost import JobConfig
from tycoon.auctioneer.jobs import Limits
from tycoon.bundles import client
from tycoon.bus.keys import Identity, subject_id
from tycoon.cli.jobs import UNCONFINED_ENV, add_serve_arguments, job_config
from tycoon.errors import Rejected
from tycoon.messages.jobs import JobExit
from tycoon.vmm.cgroupfs import read_text
from tycoon.vmm.simulated import SimulatedDriver

DAEMON = (
    "import os\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        open('daemon.pid', 'w').write(str(os.getpid()))\n"
    "        while True: pass\n"
    "    os._exit(0)\n"
    "os.wait()\n"
)


@pytest.mark.cgroups
@pytest.mark.nats
@pytest.mark.hostile
@pytest.mark.timeout(90)
async def test_a_daemon_left_by_an_exited_job_is_frozen_unpaid_and_killed_at_refund(
        setup: Setup) -> None:  # noqa: F811
    user = await setup.market.user()
    await user.fund_and_bid(1, duration="1s")  # spent within a second: share zero
    _, stream, sub = await user.jobs.start([PY, "-c", DAEMON])
    events = [e async for e in stream.events(timeout=15)]
    await sub.unsubscribe()
    assert isinstance(events[-1], JobExit) and events[-1].status == 0  # the leader is gone
    pid_file = setup.root / user.key / "daemon.pid"
    pid = int(await until(lambda: pid_file.exists() and pid_file.read_text()))
    driver = setup.driver
    assert pid in driver.procs(user.key)  # still in the sandbox: cgroups hold it
    freezer = driver.backend.bases["freezer"] / driver.sandbox(user.key)  # type: ignore
    await until(lambda: read_text(freezer / "freezer.state") == "FROZEN", timeout=15)
    held = driver.cpu_seconds(user.key)
    await asyncio.sleep(0.3)
    assert driver.cpu_seconds(user.key) - held < 0.01  # unpaid: no CPU
    await user.host.refund()
    await until(lambda: not driver.procs(user.key), timeout=10)  # refunded: ended
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it does not)."""
    try:
        return "\tZ" not in Path(f"/proc/{pid}/status").read_text().split("State:")[1][:4]
    except (OSError, IndexError):
        return False


@pytest.fixture
async def market(nats_url: str, tmp_path: Path) -> AsyncIterator[JobMarket]:
    limits = Limits(output_total=16 * 1024, grace_s=0.5)
    config = JobConfig(root=tmp_path / "jobs", limits=limits)
    async with job_market(nats_url, tmp_path, SimulatedDriver(preset="small"), config) as m:
        yield m


@pytest.mark.nats
@pytest.mark.hostile
@pytest.mark.timeout(60)
async def test_output_past_the_cap_does_not_fill_the_hosts_disk(market: JobMarket) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    code = ("import os, sys, time\nblock = b'x' * (1 << 20)\n"
            "for _ in range(48): sys.stdout.buffer.write(block); sys.stdout.flush()\n"
            "open('written', 'w').close()\ntime.sleep(30)\n")
    reply, stream, sub = await user.jobs.start([sys.executable, "-c", code])
    home = Path(market.jobhost.config.root) / user.key
    await until(lambda: (home / "written").exists(), timeout=20)
    out = Path(market.jobhost.config.root) / ".host" / f"{reply['job']}.stdout"
    await asyncio.sleep(0.3)  # a few of the host's reads
    st = os.stat(out)
    assert st.st_size >= 48 << 20  # the job wrote it all …
    assert st.st_blocks * 512 < 4 << 20, st.st_blocks * 512  # … the host keeps none of it
    await user.jobs.signal(reply["job"], "KILL")
    assert isinstance([e async for e in stream.events(timeout=10)][-1], JobExit)
    await sub.unsubscribe()


@pytest.mark.nats
@pytest.mark.hostile
@pytest.mark.timeout(60)
async def test_a_share_lost_during_an_execs_bundle_fetch_starts_the_job_frozen(
        js_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """An exec passes its checks while its bid runs, then waits for its bundle (a big one
    takes as long as its owner likes) while the bid ends: the job must start frozen, not
    run unpaid until the next change of shares."""
    real = jobhost.bundles.fetch
    holder: list[JobMarket] = []

    async def slow_fetch(*args: object, **kwargs: object) -> bytes:
        data = await real(*args, **kwargs)  # type: ignore[arg-type]
        host = holder[0].jobhost
        await until(lambda: not any(s.cpu > 0 for s in host.market.shares_map().values()),
                    timeout=15)  # the time a 64 MiB bundle takes: the bid is over
        return data

    monkeypatch.setattr(jobhost.bundles, "fetch", slow_fetch)
    config = JobConfig(root=tmp_path / "jobs", limits=Limits(grace_s=0.5))
    async with job_market(js_url, tmp_path, SimulatedDriver(preset="small"), config) as m:
        holder.append(m)
        user = await m.user()
        await bucket_for(js_url, user)
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "spin.py").write_text("import time\nwhile True: time.sleep(0.01)\n")
        digest = await client.push(user.jobs.bus, tmp_path / "src")
        await user.fund_and_bid(10, duration="2s")
        assert m.jobhost._share(user.key) > 0
        reply, _, sub = await user.jobs.start([sys.executable, "spin.py"], bundle=digest)
        await sub.unsubscribe()
        await asyncio.sleep(0.5)  # ticks: nothing changes shares any more
        assert m.jobhost.table.jobs[reply["job"]].state == "frozen"
        assert user.key in m.jobhost.frozen


@pytest.mark.cgroups
@pytest.mark.nats
@pytest.mark.hostile
@pytest.mark.timeout(90)
async def test_a_planted_link_as_cwd_neither_escapes_nor_probes_the_host(
        setup: Setup) -> None:  # noqa: F811
    """A job plants links in its own directory to the host's closed state directory, to
    another account's directory and to paths that do not exist, then names them as the
    cwd of the next exec: nothing starts, and the refusal is the same whether the target
    exists or not (the host, root, must not tell a user what lies in closed places)."""
    victim, mallory = await setup.market.user(), await setup.market.user()
    await victim.fund_and_bid(10)
    await mallory.fund_and_bid(10)
    assert (await victim.jobs.run([PY, "-c", "open('secret', 'w').write('s')"]))[1].status == 0
    targets = {"state": setup.secrets / "state", "nostate": setup.secrets / "nothing",
               "victim": setup.root / victim.key, "novictim": setup.root / "nobody",
               "host": setup.root / ".host"}
    plant = "import os\n" + "".join(f"os.symlink({str(t)!r}, {n!r})\n"
                                    for n, t in targets.items())
    _, done = await mallory.jobs.run([PY, "-c", plant])
    assert done.status == 0
    answers = {}
    for name in targets:
        try:
            await mallory.jobs.start([PY, "-c", "print(1)"], cwd=name)
        except Rejected as error:
            answers[name] = (error.code, error.message.replace(name, "NAME"))
        else:
            raise AssertionError(f"a job started in {name}")
    assert len(set(answers.values())) == 1, answers
    assert len(setup.market.jobhost.table.running(mallory.key)) == 0


def _serve_args(tmp_path: Path, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(["--jobs", str(tmp_path / "jobs"), *argv])


@pytest.mark.skipif(os.geteuid() != 0, reason="the footgun needs root")
def test_root_never_runs_users_jobs_unconfined_by_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``auctioneer serve --jobs DIR`` as root with the default (simulated) driver would run
    every admitted user's argv as root: refused unless explicitly asked for."""
    monkeypatch.delenv(UNCONFINED_ENV, raising=False)
    with pytest.raises(Rejected) as refused:
        job_config(_serve_args(tmp_path), "simulated", tmp_path / "host.db")
    assert refused.value.code == "driver_failed" and "root" in refused.value.message
    config = job_config(_serve_args(tmp_path), "cgroups", tmp_path / "host.db")
    assert config is not None and config.uid_file is not None  # per-account uids
    monkeypatch.setenv(UNCONFINED_ENV, "1")  # tests and the demo, knowingly
    assert job_config(_serve_args(tmp_path), "simulated", tmp_path / "host.db") is not None


@pytest.mark.nats
@pytest.mark.hostile
@pytest.mark.timeout(60)
async def test_a_frozen_job_cannot_be_thawed_by_its_owners_sigcont(market: JobMarket) -> None:
    """Where freezing is SIGSTOP (the simulated driver; a host without a freezer), the
    owner's host.signal CONT would thaw an unpaid job."""
    user = await market.user()
    await user.fund_and_bid(1, duration="1s")  # spent within a second: share zero
    reply, _, sub = await user.jobs.start([sys.executable, "-c",
                                           "import time\nwhile True: time.sleep(0.01)\n"])
    await sub.unsubscribe()
    await until(lambda: user.key in market.jobhost.frozen, timeout=15)
    state = Path(f"/proc/{reply['pid']}/stat")
    await until(lambda: state.read_text().rsplit(")", 1)[1].split()[0] == "T")
    with contextlib.suppress(Rejected):
        await user.jobs.signal(reply["job"], "CONT")
    await asyncio.sleep(0.2)
    assert state.read_text().rsplit(")", 1)[1].split()[0] == "T"  # still stopped
    await user.jobs.signal(reply["job"], "KILL")


@pytest.mark.nats
@pytest.mark.hostile
@pytest.mark.timeout(60)
async def test_a_signal_to_a_stale_job_never_reaches_whoever_has_its_pid_now(
        market: JobMarket) -> None:
    """Between a job's end and the host noticing it (its shim's exit, a poll), its pid may
    be free; an attacker cycling pids (32,768 here) can have another account's new job
    leader take it, then signal its own stale job: root's killpg would hit the victim.
    Staged: the attacker's exited job is made to look running with the victim's pid."""
    victim, mallory = await market.user(), await market.user()
    await victim.fund_and_bid(10)
    await mallory.fund_and_bid(10)
    target, _, vsub = await victim.jobs.start([sys.executable, "-c",
                                               "import time\nwhile True: time.sleep(0.05)\n"])
    await vsub.unsubscribe()
    _, done = await mallory.jobs.run([sys.executable, "-c", "pass"])
    stale = market.jobhost.table.jobs[done.job]
    stale.state, stale.pid = "running", target["pid"]  # the window, held open
    with contextlib.suppress(Rejected):
        await mallory.jobs.signal(done.job, "KILL")
    await asyncio.sleep(0.2)
    assert _alive(target["pid"]), "root killed another account's job"
    stale.state = "exited"
    await victim.jobs.signal(target["job"], "KILL")


async def test_a_hostile_hosts_flood_evicts_no_other_hosts_early_output(
        tmp_path: Path) -> None:
    """A job's first chunks may reach the agent before the exec reply naming the job (they
    wait, bounded). Host B floods the agent's job subject with signed junk: host A's early
    chunk must survive, or A's job stream waits forever for its seq 1 (the task never ends,
    or is rerun and paid twice)."""
    a, b = Identity.generate(), Identity.generate()
    ha = subject_id(a.public_key)
    hosts = {ha: FakeHost()}
    bag = Bag.of([(1, "x")])
    run = TaskRunner(bus(), Journal(tmp_path / "j.db"), bag, ["echo", "{}"], tmp_path / "out",
                     client=lambda _b, h: hosts[h])  # type: ignore[arg-type,return-value]
    await run._on_job(job_msg(a, "j1", "job.output",  # before the exec reply
                              {"job": "j1", "seq": 1, "stream": "stdout", "data": b"real"}))
    for i in range(EARLY + 10):
        await run._on_job(job_msg(b, f"z{i}", "job.output",
                                  {"job": f"z{i}", "seq": 1, "stream": "stdout", "data": b"-"}))
    run.carry(bag.hold({ha: Seat(1, 1.0)}, 0.0) + bag.place(0.0))
    await settle()
    await run._on_job(job_msg(a, "j1", "job.exit", {"job": "j1", "seq": 2, "status": 0,
                                                    "cpu_s": 0.0, "peak_memory": 0,
                                                    "dropped": 0}))
    await settle()
    task = bag.tasks[1]
    assert task.state == DONE
    assert (tmp_path / "out" / str(task.index) / "stdout").read_bytes() == b"real"
    await run.stop()


async def test_a_hosts_out_of_order_flood_holds_bounded_memory_in_the_reader() -> None:
    """The host running a job sends chunk after chunk but never seq 1 (and a flood before
    its exec reply): the reader (an agent, tycoon-pub exec) must not hold them all."""
    host = Identity.generate()
    stream = JobStream(subject_id(host.public_key))
    for seq in range(2, 20_002):
        await stream.on_message(job_msg(host, "j1", "job.output", {
            "job": "j1", "seq": seq, "stream": "stdout", "data": b"x"}))
    assert len(stream._early) <= HELD
    await stream.named("j1")
    for seq in range(20_002, 40_002):
        await stream.on_message(job_msg(host, "j1", "job.output", {
            "job": "j1", "seq": seq, "stream": "stdout", "data": b"x"}))
    assert len(stream._held) <= HELD
