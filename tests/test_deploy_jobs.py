"""Agent jobs have names: a second job by the same key is a new job (its own budget, its
own transfer ids), a finished job is reported as such and never silently reattached."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tycoon.agent.journal import choose_job, finished_job, mark_finished
from tycoon.bus.keys import KeyStore, subject_id
from tycoon.cli.main import main
from tycoon.money import MICRO


def test_choose_job(tmp_path: Path) -> None:
    fresh = choose_job(tmp_path, "a" * 16, None, time.time())
    assert not fresh.resumed and fresh.prefix == f"{'a' * 16}.{fresh.job}"
    fresh.path.parent.mkdir(parents=True)
    fresh.path.touch()
    again = choose_job(tmp_path, "a" * 16, None, time.time())
    assert again.job == fresh.job and again.resumed  # interrupted: resumed, and said so
    assert mark_finished(fresh.path, {"spent": 5, "plans": 1})
    assert finished_job(fresh.path) == {"spent": 5, "plans": 1}
    third = choose_job(tmp_path, "a" * 16, None, time.time())
    assert third.job != fresh.job and not third.resumed  # a finished job: a fresh one
    assert choose_job(tmp_path, "a" * 16, fresh.job, time.time()).path == fresh.path
    with pytest.raises(ValueError):
        choose_job(tmp_path, "a" * 16, "../x", time.time())


def test_a_finished_job_is_refused_by_name(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    me = subject_id(KeyStore(home).create("agent").public_key)
    journal = tmp_path / "agents" / me / "nightly.db"
    mark_finished(journal, {"spent": 39_570_000, "plans": 0})
    code = main(["--home", str(home), "--as", "agent", "--nats", "nats://127.0.0.1:1",
                 "agent", "run", "--budget", "5", "--deadline", "1m", "--job", "nightly",
                 "--state", str(tmp_path / "agents"), "--bank", "bank"])
    out = capsys.readouterr().out
    assert code == 0 and "job 'nightly' is finished: spent 39.57 credits in 0 plans" in out


@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_second_job_of_one_key_has_its_own_ids(nats_url: str, tmp_path: Path) -> None:
    """A second job reattached to the finished first one ('done: spent 39.57 credits in 0
    plans'), or with a new --state collided with its transfer ids ('conflict')."""
    from faults_kit import Proc
    from test_agent_finish import _market

    market = await _market(nats_url, tmp_path)
    try:
        home = tmp_path / "home"
        ident = KeyStore(home).create("agent")
        await market.fund_user(20 * MICRO, ident)
        summaries = []
        for state, budget in (("s1", "5"), ("s2", "4")):
            agent = Proc("agent", nats_url, home, "--as", "agent", "agent", "run", "--json",
                         "--budget", budget, "--deadline", "4s", "--replan", "1", "--grace",
                         "5s", "--state", str(tmp_path / state), "--bank", market.bank_key)
            await agent.start(ready=False)
            assert agent.proc is not None
            assert await asyncio.wait_for(agent.proc.wait(), 90) == 0
            summaries.append(json.loads(agent.text(agent.offset).strip().splitlines()[-1]))
        first, second = summaries
        assert first["job"] != second["job"]
        assert second["plans"] > 0  # a real second job, not the first one reattached
        ids = [str(e.op_id) for e in market.ledger.store.events()
               if e.kind == "transfer" and e.payer == ident.public_key]
        assert ids and len(ids) == len(set(ids))
        assert {i.split(".")[1] for i in ids} == {first["job"], second["job"]}
    finally:
        await market.close()


def test_a_job_with_a_pending_move_is_not_finished(tmp_path: Path) -> None:
    """A move an outage left pending (paid, not redeemed) must be settled by a rerun."""
    from tycoon.agent.journal import Journal

    path = tmp_path / "job.db"
    journal = Journal(path)
    journal.begin("a.job.1.h.fund", 1, "h", "UP", "fund", 5)
    journal.close()
    assert not mark_finished(path, {"spent": 5})
    assert finished_job(path) is None
