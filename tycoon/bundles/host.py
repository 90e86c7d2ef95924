"""A host's side of bundles: fetch and unpack a job's code before it starts, collect its
results when it ends (the thin adapter between :mod:`tycoon.auctioneer.jobhost` and the
object store; docs/jobs.md, "Bundles").

The host fetches and stores through the store's bundle service, with the account's signed
``host.exec`` as proof (it holds no JetStream right). It runs as root and writes into a
sandbox a job of the same account may be changing:
every path below the sandbox is reached through directory descriptors without following a
link, files are made anew (never written through an existing inode) and given to the job's
uid through their own descriptor; results are read the same way, only files the job owns.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tycoon.bundles.client import fetch_bytes, push_bytes
from tycoon.bundles.collect import collect
from tycoon.bundles.pack import LIMITS as DEFAULT_LIMITS
from tycoon.bundles.pack import Limits
from tycoon.bundles.unpack import check, unpack
from tycoon.errors import Rejected

LIMITS: Limits = DEFAULT_LIMITS
"""What a host accepts in one bundle and collects from one job."""


async def fetch(bus: Any, account: str, digest: str, proof: bytes,
                limits: Limits | None = None) -> bytes:
    """Bundle ``digest`` of the account (public key; ``proof``: its signed ``host.exec``),
    checked whole (digest, paths, links, sizes) before anything is written or started:
    ``unknown_bundle``, ``bad_digest``, ``bundle_unsafe``, ``bundle_too_large``."""
    limits = limits or LIMITS
    data = await fetch_bytes(bus, digest, limits=limits, account=account, proof=proof)
    check(data, limits)
    return data


async def unpack_into(data: bytes, base: Path, dest: Path, uid: int | None,
                      limits: Limits | None = None) -> list[str]:
    """Unpack a fetched bundle into ``dest`` (below the sandbox ``base``), owned by ``uid``."""
    return await asyncio.to_thread(unpack, data, dest, limits or LIMITS, owner=uid, base=base)


async def collect_results(bus: Any, account: str, proof: bytes, base: Path, cwd: Path,
                          paths: tuple[str, ...], uid: int | None,
                          limits: Limits | None = None) -> tuple[str | None, str | None]:
    """Pack the job's named outputs and store them in the account's bucket (``proof``: its
    signed ``host.exec``): (their digest, None), (None, None) when none exists, or (None,
    the refusal's code)."""
    try:
        data = await asyncio.to_thread(collect, base, cwd, list(paths), limits or LIMITS,
                                       owner=uid)
        if data is None:
            return None, None
        return await push_bytes(bus, data, account=account, proof=proof), None
    except Rejected as error:
        return None, error.code
