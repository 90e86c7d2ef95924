"""The SLS request bodies: ``sls.query`` (filter, sort, page) and ``sls.host``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from tycoon.bus.schema import check_id
from tycoon.errors import Rejected
from tycoon.resources import RESOURCES

SORTS: tuple[str, ...] = ("capacity_per_price", "price", "unit_price", "capacity", "availability")
"""Sort orders: most capacity per credit first (= lowest unit price, ties: most capacity),
lowest total price, lowest unit price, most capacity, most available."""
TIES: tuple[str, ...] = ("host", "random")
"""How equal rows are ordered: by host id (stable pages), or at random per query (agents
choosing hosts: those that ask together spread over equally good hosts instead of all
taking the same first ones)."""
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_LIMIT_WITH_STATISTICS = 500  # keeps a reply well under the 1 MiB message limit
MAX_OFFSET = 1_000_000


def _optional_number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Rejected("malformed", f"{name} must be a finite number")
    if value < 0:
        raise Rejected("malformed", f"{name} must be >= 0")
    return float(value)


def _int_in(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Rejected("malformed", f"{name} must be an integer in [{low}, {high}]")
    return value


@dataclass(frozen=True)
class Query:
    """Which hosts to list: filters on one resource, a sort order and a page."""

    resource: str = "cpu"
    min_capacity: int = 0
    max_unit_price: float | None = None
    max_price: float | None = None
    sort: str = "capacity_per_price"
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    statistics: bool = True
    ties: str = "host"

    def __post_init__(self) -> None:
        # Validate by round-tripping through the wire parser.
        Query.from_body(asdict(self), _check_only=True)

    def to_body(self) -> dict[str, Any]:
        """The ``sls.query`` request body (absent filters are omitted)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_body(cls, body: Any, *, _check_only: bool = False) -> Query:
        """Parse a ``sls.query`` body; every field is optional."""
        if not isinstance(body, dict):
            raise Rejected("malformed", "a query is a map")
        resource = body.get("resource", "cpu")
        if resource not in RESOURCES:
            raise Rejected("malformed", f"resource must be one of {', '.join(RESOURCES)}")
        sort = body.get("sort", "capacity_per_price")
        if sort not in SORTS:
            raise Rejected("malformed", f"sort must be one of {', '.join(SORTS)}")
        ties = body.get("ties", "host")
        if ties not in TIES:
            raise Rejected("malformed", f"ties must be one of {', '.join(TIES)}")
        statistics = body.get("statistics", True)
        if not isinstance(statistics, bool):
            raise Rejected("malformed", "statistics must be a boolean")
        fields = {
            "resource": resource,
            "min_capacity": _int_in(body, "min_capacity", 0, 0, 2**63 - 1),
            "max_unit_price": _optional_number(body, "max_unit_price"),
            "max_price": _optional_number(body, "max_price"),
            "sort": sort,
            "offset": _int_in(body, "offset", 0, 0, MAX_OFFSET),
            "limit": _int_in(body, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT),
            "statistics": statistics,
            "ties": ties,
        }
        if statistics and fields["limit"] > MAX_LIMIT_WITH_STATISTICS:
            raise Rejected(
                "malformed",
                f"at most {MAX_LIMIT_WITH_STATISTICS} rows with statistics "
                f"({MAX_LIMIT} with statistics=false)",
            )
        if _check_only:
            return None  # type: ignore[return-value]
        return cls(**fields)


def host_request(body: Any) -> str:
    """The host id asked for in a ``sls.host`` body ``{"host": str}``."""
    if not isinstance(body, dict):
        raise Rejected("malformed", "a host request is a map")
    return check_id(body.get("host"), "host", max_len=64)
