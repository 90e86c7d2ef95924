"""The price update body (kind ``price``, on ``tycoon.price.<host>``), parsed strictly.

    {"host": str, "seq": int, "heartbeat_s": float, "name": str, "driver": str,
     "resources": {"cpu"|"memory"|"disk"|"net": {"capacity": int, "price": float,
                   "unit_price": float, "utilization": float, "bidders": int}}}

:func:`parse_update` is the SLS hot path (plain tuples, one pass, no allocation per
field); :class:`PriceUpdate` is the typed form for everyone else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tycoon.bus.schema import check_name
from tycoon.errors import Rejected
from tycoon.messages.base import Body, meta
from tycoon.resources import RESOURCES

MAX_HEARTBEAT_S = 86_400.0
MIN_HEARTBEAT_S = 0.01
MAX_INT = 2**63
MAX_PRICE = float(2**63)
"""Prices are rates in micro-credits/s: above all the money there can be (int64) is nonsense,
and bounding them keeps every statistic finite."""
_RESOURCE_SET = frozenset(RESOURCES)

OfferTuple = tuple[int, float, float, int]
"""(capacity, price, utilization, bidders) of one resource."""
ParsedUpdate = tuple[str, int, float, str, str, tuple[OfferTuple | None, ...]]
"""(host, seq, heartbeat_s, name, driver, offers in RESOURCES order)."""


def _bad(what: str, rule: str) -> Rejected:
    return Rejected("malformed", f"price update: {what} {rule}")


def _nonneg(value: Any, what: str) -> float:
    cls = value.__class__
    if cls is float:
        if 0.0 <= value < MAX_PRICE:
            return value
    elif cls is int and 0 <= value < MAX_INT:
        return float(value)
    raise _bad(what, "must be a number in [0, 2**63)")


def _text(value: Any, what: str, max_len: int) -> str:
    if value.__class__ is not str or len(value) > max_len:
        raise _bad(what, f"must be a string of at most {max_len} characters")
    return value


def _name(value: Any, what: str, max_len: int) -> str:
    try:  # ASCII, no surrounding or doubled space: one written form (docs/protocol.md)
        return check_name(value, what, max_len=max_len)
    except Rejected as error:
        raise _bad(what, error.message) from None


def _offer(res: str, raw: Any) -> OfferTuple:
    """Check one offer field by field (ints accepted for floats), naming the bad field."""
    if raw.__class__ is not dict:
        raise _bad(res, "must be a map")
    capacity, bidders = raw.get("capacity"), raw.get("bidders")
    if capacity.__class__ is not int or not 0 <= capacity < MAX_INT:
        raise _bad(f"{res}.capacity", "must be an integer in [0, 2**63)")
    if bidders.__class__ is not int or not 0 <= bidders < MAX_INT:
        raise _bad(f"{res}.bidders", "must be an integer in [0, 2**63)")
    price = _nonneg(raw.get("price"), f"{res}.price")
    _nonneg(raw.get("unit_price"), f"{res}.unit_price")
    util = _nonneg(raw.get("utilization"), f"{res}.utilization")
    if util > 1.0:
        raise _bad(f"{res}.utilization", "must be in [0, 1]")
    return capacity, price, util, bidders


def parse_update(body: Any) -> ParsedUpdate:
    """Check a price update body in one pass, or raise ``malformed`` naming the field.

    Offers with capacity 0 are kept (the host sells none of that resource); extra fields
    are ignored so that publishers can add some without breaking older readers.
    """
    if body.__class__ is not dict:
        raise _bad("body", "must be a map")
    host = _text(body.get("host"), "host", 64)
    seq = body.get("seq")
    if seq.__class__ is not int or not 0 <= seq < MAX_INT:
        raise _bad("seq", "must be an integer in [0, 2**63)")
    heartbeat = _nonneg(body.get("heartbeat_s"), "heartbeat_s")
    if not MIN_HEARTBEAT_S <= heartbeat <= MAX_HEARTBEAT_S:
        raise _bad("heartbeat_s", f"must be in [{MIN_HEARTBEAT_S}, {MAX_HEARTBEAT_S}]")
    name = _name(body.get("name"), "name", 128)
    driver = _name(body.get("driver"), "driver", 64)
    resources = body.get("resources")
    if resources.__class__ is not dict or not resources.keys() <= _RESOURCE_SET:
        raise _bad("resources", f"must be a map keyed by {', '.join(RESOURCES)}")
    offers: list[OfferTuple | None] = []
    for res in RESOURCES:
        raw = resources.get(res)
        if raw is None:
            offers.append(None)
            continue
        try:  # fast path: every field present with its exact type and in range
            capacity, price, util = raw["capacity"], raw["price"], raw["utilization"]
            bidders, unit = raw["bidders"], raw["unit_price"]
            fast = (
                capacity.__class__ is int and bidders.__class__ is int
                and price.__class__ is float and util.__class__ is float
                and unit.__class__ is float
                and 0 <= capacity < MAX_INT and 0 <= bidders < MAX_INT
                and 0.0 <= price < MAX_PRICE and 0.0 <= unit < MAX_PRICE and 0.0 <= util <= 1.0
            )  # fmt: skip
        except (KeyError, TypeError):
            fast = False
        offers.append((capacity, price, util, bidders) if fast else _offer(res, raw))
    return host, seq, heartbeat, name, driver, tuple(offers)


@dataclass(frozen=True, slots=True)
class Offer:
    """What a host sells of one resource and what it costs now."""

    capacity: int
    price: float
    utilization: float
    bidders: int

    @property
    def unit_price(self) -> float:
        """price / capacity (0 when nothing is sold)."""
        return self.price / self.capacity if self.capacity else 0.0

    def to_body(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "price": self.price,
            "unit_price": self.unit_price,
            "utilization": self.utilization,
            "bidders": self.bidders,
        }


def offers_from_body(resources: Any) -> dict[str, Offer]:
    """The ``resources`` map of a price update (or of a host's status) as offers, or
    ``malformed`` naming the bad field."""
    if resources.__class__ is not dict or not resources.keys() <= _RESOURCE_SET:
        raise _bad("resources", f"must be a map keyed by {', '.join(RESOURCES)}")
    return {r: Offer(*_offer(r, resources[r])) for r in RESOURCES
            if resources.get(r) is not None}


@dataclass(frozen=True, slots=True)
class PriceUpdate(Body):
    """One host's price update."""

    KINDS: ClassVar[tuple[str, ...]] = ("price",)
    SUMMARY: ClassVar[str] = ("a host's offer and prices, signed by the host key "
                              "(`host` = subject_id(sender) = the subject's `<host>`)")

    host: str = field(metadata=meta(doc="the host id (1..64)"))
    seq: int = field(metadata=meta(doc="0 ≤ seq < 2^63, increasing; an older one is ignored"))
    heartbeat_s: float = field(metadata=meta(doc="the next update comes within this (0.01..86400)"))
    name: str = field(metadata=meta(doc="display name (≤ 128)"))
    driver: str = field(metadata=meta(doc="display name of the VMM driver (≤ 64)"))
    resources: dict[str, Offer] = field(metadata=meta(
        wire="map", doc="`cpu`/`memory`/`disk`/`net` → {`capacity`: int, `price`: float "
        "(Σ bid rates, µcredits/s), `unit_price`: float, `utilization`: float 0..1, "
        "`bidders`: int}"))

    def to_body(self) -> dict[str, Any]:
        """The wire body (kind ``price``)."""
        return {
            "host": self.host,
            "seq": self.seq,
            "heartbeat_s": self.heartbeat_s,
            "name": self.name,
            "driver": self.driver,
            "resources": {r: o.to_body() for r, o in self.resources.items()},
        }

    @classmethod
    def from_body(cls, body: Any) -> PriceUpdate:
        """Parse a price update body, or raise ``malformed`` naming the bad field."""
        host, seq, heartbeat, name, driver, offers = parse_update(body)
        resources = {r: Offer(*o) for r, o in zip(RESOURCES, offers, strict=True) if o}
        return cls(host, seq, heartbeat, name, driver, resources)
