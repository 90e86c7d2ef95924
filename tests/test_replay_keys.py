"""Replay guard and identities (pure, no server)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from tycoon.bus.envelope import open_envelope, seal
from tycoon.bus.keys import (
    Identity,
    KeyStore,
    decode_public_key,
    host_id,
    is_public_key,
    subject_id,
)
from tycoon.bus.replay import ReplayGuard
from tycoon.errors import Rejected

S = 1_000_000_000
ME = Identity.generate()


def msg_at(ts: int, nonce: bytes | None = None):
    return open_envelope(seal(ME, "demo.echo", {}, subject="x.y", ts_ns=ts, nonce=nonce))


def test_fresh_once_then_replayed() -> None:
    guard = ReplayGuard(window_ns=60 * S)
    m = msg_at(1000 * S)
    guard.check(m, now_ns=1000 * S)
    with pytest.raises(Rejected, match="replayed"):
        guard.check(m, now_ns=1001 * S)


def test_stale_and_future() -> None:
    guard = ReplayGuard(window_ns=60 * S)
    with pytest.raises(Rejected, match="stale"):
        guard.check(msg_at(900 * S), now_ns=1000 * S)
    with pytest.raises(Rejected, match="stale"):
        guard.check(msg_at(1100 * S), now_ns=1000 * S)
    guard.check(msg_at(1059 * S), now_ns=1000 * S)


def test_cache_evicts_what_falls_out_of_the_window() -> None:
    guard = ReplayGuard(window_ns=10 * S)
    for i in range(100):
        guard.check(msg_at(1000 * S + i), now_ns=1000 * S)
    assert len(guard) == 100
    guard.check(msg_at(1020 * S), now_ns=1020 * S)
    assert len(guard) == 1


def test_bounded_cache_raises_floor_instead_of_forgetting() -> None:
    guard = ReplayGuard(window_ns=60 * S, max_entries=10)
    first = msg_at(1000 * S)
    guard.check(first, now_ns=1000 * S)
    for i in range(1, 20):
        guard.check(msg_at(1000 * S + i), now_ns=1000 * S)
    assert len(guard) == 10
    with pytest.raises(Rejected):  # evicted, but still cannot be replayed
        guard.check(first, now_ns=1000 * S)


def test_identity_is_an_nkey_and_signs() -> None:
    ident = Identity.generate()
    assert ident.seed.startswith("SU") and ident.public_key.startswith("U")
    assert is_public_key(ident.public_key) and not is_public_key("U" + "A" * 55)
    assert Identity.from_seed(ident.seed) == ident
    sig = ident.sign(b"data")
    assert verified(ident.public_key, b"data", sig)
    assert not verified(ident.public_key, b"other", sig)
    assert not verified(Identity.generate().public_key, b"data", sig)


def verified(public_key: str, data: bytes, signature: bytes) -> bool:
    """PyNaCl's own check of a signature by the holder of ``public_key``."""
    try:
        VerifyKey(decode_public_key(public_key)).verify(data, signature)
    except BadSignatureError:
        return False
    return True


def test_nkeys_library_agrees() -> None:
    import nkeys

    ident = Identity.generate()
    kp = nkeys.from_seed(ident.seed.encode())
    assert kp.public_key.decode() == ident.public_key
    assert kp.verify(b"n", ident.sign(b"n"))


def test_host_id_is_derived_and_subject_safe() -> None:
    ident = Identity.generate()
    hid = host_id(ident.public_key)
    assert hid == subject_id(ident.public_key) == host_id(ident.public_key)
    assert len(hid) == 16 and hid.islower() and "." not in hid
    assert hid != host_id(Identity.generate().public_key)


def test_bad_seeds_are_refused() -> None:
    for bad in ("", "SUxxxx", "SAAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU"):
        with pytest.raises(ValueError):
            Identity.from_seed(bad)


def test_keystore_files_are_private(tmp_path) -> None:
    store = KeyStore(tmp_path)
    ident = store.create("alice")
    path = tmp_path / "keys" / "alice.nk"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert store.load("alice") == ident
    assert store.load_or_create("alice") == ident
    assert store.names() == ["alice"]
    with pytest.raises(FileExistsError):
        store.save("alice", Identity.generate())
    with pytest.raises(ValueError):
        store.load("../etc/passwd")


@pytest.mark.slow  # seconds: left out of make test-fast
def test_keys_cli(tmp_path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tycoon.cli.main", "--home", str(tmp_path), "keys", *args],
            capture_output=True, text=True, timeout=60,
        )

    new = run("new", "bob")
    assert new.returncode == 0, new.stderr
    name, public, sid = new.stdout.split()
    assert name == "bob" and is_public_key(public) and sid == subject_id(public)
    assert run("new", "bob").returncode == 1
    assert public in run("list").stdout
    assert f"public_key: {public}" in run("show", "bob").stdout
    assert run("show", "nobody").returncode == 1
