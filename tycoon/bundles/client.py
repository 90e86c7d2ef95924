"""Bundles in NATS's own JetStream object store: one bucket per account, objects named by
their SHA-256 (docs/jobs.md, "Bundles"; permissions in docs/security.md).

The stable API (the agent and ``tycoon-pub`` use it)::

    digest = await push(bus, path)          # pack DIR|FILE, upload, return the hex digest
    dest = await pull(bus, digest, dest)    # fetch, check the digest, unpack safely

``push`` and ``pull`` are signed requests (``bundle.put`` / ``bundle.get``) that the store
serves (``tycoon store serve``: tycoon.bundles.service) in the signer's own bucket; a host
fetching a job's bundle or storing its results passes ``account`` and ``proof`` (the
account's signed ``host.exec``). Nobody but the store holds a JetStream right on buckets:
a JetStream answer goes to any reply subject the request names, so with any right a key
steers the server's answers into other streams. :class:`Store`, :func:`get_bytes` and
:func:`put_bytes` are that direct access (the store's service; the operator).

The bucket ``bundles-<account id>`` (stream ``OBJ_bundles-<account id>``) is made, with
its size limit, by the store on the account's first put (tycoon.bundles.buckets). Objects
are stored in the object store's own layout (chunks on ``$O.<bucket>.C.<nuid>``, the meta
on ``$O.<bucket>.M.<base64 name>``, so ``nats object get`` reads them) and read back with
``$JS.API.STREAM.MSG.GET`` one message at a time: no consumer and no direct get (a direct
get's answer, steered by a reply subject, is taken by the server as an API request: it
deleted a stream in our tests).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import string
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from tycoon.bundles.names import bucket, msg_get, request, stream
from tycoon.bundles.pack import LIMITS, Limits, check_digest, digest_of, pack
from tycoon.bundles.unpack import unpack
from tycoon.errors import Rejected
from tycoon.messages.bundles import CHUNK

BUCKET_BYTES = 256 << 20
"""The default size limit of one account's bucket."""
TIMEOUT = 5.0
_ALNUM = string.ascii_letters + string.digits


# ------------------------------------------------------------------ the stable API (users)


async def push(bus: Any, path: Path | str, *, limits: Limits = LIMITS,
               timeout: float = TIMEOUT) -> str:
    """Pack ``path`` (a directory or a file) and store it in the signer's bucket through
    the hosts; its hex SHA-256 digest. Storing it again costs one request."""
    data = await asyncio.to_thread(pack, Path(path), limits)
    return await push_bytes(bus, data, timeout=timeout)


async def pull(bus: Any, digest: str, dest: Path | str, *, limits: Limits = LIMITS,
               timeout: float = TIMEOUT) -> Path:
    """Fetch bundle ``digest`` from the signer's bucket, check it hashes to its name, and
    unpack it under ``dest`` (refusing anything unsafe: tycoon.bundles.unpack); ``dest``."""
    data = await fetch_bytes(bus, digest, limits=limits, timeout=timeout)
    await asyncio.to_thread(unpack, data, Path(dest), limits)
    return Path(dest)


async def push_bytes(bus: Any, data: bytes, *, timeout: float = TIMEOUT,
                     account: str | None = None, proof: bytes | None = None) -> str:
    """Store packed bytes in the signer's bucket (``bundle.put``, chunk by chunk, in order);
    the digest. The object is named only once every chunk hashes to it. A host storing a
    job's results names the ``account`` (public key) and its signed ``host.exec``."""
    digest = digest_of(data)
    extra: dict[str, Any] = {"account": account, "proof": proof} if account else {}
    if not account:
        with contextlib.suppress(Rejected):
            first = await _get(bus, digest, None, timeout, {})
            if first.get("size") == len(data):
                return digest  # already there (its chunks were checked when it was named)
    upload = "".join(secrets.choice(_ALNUM) for _ in range(22))
    count = max(1, -(-len(data) // CHUNK))  # one chunk at a time: no copy of the whole
    for index in range(count):
        piece = data[index * CHUNK:(index + 1) * CHUNK]
        body: dict[str, Any] = {"upload": upload, "index": index, "data": piece, **extra}
        if index == count - 1:
            body["digest"] = digest
        await bus.request(request("put"), "bundle.put", body, timeout=timeout)
    return digest


async def fetch_bytes(bus: Any, digest: str, *, limits: Limits = LIMITS,
                      timeout: float = TIMEOUT, account: str | None = None,
                      proof: bytes | None = None) -> bytes:
    """The bytes of bundle ``digest`` in the signer's bucket (``bundle.get``, chunk by
    chunk): ``unknown_bundle``, ``bundle_too_large``, ``bad_digest``. A host fetching a
    job's bundle names the ``account`` (public key) and its signed ``host.exec``."""
    check_digest(digest)
    extra: dict[str, Any] = {"account": account, "proof": proof} if account else {}
    out, after = bytearray(), None
    while True:
        reply = await _get(bus, digest, after, timeout, extra)
        size, data, seq = reply.get("size"), reply.get("data"), reply.get("seq")
        if not isinstance(size, int) or not isinstance(data, bytes) or not isinstance(seq, int):
            raise Rejected("malformed", "bundle.get: a reply without size, data and seq")
        if size > limits.bundle:
            raise Rejected("bundle_too_large", f"bundle {digest[:12]}… is {size} bytes, over "
                           f"{limits.bundle}")
        out += data
        if len(out) >= size or not data:
            break
        after = seq
    if digest_of(bytes(out)) != digest:
        raise Rejected("bad_digest", f"bundle {digest[:12]}…: its bytes hash to "
                       f"{digest_of(bytes(out))[:12]}…")
    return bytes(out)


async def _get(bus: Any, digest: str, after: int | None, timeout: float,
               extra: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"digest": digest, **extra}
    if after is not None:
        body["after"] = after
    reply = await bus.request(request("get"), "bundle.get", body, timeout=timeout)
    return dict(reply.body)


# ------------------------------------------------------------------ direct access (the store)


def _nc(nc_or_bus: Any) -> Client:
    return nc_or_bus.nc if hasattr(nc_or_bus, "nc") else nc_or_bus


async def put_bytes(nc_or_bus: Any, data: bytes, *, account: str) -> str:
    """Store packed bytes in ``account``'s (subject id) bucket directly; the digest."""
    digest = digest_of(data)
    store = Store(_nc(nc_or_bus), account)
    try:
        meta = await store.meta(digest)
        if meta is None or meta.get("digest") != nats_digest(data) \
                or meta.get("size") != len(data):
            nuid = "".join(secrets.choice(_ALNUM) for _ in range(22))
            pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
            try:
                for index, piece in enumerate(pieces):
                    await store.chunk(nuid, index, piece)
            except Rejected:
                await store.drop(nuid)
                raise
            await store.name(digest, nuid, len(data), len(pieces), nats_digest(data))
    finally:
        await store.close()
    return digest


async def get_bytes(nc_or_bus: Any, digest: str, *, account: str,
                    limits: Limits = LIMITS) -> bytes:
    """The bytes of bundle ``digest`` in ``account``'s (subject id) bucket, read directly:
    ``unknown_bundle`` if absent, ``bad_digest`` if they do not hash to it,
    ``bundle_too_large`` over the limit (checked before reading)."""
    check_digest(digest)
    store = Store(_nc(nc_or_bus), account)
    try:
        meta = await store.meta(digest)
        if meta is None:
            raise Rejected("unknown_bundle", f"no bundle {digest[:12]}… in {bucket(account)}")
        if meta["size"] > limits.bundle:
            raise Rejected("bundle_too_large", f"bundle {digest[:12]}… is {meta['size']} "
                           f"bytes, over {limits.bundle}")
        data = await store.read(meta["nuid"], meta["size"])
    finally:
        await store.close()
    if digest_of(data) != digest:
        raise Rejected("bad_digest", f"bundle {digest[:12]}…: its bytes hash to "
                       f"{digest_of(data)[:12]}…")
    return data


async def ensure_bucket(nc_or_bus: Any, account: str, *, max_bytes: int = BUCKET_BYTES,
                        replicas: int = 1) -> str:
    """Create the account's bucket if missing (the operator's JetStream capability; the
    store uses :class:`tycoon.bundles.buckets.BucketMaker`); its stream name."""
    name = stream(account)
    js = _nc(nc_or_bus).jetstream(timeout=TIMEOUT)
    with contextlib.suppress(Exception):
        await js.stream_info(name)
        return name
    await js.add_stream(bucket_config(account, max_bytes=max_bytes, replicas=replicas))
    return name


def bucket_config(account: str, *, max_bytes: int = BUCKET_BYTES,
                  replicas: int = 1) -> StreamConfig:
    """The stream of an account's bucket: the object store's layout, a size limit (new
    objects refused when full: nothing stored is ever dropped), no direct gets."""
    return StreamConfig(
        name=stream(account), subjects=[f"$O.{bucket(account)}.C.>", f"$O.{bucket(account)}.M.>"],
        description=f"Tycoon bundles of account {account}", max_bytes=max_bytes,
        storage=StorageType.FILE, num_replicas=replicas, allow_rollup_hdrs=True,
        allow_direct=False, discard=DiscardPolicy.NEW, max_msg_size=CHUNK + 4096,
    )


def nats_digest(data: bytes) -> str:
    """The object store's own digest field of ``data``."""
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


def _meta_subject(account: str, name: str) -> str:
    return f"$O.{bucket(account)}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


class NoBucket(Rejected):
    """JetStream has no stream for the subject (no bucket yet), or is not running."""


class Store:
    """Direct JetStream access to one account's bucket (the store). Requests go through
    the connection's shared reply inbox (``nc.request``): a store made per ``bundle.put``
    chunk costs no subscription of its own."""

    def __init__(self, nc: Client, account: str) -> None:
        self.nc, self.account = nc, account

    def chunks_subject(self, nuid: str) -> str:
        return f"$O.{bucket(self.account)}.C.{nuid}"

    async def _send(self, subject: str, payload: bytes,
                    headers: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            msg = await self.nc.request(subject, payload, timeout=TIMEOUT, headers=headers)
        except NoRespondersError:
            raise NoBucket("unavailable", "JetStream is not running, or the account has no "
                           f"bucket {bucket(self.account)} (the store makes it at the first "
                           "put)") from None
        except TimeoutError:  # nats.errors.TimeoutError is one
            raise Rejected("unavailable", f"no answer from JetStream on {subject}") from None
        try:
            body = json.loads(msg.data)
        except ValueError:
            raise Rejected("unavailable", f"JetStream answered {subject} with junk") from None
        return body if isinstance(body, dict) else {}

    async def get(self, query: dict[str, Any]) -> dict[str, Any] | None:
        """One stored message (``$JS.API.STREAM.MSG.GET``), or None if there is none."""
        body = await self._send(msg_get(self.account), json.dumps(query).encode())
        error = body.get("error")
        if error:
            if error.get("err_code") == 10037:  # no message found
                return None
            if error.get("err_code") == 10059:
                raise Rejected("unknown_bundle", f"no bucket {bucket(self.account)}: the "
                               "store makes it at the account's first push")
            raise Rejected("unavailable", f"JetStream: {error.get('description', error)}")
        message = body.get("message")
        return message if isinstance(message, dict) else None

    @staticmethod
    def payload(stored: dict[str, Any]) -> bytes:
        return base64.b64decode(stored.get("data", "") or "")

    async def meta(self, name: str) -> dict[str, Any] | None:
        """The object's meta if it is well formed (junk on its subject counts as absent)."""
        stored = await self.get({"last_by_subj": _meta_subject(self.account, name)})
        if stored is None:
            return None
        try:
            meta = json.loads(self.payload(stored))
        except ValueError:
            return None
        if not isinstance(meta, dict) or meta.get("name") != name or meta.get("deleted") \
                or not isinstance(meta.get("size"), int) or meta["size"] < 0 \
                or not isinstance(meta.get("chunks"), int) \
                or not isinstance(meta.get("nuid"), str) or not meta["nuid"]:
            return None
        return meta

    async def read(self, nuid: str, size: int) -> bytes:
        """The chunks of object ``nuid`` up to ``size`` bytes (one more shows a bad size)."""
        seq, out = 1, bytearray()
        while len(out) <= size:
            stored = await self.get({"seq": seq, "next_by_subj": self.chunks_subject(nuid)})
            if stored is None:
                break
            out += self.payload(stored)
            seq = int(stored.get("seq", seq)) + 1
        return bytes(out[: size + 1])

    async def hash_chunks(self, nuid: str, most: int) -> tuple[str, int, int, str]:
        """(hex SHA-256, size, chunk count, the object store's digest) of upload ``nuid``,
        read one chunk at a time and never held whole (``bundle_too_large`` past ``most``)."""
        seq, size, count, sha = 1, 0, 0, hashlib.sha256()
        while True:
            stored = await self.get({"seq": seq, "next_by_subj": self.chunks_subject(nuid)})
            if stored is None:
                raw = sha.digest()
                return (raw.hex(), size, count,
                        "SHA-256=" + base64.urlsafe_b64encode(raw).decode())
            piece = self.payload(stored)
            sha.update(piece)
            size, count = size + len(piece), count + 1
            if size > most:
                await self.drop(nuid)
                raise Rejected("bundle_too_large", f"upload {nuid} is over {most} bytes")
            seq = int(stored.get("seq", seq)) + 1

    async def chunk(self, nuid: str, index: int, data: bytes) -> None:
        """Store one chunk (a resent one is kept once: its Nats-Msg-Id)."""
        self._acked(await self._send(self.chunks_subject(nuid), data,
                                     {"Nats-Msg-Id": f"{nuid}.{index}"}))

    async def name(self, name: str, nuid: str, size: int, chunks: int, digest: str) -> None:
        """Write the object's meta (replacing any earlier one of that name)."""
        meta = {"name": name, "bucket": bucket(self.account), "nuid": nuid, "size": size,
                "chunks": chunks, "digest": digest, "options": {"max_chunk_size": CHUNK}}
        self._acked(await self._send(_meta_subject(self.account, name),
                                     json.dumps(meta).encode(), {"Nats-Rollup": "sub"}))

    async def drop(self, nuid: str) -> None:
        """Roll an upload's chunks up into one empty message (no purge right needed)."""
        with contextlib.suppress(Rejected):
            await self._send(self.chunks_subject(nuid), b"", {"Nats-Rollup": "sub"})

    def _acked(self, body: dict[str, Any]) -> None:
        error = body.get("error")
        if error:
            code = "bundle_too_large" if error.get("err_code") in (10077, 10054, 10028) \
                else "unavailable"
            raise Rejected(code, f"bucket {bucket(self.account)}: "
                           f"{error.get('description', error)}")

    async def close(self) -> None:
        """Nothing left to release (kept so callers need not know)."""


__all__ = ["NoBucket", "Store", "ensure_bucket", "fetch_bytes", "get_bytes", "pull", "push",
           "push_bytes", "put_bytes"]
