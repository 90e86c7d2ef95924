"""The store makes an account's bundle bucket on the account's first put (docs/jobs.md,
"Bundles"): no other key holds a JetStream right on buckets.

Who gets a bucket: any key that can sign a put, i.e. any principal the NATS server admits
(nobody else connects at all). A bucket costs storage, so each is capped (``max_bytes``,
new objects refused when full), the store makes at most ``max_buckets`` of them (counted in
its SQLite file across restarts) and at most ``rate`` per second for all keys together
(a broker signs for job keys it makes, so admission alone does not bound the keys).
"""

from __future__ import annotations

import time
from typing import Any

from nats.js.errors import APIError

from tycoon.bundles.client import BUCKET_BYTES, bucket_config
from tycoon.bundles.state import StoreState
from tycoon.bus.ratelimit import Bucket, retry_text
from tycoon.errors import Rejected
from tycoon.log import get_logger

ALREADY = 10058
"""JetStream: a stream of that name exists (with another config: the operator changed it)."""
MAX_BUCKETS = 4096
"""Buckets one store makes at most by default (× ``BUCKET_BYTES``: size the disk for it)."""
MAKE_RATE, MAKE_BURST = 1.0, 32
"""Buckets made per second for all keys together, and at once before the rate applies."""


class BucketMaker:
    """``await maker(account id)``: make the account's bucket if missing, or refuse."""

    def __init__(self, nc: Any, state: StoreState, *, max_bytes: int = BUCKET_BYTES,
                 replicas: int = 1, max_buckets: int = MAX_BUCKETS, rate: float = MAKE_RATE,
                 burst: int = MAKE_BURST, timeout: float = 5.0) -> None:
        self.nc, self.state = nc, state
        self.max_bytes, self.replicas, self.timeout = max_bytes, replicas, timeout
        self.max_buckets = max_buckets
        self.budget = Bucket(rate, burst) if rate > 0 else None
        self.log = get_logger("store.buckets")

    async def __call__(self, account: str) -> None:
        known = self.state.has_bucket(account)  # made before (the operator may have deleted it)
        if not known:
            if self.state.buckets() >= self.max_buckets:
                raise Rejected("forbidden", f"this store holds its maximum of "
                               f"{self.max_buckets} buckets: ask the operator")
            wait = self.budget.take(time.monotonic_ns()) if self.budget else 0
            if wait:
                raise Rejected("rate_limited", "the store makes at most "
                               f"{self.budget.rate:g} buckets/s; {retry_text(wait)}")
        config = bucket_config(account, max_bytes=self.max_bytes, replicas=self.replicas)
        try:  # STREAM.CREATE only: the one JetStream right this needs (no info, no update)
            await self.nc.jetstream(timeout=self.timeout).add_stream(config)
        except APIError as error:
            if error.err_code != ALREADY:
                raise Rejected("unavailable", "the bucket could not be made: "
                               f"{error.description or error}") from None
        except Exception as exc:  # a timeout; no responders: JetStream is off
            raise Rejected("unavailable", f"the bucket could not be made: {exc!r}") from None
        self.state.made_bucket(account)
        self.log.info("bucket made", account=account, max_bytes=self.max_bytes)
