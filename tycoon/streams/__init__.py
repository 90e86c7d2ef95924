"""JetStream where a durable log serves users better than the core bus.

* ``PRICES`` keeps every signed price update (``tycoon.price.*``) for a bounded time and
  size: the SLS warm-starts its statistics from it after a restart, and
  ``tycoon history HOST`` reads it back.
* ``SETTLEMENTS`` keeps one message per bank receipt (``tycoon.settlement.<payer>.<payee>``,
  ``Nats-Msg-Id`` = transfer id): a second, replicated copy of what the bank settled,
  checked against the ledger by ``tycoon bank verify-log``.

The core bus stays the source of truth for live traffic and the bank's SQLite file stays
the source of truth for money; every service keeps working when JetStream is down.
See docs/reliability.md.
"""
