"""A bag of tasks end to end: a real nats-server, bank, SLS and two simulated auctioneers
that run jobs (real, unconfined processes); the agent is interrupted midway and resumed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from polling import until

from tycoon.agent.agent import Agent, AgentConfig
from tycoon.agent.bag import TaskRunner
from tycoon.agent.journal import Journal
from tycoon.agent.tasks import Bag
from tycoon.auctioneer.jobhost import JobConfig
from tycoon.auctioneer.jobs import Limits
from tycoon.auctioneer.launch import start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bundles import client as bundles
from tycoon.bus.keys import Identity, KeyStore, subject_id
from tycoon.cli.agent import make_agent, push_bundle
from tycoon.money import MICRO
from tycoon.natsserver import NatsServer
from tycoon.testing.localmarket import start_market
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(90)]

TASKS = 6
CODE = ("import os, sys, time\n"
        "n = int(sys.argv[1])\n"
        "while n > 3 and os.path.exists(sys.argv[2]):\n"
        "    time.sleep(0.02)\n"
        "print('task', n, 'of', os.environ['JOB_TASK'])\n"
        "sys.stderr.write('e%d' % n)\n"
        "sys.exit(n % 2)\n")


def agent_for(bus, market, journal: Path, out: Path, tasks: list[str], prefix: str) -> Agent:
    config = AgentConfig(budget=20 * MICRO, deadline_s=60.0, replan_every_s=5,
                         refund_margin_s=1.0, grace_s=10.0)
    agent = make_agent(bus, market.bank_key, config, journal, prefix)
    bag = Bag.of((i, str(i)) for i in range(1, TASKS + 1))
    agent.tasks = TaskRunner(bus, agent.journal, bag, tasks, out)
    agent.core.bag = bag
    agent.tasks.resume()
    return agent


def host_jobs(hosts) -> dict[str, int]:
    """How many jobs each task's argument had, over both hosts."""
    counts: dict[str, int] = {}
    for running in hosts:
        for job in running.service.jobs.table.jobs.values():
            counts[job.argv[3]] = counts.get(job.argv[3], 0) + 1
    return counts


async def test_six_tasks_on_two_hosts_outputs_collected_and_a_restart_reruns_none(
        nats_url: str, tmp_path: Path) -> None:
    market = await start_market(nats_url, tmp_path, hosts=0, tick_s=0.2, heartbeat_s=0.5)
    hosts = []
    try:
        for i in range(2):
            hosts.append(await start_auctioneer(
                nats_url, Identity.generate(), bank_key=market.bank_key,
                driver=SimulatedDriver(preset="small", cores=2), store_path=tmp_path / f"h{i}.db",
                name=f"h{i}", tick_s=0.2, heartbeat_s=0.5,
                jobs=JobConfig(root=tmp_path / f"jobs{i}", limits=Limits(grace_s=0.5))))
            await BankClient(hosts[-1].bus, market.bank_key).open(exist_ok=True)
        await until(lambda: len(market.sls.registry.live_hosts(time.time_ns())) >= 2,
                    timeout=10, every=0.1, what="2 live hosts")
        home = tmp_path / "home"
        user = await market.fund_user(100 * MICRO, KeyStore(home).create("user"))
        me = subject_id(user.identity.public_key)
        out, hold, state = tmp_path / "out", tmp_path / "hold", home / "agents"
        journal = state / me / "bag.db"
        command = [sys.executable, "-c", CODE, "{}", str(hold)]
        hold.write_text("")
        first = agent_for(user, market, journal, out, command, f"{me}.bag")
        began = time.perf_counter()
        run = asyncio.create_task(first.run())
        await until(lambda: any(t.state == "running" for t in first.tasks.bag.tasks.values()),
                    timeout=15, every=0.02, what="a task running")
        first_running = time.perf_counter() - began
        await until(lambda: all((out / str(i) / "exit.json").exists() for i in (1, 2, 3)),
                    timeout=15, every=0.05, what="tasks 1-3 done")
        used = {t.host for t in first.tasks.bag.tasks.values() if t.host}
        run.cancel()  # interrupted (as Ctrl-C): the running tasks are killed, money home
        await asyncio.gather(run, return_exceptions=True)
        assert len(used) == 2, "the tasks ran on both hosts"
        before = host_jobs(hosts)
        assert all(before.get(str(i)) == 1 for i in (1, 2, 3)), before

        hold.unlink()  # tasks 4-6 now end at once
        (tmp_path / "tasks.txt").write_text("".join(f"{i}\n" for i in range(1, TASKS + 1)))
        restarted = time.perf_counter()
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tycoon.cli.main", "--nats", nats_url, "--home", str(home),
            "--as", "user", "agent", "run", "--budget", "20", "--deadline", "1m",
            "--bank", market.bank_key, "--state", str(state), "--job", "bag", "--json",
            "--out", str(out), "--tasks", str(tmp_path / "tasks.txt"), "--", *command,
            env={**os.environ, "TYCOON_LOG": "error"}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            stdout, stderr = await asyncio.wait_for(cli.communicate(), 40)
        except TimeoutError:
            cli.kill()
            stdout, stderr = await cli.communicate()
            raise AssertionError(f"agent run did not end: {stdout!r} {stderr[-2000:]!r}") from None
        assert cli.returncode in (0, 1), stderr[-2000:]
        resumed = time.perf_counter() - restarted
        text = stdout.decode()
        assert "3 done before" in text, text
        summary = json.loads(text[text.index("\n{") + 1:])
        assert cli.returncode == 1, text  # three tasks exit 1: the job says so
        after = host_jobs(hosts)
        for i in range(1, TASKS + 1):
            record = json.loads((out / str(i) / "exit.json").read_text())
            assert record["status"] == i % 2 and record["task"] == i
            assert (out / str(i) / "stdout").read_text() == f"task {i} of {i}\n"
            assert (out / str(i) / "stderr").read_text() == f"e{i}"
        assert all(after[str(i)] == 1 for i in (1, 2, 3)), after  # finished: never rerun
        assert summary["tasks"] == {"done": 6, "failed": 3, "running": 0, "queued": 0,
                                    "eta_s": 0.0}
        assert not summary["outstanding"] and summary["refunded"] > 0  # the rest came home
        assert Journal(journal).tasks()[5].state == "done"
        print(f"\nbag of {TASKS} on 2 hosts: first task running {first_running:.2f} s after "
              f"start; resumed (CLI process) and done {resumed:.2f} s after restart; jobs per "
              f"task {dict(sorted(after.items()))}; spent {summary['spent']} µcr, refunded "
              f"{summary['refunded']}")
    finally:
        for running in hosts:
            await running.stop()
        await market.close()


@pytest.fixture
async def js_url() -> AsyncIterator[str]:
    async with NatsServer(jetstream=True) as server:
        yield server.url


async def test_a_bundle_is_pushed_once_and_each_tasks_result_comes_back(
        js_url: str, tmp_path: Path) -> None:
    market = await start_market(js_url, tmp_path, hosts=0, tick_s=0.2, heartbeat_s=0.5)
    host = None
    try:
        host = await start_auctioneer(
            js_url, Identity.generate(), bank_key=market.bank_key,
            driver=SimulatedDriver(preset="small", cores=4), store_path=tmp_path / "h.db",
            name="h", tick_s=0.2, heartbeat_s=0.5,
            jobs=JobConfig(root=tmp_path / "jobs", limits=Limits(grace_s=0.5)))
        await BankClient(host.bus, market.bank_key).open(exist_ok=True)
        await until(lambda: len(market.sls.registry.live_hosts(time.time_ns())) >= 1,
                    timeout=10, every=0.1, what="a live host")
        user = await market.fund_user(100 * MICRO)
        nc = await nats.connect(js_url)  # the bucket is made as the bank or operator would
        try:
            await bundles.ensure_bucket(nc, subject_id(user.identity.public_key))
        finally:
            await nc.close()
        code = tmp_path / "code"
        (code / "data").mkdir(parents=True)
        (code / "data" / "in.txt").write_text("forty-two")
        (code / "job.py").write_text(
            "import sys\nn = sys.argv[1]\n"
            "open(f'out-{n}.txt', 'w').write(open('data/in.txt').read().upper() + n)\n")
        digest = await push_bundle(user, str(code))
        config = AgentConfig(budget=20 * MICRO, deadline_s=60.0, replan_every_s=5,
                             refund_margin_s=1.0, grace_s=10.0)
        agent = make_agent(user, market.bank_key, config, tmp_path / "a.db", "x.bundle")
        bag = Bag.of((i, str(i)) for i in range(1, 4))
        agent.tasks = TaskRunner(user, agent.journal, bag, [sys.executable, "job.py", "{}"],
                                 tmp_path / "out", bundle=digest, collect=["out-{}.txt"])
        agent.core.bag = bag
        agent.tasks.resume()
        summary = await asyncio.wait_for(agent.run(), 30)
        assert summary.tasks is not None and summary.tasks["done"] == 3
        for i in range(1, 4):
            result = tmp_path / "out" / str(i) / "result" / f"out-{i}.txt"
            assert result.read_text() == f"FORTY-TWO{i}"  # its own copy, its own result
            assert json.loads((tmp_path / "out" / str(i) / "exit.json").read_text())["result"]
    finally:
        if host is not None:
            await host.stop()
        await market.close()
