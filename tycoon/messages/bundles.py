"""Bodies of bundles: code and results in an account's object-store bucket, served by the
bank (queue group ``bundles`` on ``tycoon.bundle.<op>``; docs/jobs.md, "Bundles").

A key reaches its own bucket; a host reaches an account's with ``account`` and ``proof``:
the account's own signed ``host.exec`` to that host, naming the bundle (get) or asking
for outputs to be collected (put)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tycoon.messages.base import Body, meta

CHUNK = 128 * 1024
PROOF = 256 * 1024
"""Bytes of a signed ``host.exec`` (argv ≤ 64 KiB, env, cwd, collect: far below)."""


@dataclass(frozen=True, slots=True)
class BundlePut(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("bundle.put",)
    SUMMARY: ClassVar[str] = ("store one chunk of a bundle in the sender's bucket (a host "
                              "storing results: in the bucket of the account whose `proof` "
                              "it carries); the one naming `digest` checks every chunk and "
                              "names the object")
    upload: str = field(metadata=meta("this push's id: 8–22 letters or digits", max_len=22))
    index: int = field(metadata=meta("the chunk's number, 0, 1, … (a resent chunk is kept "
                                     "once)"))
    data: bytes = field(metadata=meta("at most 128 KiB", max_len=CHUNK))
    digest: str | None = field(default=None, metadata=meta(
        "with the last chunk: the hex SHA-256 of the whole bundle", max_len=64))
    account: str | None = field(default=None, metadata=meta(
        "a host storing a job's results: the account's public key", max_len=64))
    proof: bytes | None = field(default=None, metadata=meta(
        "with `account`: its signed `host.exec` to this host, with `collect`",
        max_len=PROOF))


@dataclass(frozen=True, slots=True)
class BundlePutReply(Body):
    upload: str
    index: int
    digest: str | None = field(default=None, metadata=meta(doc="the object stored"))


@dataclass(frozen=True, slots=True)
class BundleGet(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("bundle.get",)
    SUMMARY: ClassVar[str] = ("one chunk of a bundle in the sender's bucket (a host: in the "
                              "bucket of the account whose `proof` it carries)")
    digest: str = field(metadata=meta("hex SHA-256", max_len=64))
    after: int | None = field(default=None, metadata=meta(
        "the `seq` of the chunk before (absent: the first)"))
    account: str | None = field(default=None, metadata=meta(
        "a host fetching a job's bundle: the account's public key", max_len=64))
    proof: bytes | None = field(default=None, metadata=meta(
        "with `account`: its signed `host.exec` to this host naming `digest`",
        max_len=PROOF))


@dataclass(frozen=True, slots=True)
class BundleGetReply(Body):
    size: int = field(metadata=meta(doc="bytes of the whole bundle"))
    chunks: int
    data: bytes
    seq: int = field(metadata=meta(doc="pass as `after` for the next chunk"))


REPLIES: dict[str, type[Body]] = {"bundle.put": BundlePutReply, "bundle.get": BundleGetReply}
