"""Bundles: a deterministic tar of a directory or file, named by its SHA-256 (pure, no bus).

:func:`pack` makes the same bytes from the same tree on any machine: members sorted, times,
owners and names zeroed, modes reduced to 0755/0644, plain (uncompressed) tar, so the digest
names the content. It packs regular files, directories and symlinks that stay inside the
tree; anything else (a link out, a device, a socket) is refused. This module also holds what
packing, unpacking (:mod:`.unpack`) and collecting (:mod:`.collect`) share: the
:class:`Limits`, digests and the member-name rules (:func:`clean_name`, :func:`link_inside`).
Each refusal is a :class:`~tycoon.errors.Rejected` with a clear code (docs/jobs.md, "Bundles").
"""

from __future__ import annotations

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
            out.append(clean_name(p))
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
    return within(out.getvalue(), limits, "the bundle is")


def within(data: bytes, limits: Limits, what: str) -> bytes:
    """``data`` (a packed bundle) if no longer than ``limits.bundle``, else
    ``bundle_too_large`` saying "<what> N bytes, over ..."."""
    if len(data) > limits.bundle:
        raise Rejected("bundle_too_large", f"{what} {len(data)} bytes, over {limits.bundle}")
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
        link_inside(name, target, f"{name} links out of the bundle ({target})")
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


# ------------------------------------------------------------------ member names


def clean_name(name: str) -> str:
    """The member's normalised relative name, or ``bundle_unsafe``."""
    if not name or "\x00" in name or name.startswith("/") or "\\" in name:
        raise Rejected("bundle_unsafe", f"member {name!r}: not a relative path")
    norm = posixpath.normpath(name)
    if norm in (".", "") or norm.startswith("../") or norm == ".." \
            or ".." in name.split("/"):
        raise Rejected("bundle_unsafe", f"member {name!r} escapes the destination")
    return norm


def link_inside(name: str, target: str, why: str) -> None:
    """A symlink ``name`` → ``target`` resolves (lexically) inside the destination."""
    if not target or target.startswith("/") or "\x00" in target:
        raise Rejected("bundle_unsafe", why)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise Rejected("bundle_unsafe", why)

