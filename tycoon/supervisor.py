"""Child processes of ``tycoon up``: start, watch for readiness, stop in order, keep logs.

Each child is a ``tycoon`` command in its own session (so a terminal's Ctrl-C reaches
only the supervisor, which then stops children in dependency order). Its structured log
goes to ``<state>/logs/<name>.log``, rotated by size by the child itself
(``TYCOON_LOG_FILE``, see tycoon.log); what it prints (its ready line, a crash's
traceback) is appended to ``<state>/logs/<name>.out``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Child:
    """One supervised ``tycoon`` process."""

    name: str
    args: list[str]
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0

    @property
    def log_path(self) -> Path:
        """The child's structured log (rotated by size: ``.log.1`` ... are older)."""
        return self.log_dir / f"{self.name}.log"

    @property
    def out_path(self) -> Path:
        """What the child prints on stdout and stderr (a few lines; a crash's traceback)."""
        return self.log_dir / f"{self.name}.out"

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.out_path, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, **self.env}
        env.setdefault("TYCOON_LOG_FILE", str(self.log_path))
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tycoon.cli.main", *self.args,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                env=env, start_new_session=True,
            )
        finally:
            out.close()
        self.started = time.monotonic()
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.write_text(f"{self.process.pid}\n")

    @property
    def pid_path(self) -> Path:
        return self.log_dir.parent / "pids" / f"{self.name}.pid"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait_for_line(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in the child's output or log (or it exits, or time
        runs out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in (self.out_path, self.log_path):
                with contextlib.suppress(FileNotFoundError):
                    if text in path.read_text(errors="replace"):
                        return True
            if not self.running:
                return False
            await asyncio.sleep(0.1)
        return False

    async def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None if still running after ``timeout``."""
        if self.process is None:
            return None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return None

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the services drain), then SIGKILL after ``timeout``."""
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        if not self.running:
            return self.process.returncode if self.process else None
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        code = await self.wait(timeout)
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            code = await self.wait(5)
        return code

    def tail(self, lines: int = 5) -> str:
        """The last lines of the child's log and of its output (for error messages)."""
        out = []
        for path in (self.log_path, self.out_path):
            with contextlib.suppress(FileNotFoundError):
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)


async def stop_all(children: list[Child], timeout: float = 10.0) -> dict[str, int | None]:
    """Stop children in reverse start order, each group after the one started later."""
    codes: dict[str, int | None] = {}
    for child in reversed(children):
        codes[child.name] = await child.stop(timeout)
    return codes
