"""The job's shim on the real kernel (tycoon/vmm/jobshim.py): root, in the account's cgroup,
out of the job's reach; it reports how the program ended, a signal included; a job started
while its account is frozen neither blocks the host nor runs before it is funded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import test_jobs_cgroups
from jobs_kit import until
from test_jobs_cgroups import PY, Setup

from tycoon.messages.jobs import JobExit, JobOutput
from tycoon.vmm.cgroupfs import read_text

pytestmark = [pytest.mark.cgroups, pytest.mark.nats, pytest.mark.timeout(90)]
setup = test_jobs_cgroups.setup  # the fixture: a one-host cgroups market running jobs


def _text(events: list, stream: str = "stdout") -> str:
    return b"".join(e.data for e in events if isinstance(e, JobOutput) and e.stream == stream
                    ).decode()


async def test_the_jobs_uid_cannot_kill_trace_or_forge_its_shim(setup: Setup) -> None:
    user = await setup.market.user()
    await user.fund_and_bid(10)
    host = setup.root / ".host"
    code = (
        "import ctypes, os, signal\n"
        "shim = os.getppid()\n"
        "print('SHIM', shim, [l.split()[1] for l in open(f'/proc/{shim}/status')"
        " if l.startswith('Uid:')][0])\n"
        "def attempt(what, act):\n"
        "    try:\n        act(); print('DID', what)\n"
        "    except (PermissionError, ProcessLookupError): print('REFUSED', what)\n"
        "attempt('kill', lambda: os.kill(shim, signal.SIGKILL))\n"
        "attempt('stop', lambda: os.kill(shim, signal.SIGSTOP))\n"
        "attempt('mem', lambda: open(f'/proc/{shim}/mem', 'rb'))\n"
        "attempt('environ', lambda: open(f'/proc/{shim}/environ', 'rb').read())\n"
        "attempt('oom', lambda: open(f'/proc/{shim}/oom_score_adj', 'w').write('1000'))\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def trace():\n"
        "    if libc.ptrace(16, shim, 0, 0) != 0: raise PermissionError(ctypes.get_errno())\n"
        "attempt('ptrace', trace)\n"
        f"attempt('forge', lambda: open('{host}/' + os.environ['TYCOON_JOB'] + '.exit', 'w')"
        ".write('{\"status\": 0}'))\n"
        "import sys; sys.stdout.flush(); os._exit(3)\n"
    )
    reply, stream, sub = await user.jobs.start([PY, "-c", code])
    events = [e async for e in stream.events(timeout=15)]
    await sub.unsubscribe()
    out, done = _text(events), events[-1]  # type: ignore[arg-type]
    assert isinstance(done, JobExit) and done.status == 3, (out, _text(events, "stderr"))
    assert "DID" not in out and out.count("REFUSED") == 7, out
    shim, uid = out.split()[1:3]
    assert uid == "0" and int(shim) != reply["pid"]  # root, and not the program signalled
    assert setup.market.jobhost.table.jobs[reply["job"]].shim_pid == int(shim)
    assert not (host / f"{reply['job']}.exit").exists()  # read, then removed with the job


async def test_a_job_ended_by_a_signal_reports_the_signal(setup: Setup) -> None:
    user = await setup.market.user()
    await user.fund_and_bid(10)
    _, done = await user.jobs.run([PY, "-c", "import os, signal; os.kill(os.getpid(), "
                                   "signal.SIGABRT)"])
    assert done.status == -6 and done.cpu_s > 0.0


async def test_a_job_started_frozen_waits_unblocked_and_a_bad_program_ends_127(
        setup: Setup) -> None:
    """Exec into a frozen account: the host answers at once (its loop never waits for a
    frozen exec), the program runs nothing until funded; a missing program then ends with
    status 127 (why: on its stderr, tests/test_jobs_shim.py)."""
    user = await setup.market.user()
    await user.fund_and_bid(1, duration="1s")
    driver, jobhost = setup.driver, setup.market.jobhost
    first = await user.jobs.exec([PY, "-c", "import time; time.sleep(60)"])
    freezer = driver.backend.bases["freezer"] / driver.sandbox(user.key)  # type: ignore
    await until(lambda: read_text(freezer / "freezer.state") == "FROZEN", timeout=15)
    began = time.monotonic()
    reply, stream, sub = await user.jobs.start([PY, "-c", "print('ran')"])
    missing = await user.jobs.exec(["/no/such/program"])  # the same subscription's
    assert time.monotonic() - began < 5.0
    assert reply["state"] == missing["state"] == "frozen"
    await asyncio.sleep(0.3)
    assert not Path(jobhost.state.path / f"{reply['job']}.exit").exists()  # nothing ran
    await user.fund_and_bid(10)
    events = [e async for e in stream.events(timeout=15)]
    assert _text(events) == "ran\n" and events[-1].status == 0  # type: ignore[union-attr]
    table = jobhost.table.jobs
    await until(lambda: table[missing["job"]].state == "exited", timeout=10)
    assert table[missing["job"]].status == 127
    await user.jobs.signal(first["job"], "KILL")
    await until(lambda: table[first["job"]].state == "exited", timeout=10)
    assert table[first["job"]].status == -9
    await sub.unsubscribe()
