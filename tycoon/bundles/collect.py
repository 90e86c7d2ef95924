"""Bundles: collecting a job's results into a deterministic tar (pure, no bus).

:func:`collect` packs named paths of a job's working directory as :func:`~.pack.pack` would,
read through directory descriptors without following a link (docs/jobs.md, "Bundles").
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
from pathlib import Path

from tycoon.bundles.pack import LIMITS, Limits, clean_name, link_inside, within
from tycoon.bundles.unpack import open_parents
from tycoon.errors import Rejected


def collect(base: Path, cwd: Path, paths: list[str], limits: Limits = LIMITS, *,
            owner: int | None = None) -> bytes | None:
    """The deterministic tar of ``paths`` (relative to ``cwd``, itself below ``base``), read
    without following a link (a link inside is packed as a link; one out is refused); with
    ``owner``, only files it owns are read (a host running as root never hands a job a file
    it could not read itself). Missing paths are skipped; None if none exists."""
    try:
        root = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        fd = open_parents(root, cwd.relative_to(base).as_posix() + "/.", make=False)
        os.close(root)
    except (OSError, ValueError, Rejected):
        return None  # the working directory is gone or was made a link
    entries: list[tuple[str, bytes | None, os.stat_result, str]] = []
    left = [limits.total]  # bytes of files still admitted: checked before each read
    try:
        for rel in paths:
            name = clean_name(rel)
            parent = None
            try:
                parent = open_parents(fd, name, make=False)
                _gather(parent, posixpath.basename(name), name, entries, owner, limits, left)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except Rejected as error:
                if "is a link or not a directory" in error.message:
                    continue
                raise
            finally:
                if parent is not None:
                    os.close(parent)
    finally:
        os.close(fd)
    if not entries:
        return None
    return _tar(sorted({e[0]: e for e in entries}.values()), limits)


MAX_DEPTH = 64
"""Directory levels ``collect`` descends (each holds a descriptor while it is read)."""


def _gather(parent: int, base: str, name: str, out: list, owner: int | None,
            limits: Limits, left: list[int]) -> None:
    st = os.stat(base, dir_fd=parent, follow_symlinks=False)
    if len(out) >= limits.members:
        raise Rejected("bundle_too_large", f"over {limits.members} members")
    if name.count("/") >= MAX_DEPTH:
        raise Rejected("bundle_unsafe", f"{name[:64]}…: over {MAX_DEPTH} directory levels")
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(base, dir_fd=parent)
        link_inside(name, target, f"{name} links out of the working directory ({target})")
        out.append((name, None, st, target))
    elif stat.S_ISDIR(st.st_mode):
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        try:
            out.append((name, None, os.fstat(fd), ""))
            for child in sorted(os.listdir(fd)):
                _gather(fd, child, f"{name}/{child}", out, owner, limits, left)
        finally:
            os.close(fd)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
        with os.fdopen(fd, "rb") as f:
            real = os.fstat(f.fileno())
            if not stat.S_ISREG(real.st_mode) or (owner is not None and real.st_uid != owner):
                raise Rejected("bundle_unsafe", f"{name} is not a file the job owns")
            if real.st_size > limits.member or real.st_size > left[0]:
                raise Rejected("bundle_too_large", f"{name} is {real.st_size} bytes, over "
                               f"{min(limits.member, left[0])} (of {limits.total} in all)")
            data = f.read(min(limits.member, left[0]) + 1)  # it may grow while read
            left[0] -= len(data)
            out.append((name, data, real, ""))
    else:
        raise Rejected("bundle_unsafe", f"{name} is not a file, directory or link")


def _tar(entries: list, limits: Limits) -> bytes:
    buf, total = io.BytesIO(), 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, st, target in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if target:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                info.size, info.mode = len(data), 0o755 if st.st_mode & 0o100 else 0o644
                total += len(data)
                if total > limits.total:
                    raise Rejected("bundle_too_large", f"over {limits.total} bytes of files")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return within(buf.getvalue(), limits, "the results are")
