"""Checks shared by every driver: account ids, share vectors, sandbox names."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping

from tycoon.errors import Rejected
from tycoon.resources import RESOURCES, Shares

MAX_ACCOUNT_LEN = 256
TOLERANCE = 1e-6
"""How far above 1.0 the shares of one resource may sum (float rounding of water-filling)."""

_SAFE = re.compile(r"[A-Za-z0-9_-]")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_account(account: object) -> str:
    """A host account id: a non-empty printable string of at most 256 characters."""
    if not isinstance(account, str) or not account:
        raise Rejected("malformed", f"account id must be a non-empty string, not {account!r}")
    if len(account) > MAX_ACCOUNT_LEN or not account.isprintable():
        raise Rejected("malformed", "account id too long or not printable")
    return account


def check_shares(shares: Mapping[str, Shares]) -> None:
    """Refuse shares that are not fractions in [0, 1] or sum above 1 for a resource."""
    if not isinstance(shares, Mapping):
        raise Rejected("bad_share", "shares must map account ids to Shares")
    totals = [0.0, 0.0, 0.0, 0.0]
    for account, share in shares.items():
        if type(account) is not str or not 0 < len(account) <= MAX_ACCOUNT_LEN \
                or not account.isprintable():
            check_account(account)  # raises with the precise reason
        if not isinstance(share, Shares):
            raise Rejected("bad_share", f"shares of {account[:24]} is not a Shares")
        values = (share.cpu, share.memory, share.disk, share.net)
        try:  # comparisons are False for NaN, so this also refuses non-finite values
            ok = all(0.0 <= v <= 1.0 for v in values) and all(type(v) is not bool for v in values)
        except TypeError:
            ok = False
        if not ok:
            for r, v in zip(RESOURCES, values, strict=True):
                if isinstance(v, bool) or not isinstance(v, int | float) \
                        or not math.isfinite(v) or not 0.0 <= v <= 1.0:
                    raise Rejected("bad_share", f"{r} share of {account[:24]} is {v!r}")
        for i, v in enumerate(values):
            totals[i] += v
        for port in share.ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise Rejected("bad_share", f"port {port!r} of {account[:24]} is out of range")
    for r, total in zip(RESOURCES, totals, strict=True):
        if total > 1.0 + TOLERANCE:
            raise Rejected("bad_share", f"{r} shares sum to {total:.6f} > 1")


def sandbox_name(account: str, prefix: str = "") -> str:
    """A file-system and label safe name for an account's sandbox, stable and collision-free.

    Safe ids of up to 64 characters (e.g. an nkey ``U...``) are used as they are; anything else
    keeps its safe characters and gains a ``.hash`` suffix; as safe ids never contain a dot,
    two ids never share a name.
    """
    check_account(account)
    if _SAFE_NAME.fullmatch(account):
        return prefix + account
    kept = "".join(c if _SAFE.fullmatch(c) else "_" for c in account)[:40]
    digest = hashlib.sha256(account.encode("utf-8")).hexdigest()[:16]
    return f"{prefix}{kept}.{digest}"
