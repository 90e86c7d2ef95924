"""The two streams, their limits and durability, and idempotent creation.

Creation is idempotent: :func:`ensure_stream` creates a missing stream and leaves an
existing one alone (an operator may have raised its replicas or limits on purpose),
unless asked to ``update`` it. Each writer ensures its own stream at start (the bank
``SETTLEMENTS``, the SLS ``PRICES``); ``tycoon streams ensure`` does both by hand, e.g.
with ``--replicas 3`` on a cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, StorageType, StoreCompression, StreamConfig, StreamInfo

from tycoon.bus import subjects
from tycoon.bus.keys import subject_id
from tycoon.errors import Rejected

PRICES = "PRICES"
SETTLEMENTS = "SETTLEMENTS"
SETTLEMENTS_ALL = subjects.SETTLEMENTS_ALL
MSG_ID = "Nats-Msg-Id"
GiB = 1 << 30


def settlement_subject(payer: str, payee: str) -> str:
    """``tycoon.settlement.<payer id>.<payee id>``: one account's settlements filter cheaply."""
    return subjects.settlement(subject_id(payer), subject_id(payee))


@dataclass(frozen=True)
class StreamSpec:
    """What Tycoon asks of one stream (a subset of JetStream's stream config)."""

    name: str
    subjects: tuple[str, ...]
    description: str
    max_age_s: float = 0.0
    """0 = no age limit."""
    max_bytes: int = -1
    max_msgs_per_subject: int = -1
    duplicate_window_s: float = 120.0
    replicas: int = 1
    compression: bool = False

    def to_config(self) -> StreamConfig:
        """The nats-py stream config (file storage, discard old)."""
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            max_msgs_per_subject=self.max_msgs_per_subject,
            duplicate_window=self.duplicate_window_s,
            num_replicas=self.replicas,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            compression=StoreCompression.S2 if self.compression else StoreCompression.NONE,
            allow_direct=True,
        )

    def with_(self, **changes: Any) -> StreamSpec:
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRICES_SPEC = StreamSpec(
    name=PRICES,
    subjects=(subjects.PRICES_ALL,),
    description="Tycoon: every signed price update (SLS warm start, tycoon history)",
    max_age_s=86_400.0,
    max_bytes=1 * GiB,
    max_msgs_per_subject=50_000,
    duplicate_window_s=60.0,
    compression=True,
)
"""A day of prices, at most 1 GiB in all and 50,000 updates per host (the first limit
reached wins; oldest messages go first)."""

SETTLEMENTS_SPEC = StreamSpec(
    name=SETTLEMENTS,
    subjects=(SETTLEMENTS_ALL,),
    description="Tycoon: one signed receipt per settled transfer (Nats-Msg-Id = transfer id)",
    max_age_s=0.0,
    max_bytes=2 * GiB,
    duplicate_window_s=120.0,
)
"""No age limit, at most 2 GiB (about 4.5 million receipts); a retry of the same transfer
id within the 2-minute duplicate window is stored once (the bank also checks the tail of
the stream before it re-sends, so a longer outage stores no duplicate either)."""

SPECS = {PRICES: PRICES_SPEC, SETTLEMENTS: SETTLEMENTS_SPEC}

STORE_HEADROOM = 4
"""JetStream's file store gets the streams' limits plus a quarter (1/STORE_HEADROOM)."""


def file_store_needed(specs: dict[str, StreamSpec] | None = None) -> int:
    """Bytes of ``max_file_store`` every node needs: each stream reserves its ``max_bytes``
    on each node holding a replica (every node, with replicas = nodes), plus headroom.
    Less and JetStream refuses the stream: 'insufficient storage'."""
    total = sum(max(s.max_bytes, 0) for s in (specs or SPECS).values())
    return total + total // STORE_HEADROOM


def js_unavailable(exc: BaseException) -> Rejected:
    """The one refusal for 'JetStream did not answer' (down, disabled, not permitted)."""
    return Rejected("unavailable", f"JetStream unavailable: {type(exc).__name__} {exc}".strip())


JS_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    nats.js.errors.Error,
    TimeoutError,
    ConnectionError,
    OSError,
)
"""What a JetStream call raises when the server, the stream or the route is not there."""


RECONCILED = {"replicas": "num_replicas", "max_bytes": "max_bytes", "max_age_s": "max_age",
              "max_msgs_per_subject": "max_msgs_per_subject",
              "duplicate_window_s": "duplicate_window"}
"""Spec fields ``streams ensure`` reconciles on an existing stream, by JetStream name."""


def drift(config: StreamConfig, spec: StreamSpec, fields: Iterable[str]) -> dict[str, Any]:
    """The ``fields`` of ``spec`` an existing stream's ``config`` differs in (JetStream
    names and the wanted values)."""
    out = {}
    for name in fields:
        js_name = RECONCILED[name]
        want = getattr(spec, name)
        if getattr(config, js_name) != want:
            out[js_name] = want
    return out


TRANSIENT = ("peer offline", "temporarily unavailable")
"""JetStream refusals of a cluster still forming (a node's JetStream not yet joined, no
meta leader yet): worth asking again. 'insufficient storage' is not among them."""


def is_transient(exc: BaseException) -> bool:
    """True for a refusal that a cluster still coming up gives (see :data:`TRANSIENT`)."""
    return isinstance(exc, nats.js.errors.APIError) and any(
        t in str(getattr(exc, "description", "") or "") for t in TRANSIENT)


async def ensure_stream(js: Any, spec: StreamSpec, *, update: bool = False,
                        reconcile: Iterable[str] = (), settle_s: float = 20.0) -> StreamInfo:
    """Create the stream if missing; return its info. An existing stream is left alone
    (an operator may have raised its limits on purpose) except for the ``reconcile``
    fields (see :data:`RECONCILED`), which are brought to ``spec``'s values (e.g. replicas
    1 -> 3 on a cluster); ``update`` applies the whole spec. A cluster still forming
    (:func:`is_transient`) is asked again for up to ``settle_s`` seconds.

    Raises ``Rejected("unavailable")`` when JetStream does not answer.
    """
    deadline = asyncio.get_running_loop().time() + settle_s
    while True:
        try:
            return await _ensure_once(js, spec, update=update, reconcile=reconcile)
        except Rejected as error:
            cause = error.__cause__
            if cause is None or not is_transient(cause) or \
                    asyncio.get_running_loop().time() >= deadline:
                raise
        await asyncio.sleep(0.5)


async def _ensure_once(js: Any, spec: StreamSpec, *, update: bool,
                       reconcile: Iterable[str]) -> StreamInfo:
    try:
        try:
            info = await js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            return await js.add_stream(spec.to_config())
        if update:
            return await js.update_stream(spec.to_config())
        changes = drift(info.config, spec, reconcile)
        if changes:
            return await js.update_stream(dataclasses.replace(info.config, **changes))
        return info
    except JS_ERRORS as exc:
        raise js_unavailable(exc) from exc


def describe(info: StreamInfo) -> dict[str, Any]:
    """The facts an operator wants of one stream, JSON-ready."""
    cfg, state = info.config, info.state
    return {
        "name": cfg.name,
        "subjects": list(cfg.subjects or []),
        "messages": state.messages,
        "bytes": state.bytes,
        "first_seq": state.first_seq,
        "last_seq": state.last_seq,
        "max_age_s": cfg.max_age,
        "max_bytes": cfg.max_bytes,
        "max_msgs_per_subject": cfg.max_msgs_per_subject,
        "duplicate_window_s": cfg.duplicate_window,
        "replicas": cfg.num_replicas,
        "storage": str(getattr(cfg.storage, "value", cfg.storage)),
        "cluster": None if info.cluster is None else {
            "name": info.cluster.name, "leader": info.cluster.leader,
            "replicas": [{"name": p.name, "current": bool(p.current),
                          "offline": bool(p.offline), "lag": p.lag or 0,
                          "active_s": p.active or 0}
                         for p in info.cluster.replicas or []],
        },
    }
