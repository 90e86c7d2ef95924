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
    if value == 0:
        raise Rejected("bad_amount", f"{text.strip()!r}: an amount must be more than 0 credits")
    if value > MAX_AMOUNT:
        raise Rejected("bad_amount", f"{text.strip()!r}: an amount is at most "
                                     f"{format_amount(MAX_AMOUNT)} credits")
    return value


def format_amount(micro: int) -> str:
    """Print micro-credits as a decimal number of credits, without trailing zeros."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def format_credits(micro: int, decimals: int = 2) -> str:
    """Micro-credits as credits with a fixed number of decimals, rounded half away from
    zero, with thousands separators (``24930000`` -> ``"24.93"``): for people to read."""
    if not 0 <= decimals <= 6:
        raise ValueError("decimals must be 0..6")
    step = 10 ** (6 - decimals)
    sign = "-" if micro < 0 else ""
    units, rest = divmod(abs(micro), step)
    if 2 * rest >= step:
        units += 1
    whole, frac = divmod(units, 10**decimals)
    return f"{sign}{whole:,}" + (f".{frac:0{decimals}d}" if decimals else "")


def format_rate(micro_per_s: float, decimals: int = 4) -> str:
    """A price or spending rate, given in micro-credits per second, as credits per second
    with fixed decimals (a display of a float rate, never a balance)."""
    return f"{micro_per_s / MICRO:,.{decimals}f}"


def check_amount(value: object, *, allow_zero: bool = False) -> int:
    """Return ``value`` if it is an int amount in range, else raise ``bad_amount``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise Rejected("bad_amount", f"amount must be an integer of micro-credits, not {value!r}")
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_AMOUNT:
        raise Rejected("bad_amount", f"amount {value} is out of range [{low}, {MAX_AMOUNT}]")
    return value
