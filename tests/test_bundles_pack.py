"""Bundles, pure: deterministic packing and the unpacking refusals (bundles.pack, .unpack)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from tycoon.bundles.pack import LIMITS, Limits, check_digest, digest_of, pack
from tycoon.bundles.unpack import check, unpack
from tycoon.errors import Rejected


def tree(root: Path) -> Path:
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "src" / "run.sh", 0o750)
    (root / "src" / "sub" / "data.txt").write_text("data")
    os.symlink("../run.sh", root / "src" / "sub" / "link")
    return root / "src"


def crafted(*members: tuple[str, str, bytes | str]) -> bytes:
    """A tar with members (name, type, content-or-linkname) as an attacker would write it."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, content in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(content, bytes)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
                continue
            info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE,
                         "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = str(content)
            tar.addfile(info)
    return out.getvalue()


def refused(code: str, data: bytes, dest: Path, limits: Limits = LIMITS) -> None:
    with pytest.raises(Rejected) as caught:
        unpack(data, dest, limits)
    assert caught.value.code == code, caught.value
    assert not dest.exists() or not any(dest.iterdir()), "something was written"


def test_packing_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    src = tree(tmp_path)
    first = pack(src)
    os.utime(src / "sub" / "data.txt", (1, 1))  # times and owners do not change the digest
    assert pack(src) == first
    assert check_digest(digest_of(first)) == digest_of(first)
    names = unpack(first, tmp_path / "out")
    assert sorted(names) == ["run.sh", "sub", "sub/data.txt", "sub/link"]
    assert (tmp_path / "out" / "sub" / "link").read_text() == "#!/bin/sh\necho hi\n"
    assert os.stat(tmp_path / "out" / "run.sh").st_mode & 0o777 == 0o755
    (src / "sub" / "data.txt").write_text("datb")
    assert digest_of(pack(src)) != digest_of(first)
    one = pack(src / "run.sh")  # a file is packed under its own name
    assert unpack(one, tmp_path / "one") == ["run.sh"]
    with pytest.raises(Rejected, match="malformed"):
        check_digest("ABC")


def test_packing_refuses_links_out_and_special_files(tmp_path: Path) -> None:
    src = tree(tmp_path)
    os.symlink("/etc/passwd", src / "out")
    with pytest.raises(Rejected) as caught:
        pack(src)
    assert caught.value.code == "bundle_unsafe"
    (src / "out").unlink()
    os.mkfifo(src / "pipe")
    with pytest.raises(Rejected, match="bundle_unsafe"):
        pack(src)
    (src / "pipe").unlink()
    with pytest.raises(Rejected, match="bundle_too_large"):
        pack(src, Limits(member=3))


@pytest.mark.parametrize("members", [
    [("../evil", "file", b"x")],
    [("sub/../../evil", "file", b"x")],
    [("/etc/evil", "file", b"x")],
    [("out", "sym", "/etc"), ],
    [("sub", "dir", ""), ("sub/up", "sym", "../../etc")],
    [("hard", "hard", "/etc/passwd")],
    [("hard", "hard", "../outside")],
    [("dev", "chr", "")],
    [("fifo", "fifo", "")],
    [("link", "sym", "."), ("link/x", "file", b"x")],  # writing through one of its own links
    [("a", "file", b"1"), ("a", "file", b"2")],
], ids=["dotdot", "inner-dotdot", "absolute", "symlink-absolute", "symlink-up", "hardlink-abs",
        "hardlink-up", "device", "fifo", "through-link", "twice"])
def test_unpacking_refuses_what_escapes(tmp_path: Path, members: list) -> None:
    refused("bundle_unsafe", crafted(*members), tmp_path / "dest")
    assert not (tmp_path / "evil").exists()


def test_unpacking_refuses_oversized_bundles(tmp_path: Path) -> None:
    big = crafted(("big", "file", b"x" * 2000))
    refused("bundle_too_large", big, tmp_path / "a", Limits(member=1000))
    many = crafted(*[(f"f{i}", "file", b"x" * 600) for i in range(3)])
    refused("bundle_too_large", many, tmp_path / "b", Limits(total=1000))
    refused("bundle_too_large", many, tmp_path / "c", Limits(members=2))
    refused("bundle_too_large", many, tmp_path / "d", Limits(bundle=1000))
    refused("bundle_unsafe", b"not a tar at all" * 64, tmp_path / "e")
    assert len(check(many)) == 3


def test_unpacking_never_writes_through_a_link_already_there(tmp_path: Path) -> None:
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    os.symlink(outside, dest / "sub")  # planted by an earlier job of the account
    with pytest.raises(Rejected, match="bundle_unsafe"):
        unpack(crafted(("sub/x", "file", b"x")), dest)
    assert not (outside / "x").exists()
    os.symlink(outside / "target", dest / "file")  # a link where a file goes: replaced
    unpack(crafted(("file", "file", b"y"), ("hard", "hard", "file")), dest)
    assert not (outside / "target").exists() and (dest / "file").read_bytes() == b"y"
    assert (dest / "hard").read_bytes() == b"y"
