"""Bundles: a deterministic tar of a directory or file, named by its SHA-256 (pure, no bus).

:func:`pack` makes the same bytes from the same tree on any machine: members sorted, times,
owners and names zeroed, modes reduced to 0755/0644, plain (uncompressed) tar, so the digest
names the content. It packs regular files, directories and symlinks that stay inside the
tree; anything else (a link out, a device, a socket) is refused.

:func:`check` validates a bundle before anything is written: every member's name is relative
and stays inside the destination, links stay inside, no device or fifo, each member and the
total under the limits. :func:`unpack` writes a checked bundle, never through a symlink.
Each refusal is a :class:`~tycoon.errors.Rejected` with a clear code (docs/jobs.md, "Bundles").
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tycoon.errors import Rejected

DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Limits:
    """What one bundle may hold (packing and unpacking)."""

    bundle: int = 64 << 20
    """Bytes of the whole tar."""
    member: int = 64 << 20
    """Bytes of one file."""
    total: int = 64 << 20
    """Bytes of all files together."""
    members: int = 10_000
    """Number of members."""


LIMITS = Limits()


def digest_of(data: bytes) -> str:
    """The name of a bundle: the hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """``digest`` if it is 64 lowercase hex digits, else ``malformed``."""
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise Rejected("malformed", "a bundle digest is 64 lowercase hex digits (SHA-256)")
    return digest


MAX_COLLECT = 32


def check_collect(paths: object) -> tuple[str, ...]:
    """The ``collect`` of an exec request: at most 32 paths relative to the job's working
    directory, none absolute or with ``..``; else ``malformed``."""
    if paths is None:
        return ()
    if not isinstance(paths, list) or len(paths) > MAX_COLLECT:
        raise Rejected("malformed", f"collect is a list of at most {MAX_COLLECT} paths")
    out = []
    for p in paths:
        if not isinstance(p, str) or len(p) > 255:
            raise Rejected("malformed", "a collect path is a string of at most 255 bytes")
        try:
            out.append(_clean(p))
        except Rejected:
            raise Rejected("malformed", f"collect path {p[:64]!r}: relative to the working "
                           "directory, no '..'") from None
    return tuple(out)


# ------------------------------------------------------------------ packing


def pack(path: Path | str, limits: Limits = LIMITS) -> bytes:
    """The deterministic tar of a directory (its contents) or of one file (by its name)."""
    path = Path(path)
    if path.is_symlink() or not (path.is_dir() or path.is_file()):
        raise Rejected("bundle_unsafe", f"{path} is not a regular file or directory")
    entries: list[tuple[str, Path]]
    if path.is_dir():
        entries = sorted((p.relative_to(path).as_posix(), p) for p in _walk(path))
    else:
        entries = [(path.name, path)]
    if len(entries) > limits.members:
        raise Rejected("bundle_too_large", f"{len(entries)} members, over {limits.members}")
    out = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, p in entries:
            info, data = _member(name, p, path if path.is_dir() else path.parent, limits)
            total += info.size
            if total > limits.total:
                raise Rejected("bundle_too_large", f"over {limits.total} bytes of files")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    data = out.getvalue()
    if len(data) > limits.bundle:
        raise Rejected("bundle_too_large", f"the bundle is {len(data)} bytes, over "
                       f"{limits.bundle}")
    return data


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for top, dirs, files in os.walk(root):  # does not descend into symlinked directories
        found += [Path(top) / d for d in dirs] + [Path(top) / f for f in files]
    return found


def _member(name: str, p: Path, root: Path, limits: Limits) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    st = os.lstat(p)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(p)
        _inside(name, target, f"{name} links out of the bundle ({target})")
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        return info, None
    if stat.S_ISDIR(st.st_mode):
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        return info, None
    if not stat.S_ISREG(st.st_mode):
        raise Rejected("bundle_unsafe", f"{name} is not a file, directory or link")
    if st.st_size > limits.member:
        raise Rejected("bundle_too_large", f"{name} is {st.st_size} bytes, over {limits.member}")
    data = p.read_bytes()
    info.size, info.mode = len(data), 0o755 if st.st_mode & 0o100 else 0o644
    return info, data


# ------------------------------------------------------------------ checking and unpacking


def _clean(name: str) -> str:
    """The member's normalised relative name, or ``bundle_unsafe``."""
    if not name or "\x00" in name or name.startswith("/") or "\\" in name:
        raise Rejected("bundle_unsafe", f"member {name!r}: not a relative path")
    norm = posixpath.normpath(name)
    if norm in (".", "") or norm.startswith("../") or norm == ".." \
            or ".." in name.split("/"):
        raise Rejected("bundle_unsafe", f"member {name!r} escapes the destination")
    return norm


def _inside(name: str, target: str, why: str) -> None:
    """A symlink ``name`` → ``target`` resolves (lexically) inside the destination."""
    if not target or target.startswith("/") or "\x00" in target:
        raise Rejected("bundle_unsafe", why)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise Rejected("bundle_unsafe", why)


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
        name = _clean(m.name)
        if m.issym():
            _inside(name, m.linkname, f"{m.name} links out of the destination ({m.linkname})")
        elif m.islnk():
            target = _clean(m.linkname)
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
                name = _clean(m.name)
                parent_fd = _open_parents(root, name, owner)
                base = posixpath.basename(name)
                try:
                    if m.isdir():
                        _mkdir(parent_fd, base, name, owner)
                    elif m.issym():
                        _fresh(parent_fd, base, name)
                        os.symlink(m.linkname, base, dir_fd=parent_fd)
                    elif m.islnk():
                        _fresh(parent_fd, base, name)
                        src = _open_parents(root, _clean(m.linkname))
                        try:
                            os.link(posixpath.basename(_clean(m.linkname)), base,
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
        fd = _open_parents(root, rel + "/.", owner)
    finally:
        os.close(root)
    return fd


def _open_parents(root: int, name: str, owner: int | None = None, make: bool = True) -> int:
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


# ------------------------------------------------------------------ collecting results


def collect(base: Path, cwd: Path, paths: list[str], limits: Limits = LIMITS, *,
            owner: int | None = None) -> bytes | None:
    """The deterministic tar of ``paths`` (relative to ``cwd``, itself below ``base``), read
    without following a link (a link inside is packed as a link; one out is refused); with
    ``owner``, only files it owns are read (a host running as root never hands a job a file
    it could not read itself). Missing paths are skipped; None if none exists."""
    try:
        root = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        fd = _open_parents(root, cwd.relative_to(base).as_posix() + "/.", make=False)
        os.close(root)
    except (OSError, ValueError, Rejected):
        return None  # the working directory is gone or was made a link
    entries: list[tuple[str, bytes | None, os.stat_result, str]] = []
    left = [limits.total]  # bytes of files still admitted: checked before each read
    try:
        for rel in paths:
            name = _clean(rel)
            parent = None
            try:
                parent = _open_parents(fd, name, make=False)
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
        _inside(name, target, f"{name} links out of the working directory ({target})")
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
    out = buf.getvalue()
    if len(out) > limits.bundle:
        raise Rejected("bundle_too_large", f"the results are {len(out)} bytes, over "
                       f"{limits.bundle}")
    return out
