"""Bundles: checking and unpacking one (pure, no bus).

:func:`check` validates a bundle before anything is written: every member's name is relative
and stays inside the destination, links stay inside, no device or fifo, each member and the
total under the limits. :func:`unpack` writes a checked bundle, never through a symlink
(directories reached by descriptor: :func:`open_below`, :func:`open_parents`). Each refusal
is a :class:`~tycoon.errors.Rejected` with a clear code (docs/jobs.md, "Bundles").
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import stat
import tarfile
from pathlib import Path

from tycoon.bundles.pack import LIMITS, Limits, clean_name, link_inside
from tycoon.errors import Rejected


def check(data: bytes, limits: Limits = LIMITS) -> list[tarfile.TarInfo]:
    """The members of a bundle if it is safe to unpack, else ``Rejected`` (nothing written)."""
    if len(data) > limits.bundle:
        raise Rejected("bundle_too_large", f"the bundle is {len(data)} bytes, over "
                       f"{limits.bundle}")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise Rejected("bundle_unsafe", f"not a tar archive: {exc}") from None
    if len(members) > limits.members:
        raise Rejected("bundle_too_large", f"{len(members)} members, over {limits.members}")
    total, kinds = 0, {}
    for m in members:
        name = clean_name(m.name)
        if m.issym():
            link_inside(name, m.linkname, f"{m.name} links out of the destination ({m.linkname})")
        elif m.islnk():
            target = clean_name(m.linkname)
            if kinds.get(target) != "file":
                raise Rejected("bundle_unsafe", f"hard link {m.name} → {m.linkname}: not an "
                               "earlier file of the bundle")
        elif not (m.isreg() or m.isdir()):
            raise Rejected("bundle_unsafe", f"{m.name} is a device, fifo or other special file")
        if m.size > limits.member:
            raise Rejected("bundle_too_large", f"{m.name} is {m.size} bytes, over "
                           f"{limits.member}")
        total += m.size
        if total > limits.total:
            raise Rejected("bundle_too_large", f"over {limits.total} bytes of files")
        if name in kinds:
            raise Rejected("bundle_unsafe", f"{m.name} appears twice")
        kinds[name] = "dir" if m.isdir() else "file" if m.isreg() or m.islnk() else "link"
    for name in kinds:  # nothing is written below a member that is a link or a file
        parent = posixpath.dirname(name)
        while parent:
            if kinds.get(parent, "dir") != "dir":
                raise Rejected("bundle_unsafe", f"{name} lies below {parent}, not a directory")
            parent = posixpath.dirname(parent)
    return members


def unpack(data: bytes, dest: Path | str, limits: Limits = LIMITS, *, owner: int | None = None,
           base: Path | str | None = None) -> list[str]:
    """Check the bundle, then write it under ``dest`` (created if missing); the names written.

    Never follows a symlink: a parent that exists as a symlink, or a member whose path is
    already a link or a file of another kind, is refused (``bundle_unsafe``). A host (root)
    unpacking into a sandbox passes ``base`` (the trusted sandbox directory; ``dest`` lies
    below it and is reached without following links) and ``owner`` (the job's uid: every
    file and directory made is given to it through its own descriptor, never by name)."""
    members = check(data, limits)
    root = open_below(Path(base) if base is not None else None, Path(dest), owner)
    written: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for m in members:
                name = clean_name(m.name)
                parent_fd = open_parents(root, name, owner)
                base = posixpath.basename(name)
                try:
                    if m.isdir():
                        _mkdir(parent_fd, base, name, owner)
                    elif m.issym():
                        _fresh(parent_fd, base, name)
                        os.symlink(m.linkname, base, dir_fd=parent_fd)
                    elif m.islnk():
                        _fresh(parent_fd, base, name)
                        src = open_parents(root, clean_name(m.linkname))
                        try:
                            os.link(posixpath.basename(clean_name(m.linkname)), base,
                                    src_dir_fd=src, dst_dir_fd=parent_fd, follow_symlinks=False)
                        finally:
                            os.close(src)
                    else:
                        source = tar.extractfile(m)
                        assert source is not None
                        _write(parent_fd, base, name, source.read(), m.mode & 0o100, owner)
                finally:
                    os.close(parent_fd)
                written.append(name)
    finally:
        os.close(root)
    return written


def open_below(base: Path | None, dest: Path, owner: int | None = None) -> int:
    """A descriptor of directory ``dest``, made if missing; below ``base`` (if given) every
    component is reached without following a link and made directories go to ``owner``."""
    if base is None:
        dest.mkdir(parents=True, exist_ok=True)
        return os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    rel = dest.relative_to(base).as_posix()  # ValueError: dest is not below base
    root = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    if rel in ("", "."):
        return root
    try:
        fd = open_parents(root, rel + "/.", owner)
    finally:
        os.close(root)
    return fd


def open_parents(root: int, name: str, owner: int | None = None, make: bool = True) -> int:
    """A descriptor of ``name``'s parent directory, reached without following any link
    (missing directories made, unless not ``make``)."""
    fd = os.dup(root)
    for part in name.split("/")[:-1]:
        made = False
        with contextlib.suppress(FileExistsError):
            if make:
                os.mkdir(part, 0o755, dir_fd=fd)
                made = True
        try:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError:
            os.close(fd)
            raise Rejected("bundle_unsafe", f"{name}: {part} is a link or not a directory "
                           "in the destination") from None
        os.close(fd)
        fd = nxt
        if made and owner is not None:
            os.fchown(fd, owner, owner)
    return fd


def _mkdir(parent: int, base: str, name: str, owner: int | None = None) -> None:
    try:
        os.mkdir(base, 0o755, dir_fd=parent)
    except FileExistsError:
        if not stat.S_ISDIR(os.stat(base, dir_fd=parent, follow_symlinks=False).st_mode):
            raise Rejected("bundle_unsafe", f"{name} exists and is not a directory") from None
        return
    if owner is not None:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        try:
            os.fchown(fd, owner, owner)
        finally:
            os.close(fd)


def _fresh(parent: int, base: str, name: str) -> None:
    """Make room for a new file or link: an existing file is replaced, a directory is not."""
    try:
        st = os.stat(base, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise Rejected("bundle_unsafe", f"{name} exists as a directory")
    os.unlink(base, dir_fd=parent)


def _write(parent: int, base: str, name: str, data: bytes, executable: int,
           owner: int | None = None) -> None:
    _fresh(parent, base, name)
    fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 0o755 if executable else 0o644, dir_fd=parent)
    with os.fdopen(fd, "wb") as out:
        if owner is not None:
            os.fchown(out.fileno(), owner, owner)  # a new inode: never one a job links in
        out.write(data)

