"""Identities: Ed25519 key pairs encoded as NATS user nkeys, and the key store.

The same key authenticates a connection to NATS (nkey challenge) and signs every
message; an account id IS the public nkey (``U…``), and a host id is derived from
the host's public key so that only the key holder can speak for that host.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
import nkeys

SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32
KEY_NAME = _NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A key name (also what `tycoon admit` accepts as a principal's name)."""
SUBJECT_ID = re.compile(r"[a-z2-7]{16}")
"""What :func:`subject_id` returns (16 lowercase base32 characters): match with fullmatch."""


def _encode_public(raw: bytes) -> str:
    data = bytearray([nkeys.PREFIX_BYTE_USER]) + raw
    data += nkeys.crc16(data).to_bytes(2, "little")
    return base64.b32encode(bytes(data)).decode().rstrip("=")


@functools.lru_cache(maxsize=65536)
def decode_public_key(public_key: str) -> bytes:
    """The raw 32-byte Ed25519 key inside a ``U…`` nkey; ``ValueError`` if it is not one."""
    if not isinstance(public_key, str) or len(public_key) != 56 or public_key[0] != "U":
        raise ValueError("not a user public nkey")
    try:
        data = base64.b32decode(public_key)
    except (ValueError, TypeError) as exc:
        raise ValueError("not base32") from exc
    if len(data) != 35 or data[0] != nkeys.PREFIX_BYTE_USER:
        raise ValueError("not a user public nkey")
    if nkeys.crc16(bytearray(data[:-2])) != int.from_bytes(data[-2:], "little"):
        raise ValueError("bad nkey checksum")
    return data[1:33]


def is_public_key(text: object) -> bool:
    """True when ``text`` is a well-formed user public nkey (``U…``)."""
    try:
        decode_public_key(text)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def public_key_from_raw(raw: bytes) -> str:
    """Encode a raw 32-byte Ed25519 public key as a user nkey."""
    if len(raw) != PUBLIC_KEY_SIZE:
        raise ValueError("public key must be 32 bytes")
    return _encode_public(raw)


_PUBLIC_CACHE: dict[bytes, str] = {}


def public_key_from_raw_cached(raw: bytes) -> str:
    """:func:`public_key_from_raw`, memoised (the hot path of every received message)."""
    text = _PUBLIC_CACHE.get(raw)
    if text is None:
        if len(_PUBLIC_CACHE) > 65536:
            _PUBLIC_CACHE.clear()
        text = _PUBLIC_CACHE[raw] = public_key_from_raw(raw)
    return text


@dataclass(frozen=True)
class Identity:
    """A principal: an Ed25519 key pair as a NATS user nkey (seed ``SU…``, public ``U…``)."""

    seed: str
    public_key: str = field(init=False)
    _signing: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    _raw_public: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            prefix, raw = nkeys.decode_seed(self.seed.encode())
        except Exception as exc:  # nkeys raises a family of its own errors
            raise ValueError("not an nkey seed") from exc
        if prefix != nkeys.PREFIX_BYTE_USER or len(raw) < 32:
            raise ValueError("not a user nkey seed (SU…)")
        signing = nacl.signing.SigningKey(bytes(raw[:32]))
        object.__setattr__(self, "_signing", signing)
        object.__setattr__(self, "_raw_public", bytes(signing.verify_key))
        object.__setattr__(self, "public_key", _encode_public(self._raw_public))

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity."""
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        return cls(seed.decode())

    @classmethod
    def from_seed(cls, seed: str | bytes) -> Identity:
        """Load an identity from its ``SU…`` seed."""
        text = seed.decode() if isinstance(seed, bytes) else seed
        return cls(text.strip())

    @property
    def raw_public_key(self) -> bytes:
        return self._raw_public

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._signing.sign(data).signature


@functools.lru_cache(maxsize=65536)
def subject_id(public_key: str) -> str:
    """A short, lowercase, subject-safe id derived from a public key (16 base32 chars)."""
    digest = hashlib.sha256(decode_public_key(public_key)).digest()
    return base64.b32encode(digest[:10]).decode().lower()


host_id = subject_id
"""A host id is derived from the host's public key: only its key holder can speak for it."""


def is_key_of(id_: str, public_key: str) -> bool:
    """Whether ``public_key`` is a valid key whose derived id is ``id_`` (a host id is its
    key's, so a directory row pairing them cannot name someone else's account)."""
    try:
        return subject_id(public_key) == id_
    except ValueError:
        return False


def default_home() -> Path:
    """``$TYCOON_HOME`` or ``~/.config/tycoon``."""
    env = os.environ.get("TYCOON_HOME")
    return Path(env) if env else Path.home() / ".config" / "tycoon"


class KeyStore:
    """Named identities stored as seed files (mode 0600) under ``<home>/keys``."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.keys_dir = self.home / "keys"

    def _path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad key name {name!r}: letters, digits, '_', '.', '-'")
        return self.keys_dir / f"{name}.nk"

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def save(self, name: str, identity: Identity) -> Path:
        """Write an identity's seed under ``name``; refuses to overwrite a different key."""
        path = self._path(name)
        if path.exists():
            if self.load(name) == identity:
                return path
            raise FileExistsError(f"key {name!r} already exists at {path}")
        self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(identity.seed + "\n")
        return path

    def create(self, name: str) -> Identity:
        """Generate and save a new identity called ``name``."""
        identity = Identity.generate()
        self.save(name, identity)
        return identity

    def load(self, name: str) -> Identity:
        """Load the identity called ``name`` (``FileNotFoundError`` if absent)."""
        return Identity.from_seed(self._path(name).read_text())

    def load_or_create(self, name: str) -> Identity:
        """Load ``name``, creating it first if it does not exist."""
        try:
            return self.load(name)
        except FileNotFoundError:
            try:
                return self.create(name)
            except FileExistsError:  # created concurrently by another process
                return self.load(name)

    def names(self) -> list[str]:
        """The names of every stored identity, sorted."""
        if not self.keys_dir.is_dir():
            return []
        return sorted(p.stem for p in self.keys_dir.glob("*.nk"))
