"""The price update body: defined in :mod:`tycoon.messages.price` (re-exported here)."""

from tycoon.messages.price import (
    MAX_HEARTBEAT_S,
    MAX_INT,
    MAX_PRICE,
    MIN_HEARTBEAT_S,
    Offer,
    OfferTuple,
    ParsedUpdate,
    PriceUpdate,
    parse_update,
)

__all__ = ["MAX_HEARTBEAT_S", "MAX_INT", "MAX_PRICE", "MIN_HEARTBEAT_S", "Offer", "OfferTuple",
           "ParsedUpdate", "PriceUpdate", "parse_update"]
