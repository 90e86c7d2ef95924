"""The SLS request bodies: ``sls.query`` (filter, sort, page) and ``sls.host``.

Both are classes of the message model (:mod:`tycoon.messages.sls`); ``Query`` is the
SLS's name for :class:`~tycoon.messages.sls.SlsQuery`.
"""

from __future__ import annotations

from typing import Any

from tycoon.messages.sls import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_LIMIT_WITH_STATISTICS,
    MAX_OFFSET,
    SORTS,
    TIES,
    SlsHost,
    SlsQuery,
)

Query = SlsQuery
"""Which hosts to list: filters on one resource, a sort order and a page."""


def host_request(body: Any) -> str:
    """The host id asked for in a ``sls.host`` body ``{"host": str}``."""
    return SlsHost.from_body(body).host


__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "MAX_LIMIT_WITH_STATISTICS", "MAX_OFFSET", "SORTS",
           "TIES", "Query", "host_request"]
