"""The hosts serve bundles: ``bundle.put`` / ``bundle.get`` on ``tycoon.bundle.<op>``,
queue group ``bundles`` (any host running jobs answers), always in **the signer's own
bucket** (docs/jobs.md, "Bundles"; docs/security.md, "Bundles").

Users and agents hold no JetStream right at all: a JetStream answer goes to whatever reply
subject the request names, so with any JetStream right a user steers the server's answers
(publish acks, message gets) into any stream, the bank's SETTLEMENTS included (tested:
1,000 junk messages in a blink). The hosts, which hold those rights, reply only to the
signer's own inbox (tycoon.bus.service). A put's last chunk names the digest: the host
reads every chunk back and writes the object's meta only if they hash to it.
"""

from __future__ import annotations

import re
from typing import Any

from tycoon.bundles.client import Store, nats_digest
from tycoon.bundles.names import request
from tycoon.bundles.pack import LIMITS, Limits, check_digest, digest_of
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import subject_id
from tycoon.bus.ratelimit import RateLimit
from tycoon.bus.service import Endpoint, Service
from tycoon.errors import Rejected
from tycoon.messages.bundles import BundleGet, BundleGetReply, BundlePut, BundlePutReply

UPLOAD_RE = re.compile(r"^[A-Za-z0-9]{8,22}$")
RATE = RateLimit(rate=400.0, burst=800, max_pending=32, parallel=1)
"""Per key: 400 chunks/s (50 MiB/s), one at a time (a push's chunks arrive in order)."""


class BundleService:
    """``bundle.put`` and ``bundle.get`` for the signer's own bucket."""

    def __init__(self, bus: Bus, *, limits: Limits = LIMITS,
                 rate_limit: RateLimit | None = RATE) -> None:
        self.bus, self.limits = bus, limits
        self.service = Service(
            bus, "tycoon-bundles",
            [Endpoint(request("put"), "bundle.put", self._put),
             Endpoint(request("get"), "bundle.get", self._get)],
            queue="bundles", description="Tycoon bundles: code and results of jobs",
            rate_limit=rate_limit)

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()

    async def _put(self, msg: Message) -> dict[str, Any]:
        body = BundlePut.from_body(msg.body)
        if not UPLOAD_RE.match(body.upload) or not 0 <= body.index < 1 << 20:
            raise Rejected("malformed", "upload: 8-22 letters or digits; index: 0..2^20")
        digest = check_digest(body.digest) if body.digest is not None else None
        store = Store(self.bus.nc, subject_id(msg.sender))
        try:
            if body.data:
                try:
                    await store.chunk(body.upload, body.index, body.data)
                except Rejected:
                    await store.drop(body.upload)  # e.g. the bucket is full: keep nothing
                    raise
            if digest is not None:
                await self._commit(store, body.upload, digest)
        finally:
            await store.close()
        return BundlePutReply(body.upload, body.index, digest).to_body()

    async def _commit(self, store: Store, upload: str, digest: str) -> None:
        """Name the object only if its chunks, read back, hash to ``digest``."""
        data, count = await store.read_chunks(upload, self.limits.bundle)
        if digest_of(data) != digest:
            await store.drop(upload)
            raise Rejected("bad_digest", f"the chunks of upload {upload} hash to "
                           f"{digest_of(data)[:12]}…, not {digest[:12]}…")
        await store.name(digest, upload, len(data), count, nats_digest(data))

    async def _get(self, msg: Message) -> dict[str, Any]:
        body = BundleGet.from_body(msg.body)
        digest = check_digest(body.digest)
        store = Store(self.bus.nc, subject_id(msg.sender))
        try:
            meta = await store.meta(digest)
            if meta is None:
                raise Rejected("unknown_bundle", f"no bundle {digest[:12]}… in your bucket")
            size, chunks, nuid = meta["size"], meta["chunks"], meta["nuid"]
            if size == 0:
                return BundleGetReply(0, 0, b"", 0).to_body()
            stored = await store.get({"seq": (body.after or 0) + 1,
                                      "next_by_subj": store.chunks_subject(nuid)})
        finally:
            await store.close()
        if stored is None:
            raise Rejected("unknown_bundle", f"bundle {digest[:12]}…: no chunk after "
                           f"{body.after}")
        return BundleGetReply(size, chunks, store.payload(stored), int(stored["seq"])).to_body()
