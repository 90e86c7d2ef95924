"""Bundles in NATS's own JetStream object store: one bucket per account, objects named by
their SHA-256 (docs/jobs.md, "Bundles"; permissions in docs/security.md).

The stable API (the agent and ``tycoon-pub`` use it)::

    digest = await push(bus, path)          # pack DIR|FILE, upload, return the hex digest
    dest = await pull(bus, digest, dest)    # fetch, check the digest, unpack safely

The bucket ``bundles-<account id>`` (stream ``OBJ_bundles-<account id>``) is made, with its
size limit, by a privileged key (:func:`ensure_bucket`: the operator, or the bank when it
opens the account); a user never creates, changes, purges or deletes a stream. Objects are
stored in the object store's own layout (chunks on ``$O.<bucket>.C.<nuid>``, the meta on
``$O.<bucket>.M.<base64 name>``, so ``nats object get`` reads them) and read back with
``$JS.API.STREAM.MSG.GET`` one message at a time: no consumer, no direct get (a direct
get's answer, steered by a reply subject, is taken by the server as an API request: it
purged and deleted streams in our tests), no other API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from tycoon.bundles.names import bucket, msg_get, stream
from tycoon.bundles.pack import LIMITS, Limits, check_digest, digest_of, pack, unpack
from tycoon.bus.keys import subject_id
from tycoon.errors import Rejected

CHUNK = 128 * 1024
"""Bytes per chunk message (the object store's default)."""
BUCKET_BYTES = 256 << 20
"""The default size limit of one account's bucket."""
WINDOW = 16
"""Chunks published before waiting for their acknowledgements."""
TIMEOUT = 5.0


def _nc(nc_or_bus: Any) -> Client:
    return nc_or_bus.nc if hasattr(nc_or_bus, "nc") else nc_or_bus


def _own(nc_or_bus: Any, account: str | None) -> str:
    if account is not None:
        return account
    identity = getattr(nc_or_bus, "identity", None)
    if identity is None:
        raise ValueError("pass account= with a bare NATS connection")
    return subject_id(identity.public_key)


# ------------------------------------------------------------------ the stable API


async def push(nc_or_bus: Any, path: Path | str, *, account: str | None = None,
               limits: Limits = LIMITS) -> str:
    """Pack ``path`` (a directory or a file) and store it in the account's bucket (the
    signer's own unless ``account``); its hex SHA-256 digest. Storing twice costs nothing."""
    data = await asyncio.to_thread(pack, Path(path), limits)
    return await put_bytes(nc_or_bus, data, account=account)


async def pull(nc_or_bus: Any, digest: str, dest: Path | str, *, account: str | None = None,
               limits: Limits = LIMITS) -> Path:
    """Fetch bundle ``digest`` from the account's bucket, check it hashes to its name, and
    unpack it under ``dest`` (refusing anything unsafe: tycoon.bundles.pack); ``dest``."""
    data = await get_bytes(nc_or_bus, digest, account=account, limits=limits)
    await asyncio.to_thread(unpack, data, Path(dest), limits)
    return Path(dest)


# ------------------------------------------------------------------ bytes in, bytes out


async def put_bytes(nc_or_bus: Any, data: bytes, *, account: str | None = None) -> str:
    """Store already packed bytes under their digest; the digest."""
    account = _own(nc_or_bus, account)
    digest = digest_of(data)
    store = _Store(_nc(nc_or_bus), account)
    try:
        meta = await store.meta(digest)
        if meta is not None and meta.get("digest") == _nats_digest(data) \
                and meta.get("size") == len(data):
            return digest  # already there, intact as far as its meta says
        await store.put(digest, data)
    finally:
        await store.close()
    return digest


async def get_bytes(nc_or_bus: Any, digest: str, *, account: str | None = None,
                    limits: Limits = LIMITS) -> bytes:
    """The bytes of bundle ``digest``: ``unknown_bundle`` if absent, ``bad_digest`` if they
    do not hash to it, ``bundle_too_large`` over the limit (checked before reading)."""
    check_digest(digest)
    store = _Store(_nc(nc_or_bus), _own(nc_or_bus, account))
    try:
        meta = await store.meta(digest)
        if meta is None:
            raise Rejected("unknown_bundle", f"no bundle {digest[:12]}… in "
                           f"{bucket(store.account)}")
        size, nuid = meta.get("size"), meta.get("nuid")
        if not isinstance(size, int) or size < 0 or not isinstance(nuid, str) or not nuid:
            raise Rejected("bad_digest", f"bundle {digest[:12]}…: its meta is not valid")
        if size > limits.bundle:
            raise Rejected("bundle_too_large", f"bundle {digest[:12]}… is {size} bytes, over "
                           f"{limits.bundle}")
        data = await store.chunks(nuid, size)
    finally:
        await store.close()
    if digest_of(data) != digest:
        raise Rejected("bad_digest", f"bundle {digest[:12]}…: its bytes hash to "
                       f"{digest_of(data)[:12]}…")
    return data


async def ensure_bucket(nc_or_bus: Any, account: str, *, max_bytes: int = BUCKET_BYTES,
                        replicas: int = 1) -> str:
    """Create the account's bucket if missing (a privileged key: the operator's JetStream
    capability; the bank uses :class:`tycoon.bundles.buckets.BucketKeeper`); its stream
    name. Users cannot: they hold no STREAM.CREATE right."""
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


def _nats_digest(data: bytes) -> str:
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


def _meta_subject(account: str, name: str) -> str:
    return f"$O.{bucket(account)}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


# ------------------------------------------------------------------ the wire


@dataclass
class _Store:
    """Requests of one operation on one bucket, answered on one inbox subscription."""

    nc: Client
    account: str

    def __post_init__(self) -> None:
        self.inbox = self.nc.new_inbox()
        self.sub: Any = None
        self.waiting: dict[str, asyncio.Future[Any]] = {}
        self.n = 0

    async def _on(self, msg: Any) -> None:
        future = self.waiting.pop(msg.subject, None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def send(self, subject: str, payload: bytes,
                   headers: dict[str, str] | None = None) -> asyncio.Future[Any]:
        if self.sub is None:
            self.sub = await self.nc.subscribe(f"{self.inbox}.*", cb=self._on)
        self.n += 1
        reply = f"{self.inbox}.{self.n}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[reply] = future
        await self.nc.publish(subject, payload, reply=reply, headers=headers)
        return future

    async def answer(self, future: asyncio.Future[Any], what: str) -> dict[str, Any]:
        try:
            msg = await asyncio.wait_for(future, TIMEOUT)
        except TimeoutError:
            raise Rejected("unavailable", f"no answer from JetStream ({what}): no bucket "
                           f"{bucket(self.account)}, no right to it, or JetStream is off") from None
        if msg.headers and str(msg.headers.get("Status", "")) == "503":
            raise Rejected("unavailable", f"JetStream is not running ({what})")
        try:
            body = json.loads(msg.data)
        except ValueError:
            raise Rejected("unavailable", f"JetStream answered {what} with junk") from None
        return body if isinstance(body, dict) else {}

    async def get(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """One stored message (``$JS.API.STREAM.MSG.GET``), or None if there is none."""
        api = msg_get(self.account)
        body = await self.answer(await self.send(api, json.dumps(request).encode()), "get")
        error = body.get("error")
        if error:
            if error.get("err_code") == 10037:  # no message found
                return None
            if error.get("err_code") == 10059:
                raise Rejected("unknown_bundle", f"no bucket {bucket(self.account)}: the "
                               "bank or the operator makes it when the account opens")
            raise Rejected("unavailable", f"JetStream: {error.get('description', error)}")
        message = body.get("message")
        return message if isinstance(message, dict) else None

    async def meta(self, name: str) -> dict[str, Any] | None:
        stored = await self.get({"last_by_subj": _meta_subject(self.account, name)})
        if stored is None:
            return None
        try:
            meta = json.loads(base64.b64decode(stored.get("data", "")))
        except ValueError:
            return None  # junk on the meta subject (see docs/security.md): as if absent
        if not isinstance(meta, dict) or meta.get("name") != name or meta.get("deleted"):
            return None
        return meta

    async def chunks(self, nuid: str, size: int) -> bytes:
        subject, seq, out = f"$O.{bucket(self.account)}.C.{nuid}", 1, bytearray()
        while len(out) < size:
            stored = await self.get({"seq": seq, "next_by_subj": subject})
            if stored is None:
                break
            out += base64.b64decode(stored.get("data", ""))
            seq = int(stored.get("seq", seq)) + 1
        return bytes(out[: size + 1])  # one byte over: a wrong size shows as a bad digest

    async def put(self, name: str, data: bytes) -> None:
        nuid = self.nc._nuid.next().decode()
        subject = f"$O.{bucket(self.account)}.C.{nuid}"
        pending: list[asyncio.Future[Any]] = []
        chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
        try:
            for chunk in chunks:
                pending.append(await self.send(subject, chunk))
                if len(pending) >= WINDOW:
                    self._acked(await self.answer(pending.pop(0), "put"))
            for future in pending:
                self._acked(await self.answer(future, "put"))
        except Rejected:  # roll the chunks sent up into one empty message (no purge right)
            with contextlib.suppress(Rejected):
                await self.answer(await self.send(subject, b"", {"Nats-Rollup": "sub"}), "put")
            raise
        meta = {"name": name, "bucket": bucket(self.account), "nuid": nuid, "size": len(data),
                "chunks": len(chunks), "digest": _nats_digest(data),
                "options": {"max_chunk_size": CHUNK}}
        self._acked(await self.answer(await self.send(
            _meta_subject(self.account, name), json.dumps(meta).encode(),
            headers={"Nats-Rollup": "sub"}), "put"))

    def _acked(self, body: dict[str, Any]) -> None:
        error = body.get("error")
        if error:
            code = "bundle_too_large" if error.get("err_code") in (10077, 10054, 10028) \
                else "unavailable"
            raise Rejected(code, f"bucket {bucket(self.account)}: "
                           f"{error.get('description', error)}")

    async def close(self) -> None:
        for future in self.waiting.values():
            future.cancel()
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
