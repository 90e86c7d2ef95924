"""The job's shim without a server (tycoon/vmm/jobshim.py through vmm.jobs.spawn): real,
unconfined processes of this user. It reports the program's exit status and rusage in its
exit file, a signal as its negative number; signals to the job's group never reach it; a
missing program is refused at once, or (started frozen) ends 127 saying why on stderr."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tycoon.errors import Rejected
from tycoon.vmm import jobs as runner
from tycoon.vmm.confine import Confinement

PY = sys.executable


async def start(tmp: Path, argv: list[str], frozen: bool = False) -> runner.Started:
    fds = {s: os.open(tmp / s, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
           for s in ("stdout", "stderr")}
    try:
        return await runner.spawn(argv, env=runner.base_env("acct", "j1", tmp, {}), cwd=tmp,
                                  uid=None, stdout=fds["stdout"], stderr=fds["stderr"],
                                  exit_file=tmp / "j1.exit", frozen=lambda: frozen)
    finally:
        for fd in fds.values():
            os.close(fd)


def ended(started: runner.Started, tmp: Path) -> dict:
    started.process.wait(timeout=10)
    return json.loads((tmp / "j1.exit").read_text())


async def test_the_exit_file_has_the_status_and_rusage(tmp_path: Path) -> None:
    started = await start(tmp_path, [PY, "-c", "import sys; x = bytearray(8 << 20); "
                                     "print('hi'); sys.exit(7)"])
    assert started.pid != started.shim_pid and os.getpgid(started.pid) == started.pid
    data = ended(started, tmp_path)
    assert data["status"] == 7 and data["cpu_s"] > 0 and data["peak_memory"] > 8 << 20
    assert (tmp_path / "stdout").read_text() == "hi\n"
    assert oct((tmp_path / "j1.exit").stat().st_mode & 0o777) == "0o600"


async def test_a_signal_to_the_jobs_group_ends_the_program_not_the_shim(tmp_path: Path) -> None:
    started = await start(tmp_path, [PY, "-c", "import time; time.sleep(30)"])
    os.killpg(started.pid, signal.SIGKILL)  # as host.signal sends it
    assert ended(started, tmp_path)["status"] == -9
    assert started.process.returncode == 0  # the shim itself ended normally


async def test_a_missing_program_is_refused_and_nothing_keeps_running(tmp_path: Path) -> None:
    with pytest.raises(Rejected) as refused:
        await start(tmp_path, ["/no/such/program"])
    assert refused.value.code == "malformed"


async def test_started_frozen_a_missing_program_ends_127_and_says_why(tmp_path: Path) -> None:
    """Frozen, the start answers once forked; if the failed exec is already known by then
    (nothing froze it here: no cgroup) it is still refused at once."""
    try:
        started = await start(tmp_path, ["/no/such/program"], frozen=True)
    except Rejected as refused:
        assert refused.code == "malformed"
        return
    assert ended(started, tmp_path)["status"] == 127
    assert "cannot start /no/such/program (exec)" in (tmp_path / "stderr").read_text()


async def test_what_a_shim_costs(tmp_path: Path) -> None:
    """Measured (print with -s): a shim's memory while its job runs, and a start's time."""
    began = time.perf_counter()
    started = await start(tmp_path, [PY, "-c", "import time; time.sleep(30)"])
    took = time.perf_counter() - began
    time.sleep(0.1)
    fields = {line.split(":")[0]: int(line.split()[1]) for line in
              Path(f"/proc/{started.shim_pid}/smaps_rollup").read_text().splitlines()[1:]}
    print(f"shim: Rss {fields['Rss']} kB, Pss {fields['Pss']} kB, Private_Dirty "
          f"{fields['Private_Dirty']} kB; spawn {took * 1000:.0f} ms")
    os.killpg(started.pid, signal.SIGKILL)
    ended(started, tmp_path)
    assert fields["Private_Dirty"] < 8 * 1024  # a few MB of its own per job


def test_freezing_a_job_not_started_yet_never_stops_the_host(tmp_path: Path) -> None:
    """While a start is awaited the job's pid is 0: killpg(0, SIGSTOP) would stop the
    auctioneer's own process group (this test's, here)."""
    Confinement(None).freeze("acct", True, [0, 1])
    assert "T" not in Path("/proc/self/stat").read_text().split(") ")[1][:1]
