"""The one exception for every refusal in Tycoon, with stable error codes.

A core raises :class:`Rejected`; an adapter turns it into a signed error reply
(``code`` + ``message``) or, for an event, drops the message and counts it.
"""

from __future__ import annotations

# Stable codes. Clients match on these; never rename one, only add.
CODES: dict[str, str] = {
    # envelope / transport
    "malformed": "the message is not a well-formed envelope or body",
    "too_large": "the message exceeds the size limit",
    "too_deep": "the message nests deeper than allowed",
    "bad_version": "unsupported protocol version",
    "bad_signature": "the signature does not verify",
    "unknown_kind": "the message kind is not known here",
    "wrong_subject": "the message was signed for another subject",
    "wrong_reply": "the reply answers another request",
    "bad_reply_to": "the reply subject is not the requester's own inbox (dropped, not answered)",
    "stale": "the timestamp is outside the freshness window",
    "replayed": "this message was already seen",
    "timeout": "no reply in time",
    "unavailable": "no service answered",
    "internal": "the service failed while handling the request",
    "rate_limited": "the sender exceeded its request rate or pending limit; retry later",
    "maintenance": "the service is in maintenance (a restored bank re-entering its log); "
                   "reads work, retry writes later",
    # authorization
    "forbidden": "the sender may not do this",
    # money and accounts
    "bad_amount": "the amount is not a positive integer in range",
    "unknown_account": "no such account",
    "account_exists": "the account already exists",
    "overdraft": "the balance does not cover the amount",
    "self_transfer": "payer and payee are the same account",
    "conflict": "the same id was used with different fields",
    "not_empty": "the account still holds money",
    # receipts and hosts
    "bad_receipt": "the receipt is not a valid bank receipt",
    "wrong_host": "the receipt pays another host",
    "already_redeemed": "the receipt was already redeemed",
    "unknown_host": "no such host",
    # bids
    "bad_bid": "the bid does not parse or is out of range",
    "not_admitted": "the bid's minimum cannot be met",
    "no_funds": "the host account has no funds",
    "expired": "the bid has expired",
    "bad_share": "a share is not a fraction in 0..1 or a resource is shared out above 1",
    "driver_failed": "the VMM driver could not apply the change on the host",
    "unknown_job": "no such job of this account on this host",
    "job_limit": "the account runs as many jobs as a host allows at once",
    "unknown_bundle": "no bundle of this digest in the account's object-store bucket",
    "bad_digest": "the bundle's bytes do not hash to the digest that names it",
    "bundle_unsafe": "a bundle member escapes the destination, links out of it or is a "
                     "device or other special file",
    "bundle_too_large": "a bundle, one of its members or all of them together exceed a limit",
    "bad_input": "the input to a computation (solver, predictor, simulator) is not valid",
}


class Rejected(Exception):
    """A refusal with a stable ``code`` (a key of :data:`CODES`) and a human message."""

    def __init__(self, code: str, message: str = "", *, returned: bytes = b"") -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.message = message or CODES[code]
        self.returned = returned
        """A host's refused ``host.fund``: the bank receipt paying the money back (or b"")."""
        super().__init__(f"{code}: {self.message}")

    def to_body(self) -> dict[str, str | bytes]:
        """The body of a signed error reply."""
        body: dict[str, str | bytes] = {"code": self.code, "message": self.message}
        if self.returned:
            body["returned"] = self.returned
        return body
