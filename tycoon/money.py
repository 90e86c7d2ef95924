"""Money: integer micro-credits, parsed from and printed as decimals.

Every balance, bid and receipt holds an ``int`` of micro-credits. This module
is the only place where text becomes money or money becomes text, and it never
uses floats.
"""

from __future__ import annotations

import re

from tycoon.errors import Rejected

MICRO = 1_000_000
"""Micro-credits per credit."""

MAX_AMOUNT = 2**63 - 1
"""The largest amount any ledger holds (int64)."""

_DECIMAL = re.compile(r"^(?P<int>\d+)(?:\.(?P<frac>\d{1,6}))?$")


def parse_amount(text: str) -> int:
    """Parse a positive decimal number of credits (``"12.5"``) into micro-credits."""
    cleaned = text.strip().replace("_", "")
    match = _DECIMAL.match(cleaned)
    if match is None:
        raise Rejected("bad_amount", f"not an amount of credits: {text!r} (up to 6 decimals)")
    frac = (match["frac"] or "").ljust(6, "0")
    value = int(match["int"]) * MICRO + int(frac)
    return check_amount(value)


def format_amount(micro: int) -> str:
    """Print micro-credits as a decimal number of credits, without trailing zeros."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def check_amount(value: object, *, allow_zero: bool = False) -> int:
    """Return ``value`` if it is an int amount in range, else raise ``bad_amount``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise Rejected("bad_amount", f"amount must be an integer of micro-credits, not {value!r}")
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_AMOUNT:
        raise Rejected("bad_amount", f"amount {value} is out of range [{low}, {MAX_AMOUNT}]")
    return value
