"""The README is executed: its tour's fenced ``sh`` blocks, word for word, against a real
``tycoon up``, run as a reader would (in one directory, a second terminal beside ``up``).

The runner follows the README's own words: ``. .venv/bin/activate`` puts the console
scripts on PATH (this interpreter's bin directory), ``tycoon up`` runs in the background
until it prints ``market ready at nats://127.0.0.1:PORT``, ``export`` lines set the
environment of the lines after them, and ``PORT`` is replaced by the port ``up`` printed.
The two interactive commands (``top``, ``agent run``) run a few seconds and are stopped
with Ctrl-C (SIGINT), as the README says; an agent given a bag of tasks (``--tasks``) runs
until its bag is done. Every other line must exit 0, and no line may print a traceback, a
refusal by the server or an ``error:``. The "Run your work" section runs the same way on a
``tycoon up --driver cgroups`` market where the kernel has cgroups (root, v1 controllers).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from polling import until_blocking

pytestmark = [pytest.mark.nats, pytest.mark.slow]

README = Path(__file__).resolve().parents[1] / "README.md"
TOUR = "## A five-minute tour"
WORK = "## Run your work"
INTERACTIVE = (("top",), ("agent", "run"))
"""Commands that run until stopped: run for a while, then Ctrl-C."""
BAD = ("Traceback", "Violation", "violation", "error:")


class TourError(AssertionError):
    """A line of the README did not do what the README says."""


def _has_socket(pid: int) -> bool:
    """Whether the process has a socket open (Linux /proc): it is past its imports."""
    try:
        return any(os.readlink(fd).startswith("socket:")
                   for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # it exited, or an fd closed while we looked
        return False


def tour_lines(text: str, title: str = TOUR) -> list[str]:
    """The command lines of a section's ``sh`` blocks, in order (comment lines dropped)."""
    if title not in text:
        raise TourError(f"README has no {title!r} section")
    section = text.split(title, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M)
    lines = [ln.strip() for block in blocks for ln in block.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def words(line: str) -> list[str]:
    return shlex.split(line, comments=True)


@dataclass
class Tour:
    """A reader's shell: a working directory, an environment, the market ``up`` started."""

    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    up: subprocess.Popen[str] | None = None
    up_output: list[str] = field(default_factory=list)
    port: str = ""
    ran: list[str] = field(default_factory=list)

    def run(self, line: str) -> None:
        argv = words(line)
        if argv[:2] == [".", ".venv/bin/activate"]:
            bin_dir = str(Path(sys.executable).parent)
            self.env["PATH"] = bin_dir + os.pathsep + self.env.get("PATH", "")
        elif argv[0] == "export":
            for assignment in argv[1:]:
                name, _, value = assignment.partition("=")
                self.env[name] = value.replace("$PWD", str(self.cwd))
        elif argv[:2] == ["tycoon", "up"]:
            self.start_market(line)
        elif any(_has(argv, w) for w in INTERACTIVE) and "--tasks" not in argv:
            self.interactive(line)
        else:  # a bag of tasks ends when it is done
            result = subprocess.run(["bash", "-c", self.substitute(line)], cwd=self.cwd,
                                    env=self.env, capture_output=True, text=True,
                                    timeout=240 if "--tasks" in argv else 45)
            self.check(line, result.returncode, result.stdout, result.stderr)
        self.ran.append(line)

    def substitute(self, line: str) -> str:
        if re.search(r"\bPORT\b", line):
            if not self.port:
                raise TourError(f"{line!r} needs the PORT that tycoon up prints; none yet")
            line = re.sub(r"\bPORT\b", self.port, line)
        return line

    def check(self, line: str, code: int, out: str, err: str, ok: tuple[int, ...] = (0,)) -> None:
        bad = [b for b in BAD if b in out or b in err]
        if code not in ok or bad:
            raise TourError(f"README line {line!r} exited {code} {bad or ''}\n"
                            f"stdout: {out[-2000:]}\nstderr: {err[-2000:]}")

    def start_market(self, line: str) -> None:
        if self.up is not None:
            raise TourError("the tour starts tycoon up twice")
        self.up = subprocess.Popen(["bash", "-c", f"exec {self.substitute(line)}"],
                                   cwd=self.cwd, env=self.env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        ready = threading.Event()

        def read() -> None:
            assert self.up is not None and self.up.stdout is not None
            for text in self.up.stdout:
                self.up_output.append(text)
                found = re.search(r"market ready at nats://127\.0\.0\.1:(\d+)", text)
                if found:
                    self.port = found.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(90) or not self.port:
            raise TourError("tycoon up did not print 'market ready at …':\n"
                            + "".join(self.up_output[-30:]))

    def interactive(self, line: str, seconds: float = 4.0) -> None:
        proc = subprocess.Popen(["bash", "-c", f"exec {self.substitute(line)}"], cwd=self.cwd,
                                env=self.env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        # the seconds count from its first connection: on a loaded machine the imports alone
        # can take longer, and a Ctrl-C while importing is a traceback, not the README's pause
        until_blocking(lambda: proc.poll() is not None or _has_socket(proc.pid), timeout=60,
                       every=0.1, what=f"{line!r} connected")
        try:
            out, err = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # Ctrl-C, as the README says
            out, err = proc.communicate(timeout=30)
        self.check(line, proc.returncode, out, err, ok=(0, 130))
        if not out.strip():
            raise TourError(f"README line {line!r} printed nothing")

    def stop(self) -> str:
        if self.up is None:
            return ""
        if self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)
            try:
                self.up.wait(60)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait()
        return "".join(self.up_output)


def _has(argv: list[str], seq: tuple[str, ...]) -> bool:
    return any(tuple(argv[i:i + len(seq)]) == seq for i in range(len(argv)))


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tour]:
    """The reader's directory with the README's market running in it."""
    cwd = tmp_path_factory.mktemp("reader")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYCOON_")}
    env["TYCOON_LOG"] = "warning"  # stricter than a reader's default: a refused publish shows
    t = Tour(cwd, env)
    lines = tour_lines(README.read_text())
    try:
        for line in lines[:next(i for i, ln in enumerate(lines) if ln.startswith("tycoon up"))
                          + 1]:
            t.run(line)
        yield t
    finally:
        output = t.stop()
        if t.up is not None:
            assert t.up.returncode == 0, output[-3000:]
            assert "bank audit passes" in output, output[-3000:]
        lock = cwd / ".tycoon" / "up.lock"
        assert not lock.exists() or not lock.read_text(), "the state lock outlived tycoon up"


@pytest.mark.xdist_group("readme_tour")  # one worker, one market for both tour tests
def test_a_broken_readme_fails_the_runner(tour: Tour) -> None:
    """A misspelled command, or a PORT before any market, stops the tour at that line."""
    text = README.read_text().replace("tycoon --as operator hosts", "tycoon --as operator hsots")
    lines = [ln for ln in tour_lines(text) if ln not in tour.ran]
    with pytest.raises(TourError, match="hsots"):
        for line in lines:
            tour.run(line)
    with pytest.raises(TourError, match="PORT"):
        Tour(tour.cwd, dict(tour.env)).run("tycoon --nats nats://127.0.0.1:PORT status")
    with pytest.raises(TourError, match="no '## A five-minute tour'"):
        tour_lines(text.replace(TOUR, "## A tour"))


@pytest.mark.xdist_group("readme_tour")
def test_the_readme_tour_runs_word_for_word(tour: Tour) -> None:
    for line in tour_lines(README.read_text()):
        if not line.startswith("tycoon up"):  # the market the fixture started from it
            tour.run(line)
    assert any("agent run" in ln for ln in tour.ran)
    assert any("bid host-1" in ln for ln in tour.ran)


def test_the_readme_keeps_what_a_reader_needs_inside_the_repository() -> None:
    text = README.read_text()
    assert "../" not in text
    for doc in re.findall(r"`(docs/[\w.-]+\.md)`", text):
        assert (README.parent / doc).exists(), doc


def test_every_command_in_the_readme_parses() -> None:
    """Blocks outside the tour (many machines, make) cannot run here; their tycoon
    commands must still be real commands with real flags."""
    from tycoon.cli.main import build_parser

    parser = build_parser()
    blocks = re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.S | re.M)
    lines = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip()]
    commands = [words(ln) for ln in lines if ln.startswith("tycoon ")]
    assert len(commands) > 15
    for argv in commands:
        parser.parse_args([a.replace("PORT", "4222") for a in argv[1:]])
    with pytest.raises(SystemExit):
        parser.parse_args(["--as", "bank", "bank", "serve", "--db-path", "x"])


def _cgroups_missing() -> str | None:
    from tycoon.vmm.cgroups_v1 import lacks

    lacking = lacks()
    if lacking is not None:
        return lacking
    if not os.access("/usr/bin/python3", os.X_OK):
        return "needs /usr/bin/python3 (the jobs' python3, reachable by their uids)"
    return None


@pytest.mark.cgroups
@pytest.mark.timeout(420)
def test_the_readme_runs_your_work_on_cgroups() -> None:
    """The "Run your work" section word for word: a cgroups market, a bag of tasks through
    an agent with a bundle, every task's output back; then one job by hand."""
    reason = _cgroups_missing()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="tycoon-readme-", dir="/tmp"))
    base.chmod(0o755)
    (base / "jobs").mkdir(mode=0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYCOON_")}
    env.update(TYCOON_LOG="warning", TYCOON_JOBS_ROOT=str(base / "jobs"))
    tour = Tour(base / "reader", env)
    tour.cwd.mkdir()
    try:
        for line in tour_lines(README.read_text(), WORK):
            tour.run(line)
        exits = sorted((tour.cwd / "results").glob("*/exit.json"))
        tasks = (tour.cwd / "tasks.txt").read_text().split()
        assert len(exits) == len(tasks) and all('"status": 0' in e.read_text() for e in exits)
        outputs = sorted(int(out.read_text().split()[0])
                         for out in (tour.cwd / "results").glob("*/stdout"))
        assert outputs == sorted(int(t) for t in tasks)
    finally:
        output = tour.stop()
        _remove_cgroup_roots(tour.cwd / ".tycoon-real")
        shutil.rmtree(base, ignore_errors=True)
    assert tour.up is not None and tour.up.returncode == 0, output[-3000:]
    assert "bank audit passes" in output, output[-3000:]


def _remove_cgroup_roots(state: Path) -> None:
    """The hosts keep their cgroup subtrees for a restart: remove them after the test."""
    from tycoon.bus.keys import KeyStore, subject_id
    from tycoon.vmm.cgroups import CgroupsDriver

    for host in ("host-1", "host-2"):
        try:
            key = KeyStore(state).load(host).public_key
        except (OSError, ValueError):
            continue
        driver = CgroupsDriver(root=f"tycoon-{subject_id(key)[:8]}", version="v1",
                               state_dir=None, strict=False)
        driver.teardown()
