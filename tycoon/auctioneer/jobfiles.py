"""The host's own directory of job state: output files and records that outlive a restart.

``<jobs root>/.host`` (0700, the auctioneer's user; a sandbox's name never starts with a
dot): per job ``<id>.stdout`` and ``<id>.stderr`` — created here and handed to the job as
its stdout and stderr (append-only descriptors; the job cannot reopen them, they are 0600
and the directory is closed to it), read by the host and published, their read part freed
on disk (hole punching) — and ``<id>.json``, the job's record
(:mod:`tycoon.auctioneer.jobstate`); ``<id>.exit``, written once by the job's shim
(:mod:`tycoon.vmm.jobshim`) when its program ended: status and rusage, the truth a host
restarted meanwhile reads; ``host.json`` holds the id prefix and counter, the boot id and
the frozen accounts. Records are written atomically (temporary file, rename).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from tycoon.auctioneer.jobstate import STREAMS, exit_fields
from tycoon.log import get_logger

log = get_logger("auctioneer.jobfiles")
STATE_DIR = ".host"


class Output:
    """A job's two output files, open for reading (and hole punching) by the host."""

    def __init__(self, fds: dict[str, int]) -> None:
        self.fds = fds

    def size(self, stream: str) -> int:
        return os.fstat(self.fds[stream]).st_size

    def read(self, stream: str, offset: int, length: int) -> bytes:
        return os.pread(self.fds[stream], length, offset) if length > 0 else b""

    def close(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = {}


class StateDir:
    """``<jobs root>/.host``: records and output files of one host's jobs."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / STATE_DIR
        self.path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.path, 0o700)

    def create_output(self, job: str) -> tuple[Output, dict[str, int]]:
        """New output files: (the host's reading side, the job's append-only descriptors —
        the caller passes them to the job and closes them)."""
        mine: dict[str, int] = {}
        theirs: dict[str, int] = {}
        try:
            for stream in STREAMS:
                name = self.path / f"{job}.{stream}"
                mine[stream] = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                       | os.O_CLOEXEC, 0o600)
                theirs[stream] = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW
                                         | os.O_CLOEXEC)
        except BaseException:
            for fd in (*mine.values(), *theirs.values()):
                os.close(fd)
            self.remove(job)
            raise
        return Output(mine), theirs

    def open_output(self, job: str) -> Output:
        """The output files of a job started by an earlier run (missing ones: empty)."""
        fds: dict[str, int] = {}
        for stream in STREAMS:
            name = self.path / f"{job}.{stream}"
            try:
                fds[stream] = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                fds[stream] = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                                      | os.O_CLOEXEC, 0o600)
        return Output(fds)

    def exit_path(self, job: str) -> Path:
        """Where the job's shim writes its exit status."""
        return self.path / f"{job}.exit"

    def read_exit(self, job: str) -> tuple[int, float, int] | None:
        """(status, CPU seconds, peak memory) as the job's shim wrote them; None: not
        (yet) written, or malformed."""
        try:
            with open(self.exit_path(job), "rb", opener=_nofollow) as handle:
                return exit_fields(json.loads(handle.read(4096)))
        except (OSError, ValueError):
            return None

    def remove(self, job: str, *, record: bool = False) -> None:
        """Delete a job's output files and exit file (and its record)."""
        for suffix in (*STREAMS, "exit", *(("json",) if record else ())):
            (self.path / f"{job}.{suffix}").unlink(missing_ok=True)
        (self.path / f".{job}.exit.tmp").unlink(missing_ok=True)

    def save(self, name: str, data: dict[str, Any]) -> None:
        """Write ``<name>.json`` atomically (no fsync: a crash of the host's process, not of
        the machine, is what records survive)."""
        tmp = self.path / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, separators=(",", ":"))
        os.replace(tmp, self.path / f"{name}.json")

    def load(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.path / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def records(self) -> list[str]:
        """Names of the job records here (``host`` excluded)."""
        return sorted(p.stem for p in self.path.glob("*.json") if p.stem != "host")


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)
