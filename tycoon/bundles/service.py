"""The store serves bundles: ``bundle.put`` / ``bundle.get`` on ``tycoon.bundle.<op>``,
queue group ``bundles`` (``tycoon store serve``; docs/jobs.md, "Bundles"; docs/security.md,
"Bundles"). It runs apart from the bank, so big pushes never slow payments.

Nobody else holds a JetStream right on the buckets. A JetStream answer goes to whatever
reply subject the request names, so any key holding one can steer the server's answers
(publish acks, message gets) into any stream — the bank's SETTLEMENTS included (tested:
1,000 junk messages in a blink, from a user; a host could do the same). The store replies
only to the signer's own inbox.

Who reaches which bucket: a key its own; a host an account's only with ``proof``, the
account's own signed ``host.exec`` to that very host (its subject names the host) — naming
the bundle for a get, asking for ``collect`` for a put. A put's last chunk names the
digest: the chunks are read back one at a time, hashed, and the object is named only if
they hash to it (the store never holds a whole bundle). The bytes a host stored per proof
live in the store's SQLite file (tycoon.bundles.state): a restart resets nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from tycoon.bundles.client import NoBucket, Store
from tycoon.bundles.names import request
from tycoon.bundles.pack import LIMITS, Limits, check_digest
from tycoon.bundles.state import StoreState
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import subject_id
from tycoon.bus.ratelimit import RateLimit
from tycoon.bus.service import Endpoint, Service
from tycoon.bus.verify import verify_stored
from tycoon.errors import Rejected
from tycoon.messages.bundles import BundleGet, BundleGetReply, BundlePut, BundlePutReply
from tycoon.messages.jobs import HostExec

UPLOAD_RE = re.compile(r"^[A-Za-z0-9]{8,22}$")
RATE = RateLimit(rate=400.0, burst=800, max_pending=32, parallel=1)
"""Per key: 400 chunks/s (50 MiB/s), one at a time (a push's chunks arrive in order)."""


def bucket_of(msg: Message, account: str | None, proof: bytes | None,
              digest: str | None = None) -> str:
    """The account id whose bucket ``msg`` may use: the signer's own, or (a host) the
    account whose signed ``host.exec`` to that host is the ``proof`` — naming ``digest``
    (a get) or asking for outputs (a put, ``digest`` None). ``forbidden`` otherwise."""
    if account is None or account == msg.sender:
        return subject_id(msg.sender)
    if proof is None:
        raise Rejected("forbidden", "another account's bundles: only a host, with the "
                       "account's signed host.exec to it as proof")
    try:  # signed by the account for this very host's exec subject, a host.exec
        exec_ = verify_stored(proof, subjects.host_op(subject_id(msg.sender), "exec"),
                              "host.exec")
        asked = HostExec.from_body(exec_.body)
    except Rejected as error:
        raise Rejected("forbidden", f"the proof is not a host.exec to this host: "
                       f"{error.message}") from None
    if exec_.sender != account:
        raise Rejected("forbidden", "the proof is another account's host.exec")
    if digest is not None and asked.bundle != digest:
        raise Rejected("forbidden", "the account's host.exec names another bundle")
    if digest is None and not asked.collect:
        raise Rejected("forbidden", "the account's host.exec collects nothing")
    return subject_id(account)


class BundleService:
    """``bundle.put`` and ``bundle.get``, run by the store (tycoon.bundles.launch).

    ``state``: the store's SQLite file (proof budgets; an in-memory one if None);
    ``make_bucket``: makes an account's missing bucket at its first put (None: never)."""

    def __init__(self, bus: Bus, *, limits: Limits = LIMITS,
                 rate_limit: RateLimit | None = RATE, state: StoreState | None = None,
                 make_bucket: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.bus, self.limits = bus, limits
        self.state = state if state is not None else StoreState(":memory:")
        self.make_bucket = make_bucket
        self.service = Service(
            bus, "tycoon-store",
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
        account = bucket_of(msg, body.account, body.proof)
        store = Store(self.bus.nc, account)
        if body.account is not None and body.account != msg.sender and body.data:
            # one job's results, one bundle's worth: re-used, a proof would fill the
            # account's bucket (where nothing expires); durable across restarts
            self.state.spend(body.proof or b"", (body.upload, body.index), len(body.data),
                             self.limits.bundle)
        try:
            if body.data:
                try:
                    await self._chunk(store, account, body.upload, body.index, body.data)
                except Rejected:
                    await store.drop(body.upload)  # e.g. the bucket is full: keep nothing
                    raise
            if digest is not None:
                await self._commit(store, body.upload, digest)
        finally:
            await store.close()
        return BundlePutReply(body.upload, body.index, digest).to_body()

    async def _chunk(self, store: Store, account: str, upload: str, index: int,
                     data: bytes) -> None:
        """Store one chunk; the account's first makes its bucket (tycoon.bundles.buckets)."""
        try:
            await store.chunk(upload, index, data)
        except NoBucket:
            if self.make_bucket is None:
                raise
            await self.make_bucket(account)
            await store.chunk(upload, index, data)

    async def _commit(self, store: Store, upload: str, digest: str) -> None:
        """Name the object only if its chunks, read back one by one, hash to ``digest``."""
        got, size, count, nats = await store.hash_chunks(upload, self.limits.bundle)
        if got != digest:
            await store.drop(upload)
            raise Rejected("bad_digest", f"the chunks of upload {upload} hash to "
                           f"{got[:12]}…, not {digest[:12]}…")
        await store.name(digest, upload, size, count, nats)

    async def _get(self, msg: Message) -> dict[str, Any]:
        body = BundleGet.from_body(msg.body)
        digest = check_digest(body.digest)
        store = Store(self.bus.nc, bucket_of(msg, body.account, body.proof, digest))
        try:
            meta = await store.meta(digest)
            if meta is None:
                raise Rejected("unknown_bundle", f"no bundle {digest[:12]}… in the bucket")
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
