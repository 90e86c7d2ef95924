"""Signature checks of many envelopes at once, with the GIL released once per batch.

``verify_batch`` runs libsodium's ``crypto_sign_open`` — the function PyNaCl itself
calls to verify, taken from PyNaCl's cffi module — over a whole batch inside one C call
(``tycoon/bus/_batchverify.c``), so a thread verifying a batch does not compete for the
GIL after every signature as it would calling PyNaCl per message. Where the C helper
was not built (no compiler at install time) it returns None and callers verify one by
one, with the same outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_impl: Any = None
try:  # pragma: no branch - depends on the install
    import nacl.bindings  # noqa: F401  (importing it runs sodium_init, once per process)
    from nacl._sodium import ffi, lib  # type: ignore[import-not-found]

    from tycoon.bus import _batchverify  # type: ignore[attr-defined]

    _batchverify.set_verifier(int(ffi.cast("uintptr_t", lib.crypto_sign_open)))
    _impl = _batchverify
except (ImportError, AttributeError):  # no C helper, or a PyNaCl without that layout
    _impl = None


def available() -> bool:
    """Whether batches are verified in C (else one envelope at a time)."""
    return _impl is not None


def verify_batch(envelopes: Sequence[bytes]) -> bytes | None:
    """One byte per envelope: 1 if its signature verifies for the key it names, else 0;
    None when the C helper is not available."""
    if _impl is None:
        return None
    return _impl.verify(envelopes)  # type: ignore[no-any-return]
