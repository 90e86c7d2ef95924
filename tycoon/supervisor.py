"""Child processes of ``tycoon up``: start, wait for readiness, stop in order, keep logs.

Each child is a ``tycoon`` command in its own session (so a terminal's Ctrl-C reaches
only the supervisor, which then stops children in dependency order). Its structured log
goes to ``<state>/logs/<name>.log``, rotated by size by the child itself
(``TYCOON_LOG_FILE``, see tycoon.log); what it prints (a crash's traceback) is appended to
``<state>/logs/<name>.out``.

Readiness is a pipe, not text: a service command given ``--ready-fd N`` writes
``READY=1\n`` to descriptor N once its ``launch`` has started the service (and its metrics
listener), then closes it. The supervisor holds the other end; a child that exits or
closes the pipe without the line is not ready, and nothing it prints or logs counts
(docs/operations.md, "Readiness").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

READY = b"READY=1\n"
"""The one line a ready service writes to its ``--ready-fd``."""


def add_ready_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--ready-fd`` flag of a service command."""
    parser.add_argument("--ready-fd", type=int, default=None, metavar="FD",
                        help="once serving, write READY=1 and a newline to file descriptor "
                             "FD and close it (for a supervisor such as tycoon up)")


def notify_ready(fd: int | None) -> None:
    """Tell the supervisor (if any) that the service is serving: ``READY=1`` on ``fd``."""
    if fd is None:
        return
    try:
        os.write(fd, READY)
    except OSError:
        pass  # the supervisor gave up waiting; it will not count us as ready
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


@dataclass
class Child:
    """One supervised ``tycoon`` process."""

    name: str
    args: list[str]
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    program: list[str] = field(default_factory=lambda: [sys.executable, "-m", "tycoon.cli.main"])
    _ready_fd: int | None = None

    @property
    def log_path(self) -> Path:
        """The child's structured log (rotated by size: ``.log.1`` ... are older)."""
        return self.log_dir / f"{self.name}.log"

    @property
    def out_path(self) -> Path:
        """What the child prints on stdout and stderr (a few lines; a crash's traceback)."""
        return self.log_dir / f"{self.name}.out"

    async def start(self, *, notify: bool = False) -> None:
        """Start the child; with ``notify`` it gets ``--ready-fd`` (see :meth:`ready`)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        args, keep = list(self.args), ()
        if notify:
            self._ready_fd, write_fd = os.pipe()
            args, keep = [*args, "--ready-fd", str(write_fd)], (write_fd,)
        out = open(self.out_path, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, **self.env}
        env.setdefault("TYCOON_LOG_FILE", str(self.log_path))
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.program, *args, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=out, env=env, start_new_session=True, pass_fds=keep,
            )
        finally:
            out.close()
            for fd in keep:  # only the child holds the write end: its exit is EOF here
                os.close(fd)
        self.started = time.monotonic()
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.write_text(f"{self.process.pid}\n")

    async def ready(self, timeout: float) -> bool:
        """Whether the child wrote ``READY=1`` to its ready pipe within ``timeout`` and
        still runs. Exiting, or closing the pipe without the line, is "not ready" at once."""
        if self._ready_fd is None:
            raise RuntimeError(f"{self.name} was not started with notify=True")
        reader = asyncio.StreamReader()
        pipe = os.fdopen(self._ready_fd, "rb", buffering=0)
        self._ready_fd = None
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except (TimeoutError, ValueError):  # ValueError: a line past the reader's limit
            return False
        finally:
            transport.close()
        return line == READY and self.running

    @property
    def pid_path(self) -> Path:
        return self.log_dir.parent / "pids" / f"{self.name}.pid"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None if still running after ``timeout``."""
        if self.process is None:
            return None
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see tycoon.waiting
                return await self.process.wait()
        except TimeoutError:
            return None

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the services drain), then SIGKILL after ``timeout``."""
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        if self._ready_fd is not None:
            os.close(self._ready_fd)
            self._ready_fd = None
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
