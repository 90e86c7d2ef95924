"""The bank makes each account's bundle bucket when it opens the account, and serves
``bundle.put`` / ``bundle.get`` (tycoon.bundles.service; docs/jobs.md, "Bundles"): no other
key holds a JetStream right on buckets.

:class:`BucketKeeper` is the bank's hook: making a bucket is best effort (a bank without
JetStream opens accounts as before; the bucket is made at the next ``open``, which agents
send at every start and ``tycoon bank open`` repeats harmlessly), quick (one bounded
request), and done once per account per process; ``start``/``stop`` run the service.
"""

from __future__ import annotations

from typing import Any

from nats.js.errors import APIError

from tycoon.bundles.client import BUCKET_BYTES, bucket_config
from tycoon.bundles.service import BundleService
from tycoon.bus.keys import subject_id
from tycoon.log import get_logger

ALREADY = 10058
"""JetStream: a stream of that name exists (with another config: the operator changed it)."""


class BucketKeeper:
    """``await keeper(account public key)``: make the account's bucket if missing."""

    def __init__(self, bus: Any, *, max_bytes: int = BUCKET_BYTES, replicas: int = 1,
                 timeout: float = 2.0, serve: bool = True) -> None:
        """``bus``: the bank's (a bare connection only makes buckets, serves nothing)."""
        self.nc = bus.nc if hasattr(bus, "nc") else bus
        self.max_bytes, self.replicas, self.timeout = max_bytes, replicas, timeout
        self.service = BundleService(bus) if serve and hasattr(bus, "nc") else None
        self.made: set[str] = set()
        self.log = get_logger("bank.buckets")

    async def start(self) -> None:
        if self.service is not None:
            await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()

    async def __call__(self, account_key: str) -> None:
        account = subject_id(account_key)
        if account in self.made:
            return
        config = bucket_config(account, max_bytes=self.max_bytes, replicas=self.replicas)
        try:  # STREAM.CREATE only: the one JetStream right this needs (no info, no update)
            await self.nc.jetstream(timeout=self.timeout).add_stream(config)
        except APIError as error:
            if error.err_code != ALREADY:
                self.log.warning("bundle bucket not made", account=account,
                                 error=error.description or str(error))
                return
        except Exception as exc:  # a timeout; no responders: JetStream is off
            self.log.warning("bundle bucket not made", account=account, error=repr(exc))
            return
        self.made.add(account)
