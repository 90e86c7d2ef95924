"""Typed readers for message bodies: each returns the field or raises ``malformed``."""

from __future__ import annotations

from typing import Any

from tycoon.errors import Rejected

_MISSING = object()


def _get(body: Any, name: str, optional: bool) -> Any:
    if not isinstance(body, dict):
        raise Rejected("malformed", "body must be a map")
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        if optional:
            return _MISSING
        raise Rejected("malformed", f"missing field {name!r}")
    return value


def get_str(body: Any, name: str, *, optional: bool = False, max_len: int = 256) -> str | None:
    """A string field of at most ``max_len`` characters."""
    value = _get(body, name, optional)
    if value is _MISSING:
        return None
    if not isinstance(value, str):
        raise Rejected("malformed", f"field {name!r} must be a string")
    if len(value) > max_len:
        raise Rejected("malformed", f"field {name!r} is longer than {max_len}")
    return value


def get_int(body: Any, name: str, *, optional: bool = False) -> int | None:
    """An integer field (bool is not an integer here)."""
    value = _get(body, name, optional)
    if value is _MISSING:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise Rejected("malformed", f"field {name!r} must be an integer")
    return value


def get_bytes(
    body: Any, name: str, *, optional: bool = False, max_len: int = 1024 * 1024
) -> bytes | None:
    """A binary field of at most ``max_len`` bytes."""
    value = _get(body, name, optional)
    if value is _MISSING:
        return None
    if not isinstance(value, bytes):
        raise Rejected("malformed", f"field {name!r} must be binary")
    if len(value) > max_len:
        raise Rejected("malformed", f"field {name!r} is longer than {max_len} bytes")
    return value


# -- ids and names on the wire ------------------------------------------------------------

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:@+=")
"""The id charset (docs/protocol.md, "Ids and names"): ASCII letters, digits and ``- _ . : @ +
=``. No space, no slash, nothing outside ASCII, so an id has exactly one written form."""
MAX_ID = 128
MAX_NAME = 64


def check_id(value: Any, what: str = "id", *, max_len: int = MAX_ID) -> str:
    """``value`` if it is an id: 1..``max_len`` characters of :data:`ID_CHARS`; else
    ``malformed``. Compares are exact (case-sensitive): ``a`` and ``A`` are two ids."""
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise Rejected("malformed", f"{what} must be 1..{max_len} characters")
    if not ID_CHARS.issuperset(value):
        bad = next(c for c in value if c not in ID_CHARS)
        raise Rejected("malformed", f"{what} has the character {bad!r}: ids are ASCII letters, "
                                    "digits and - _ . : @ + =")
    return value


def check_name(value: Any, what: str = "name", *, max_len: int = MAX_NAME,
               empty: bool = True) -> str:
    """``value`` if it is a display name: printable ASCII (space included) of at most
    ``max_len``, no leading, trailing or doubled space; else ``malformed``."""
    if not isinstance(value, str) or len(value) > max_len or (not value and not empty):
        raise Rejected("malformed", f"{what} must be text of {0 if empty else 1}..{max_len}")
    if not (value.isascii() and value.isprintable()):
        raise Rejected("malformed", f"{what} must be printable ASCII")
    if value != value.strip(" ") or "  " in value:
        raise Rejected("malformed", f"{what} has a leading, trailing or doubled space")
    return value
