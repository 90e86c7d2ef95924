"""``tycoon tap [SUBJECT]``: watch the bus, verifying every envelope.

One line per message: time, subject, kind, short sender id and the key fields.
A message that fails verification is printed flagged with its rejection code —
never hidden.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from typing import Any

from tycoon.bank.receipt import verify_receipt
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import subject_id
from tycoon.bus.verify import open_one
from tycoon.cli.common import bus_for, keystore, names_of
from tycoon.cli.top import settled_receipts
from tycoon.errors import Rejected
from tycoon.messages import MESSAGES
from tycoon.messages.market import Alloc
from tycoon.messages.price import PriceUpdate
from tycoon.money import format_credits, format_rate
from tycoon.waiting import wait_set


def register(sub: argparse._SubParsersAction) -> None:
    tap = sub.add_parser("tap", help="print every verified event on the bus")
    tap.add_argument("subject", nargs="?", default=subjects.ALL)
    tap.add_argument("--json", action="store_true", help="JSON lines")
    tap.add_argument("--count", type=int, default=0,
                     help="stop after N messages (0: until Ctrl-C or --timeout)")
    tap.add_argument("--raw", action="store_true", help="also print the envelope bytes (hex)")
    tap.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")
    tap.set_defaults(func=cmd_tap)


def summarize(msg: Message) -> str:
    """The key fields of a message, in a few words (its body read with its kind's class:
    one the class refuses is shown as malformed, with why)."""
    if msg.kind == "bank.settled":
        return " ".join(
            f"{_name(r.payer)}→{_name(r.payee)}:{format_credits(r.amount)}"
            for r in settled_receipts(msg)
        )
    cls = MESSAGES.get(msg.kind)
    try:
        body = cls.from_body(msg.body) if cls is not None else None
    except Rejected as error:
        return f"malformed {msg.kind}: {error.message}"
    if isinstance(body, PriceUpdate):
        parts = [f"{r}={_rate(o.price)}" for r, o in body.resources.items()]
        return f"host={body.host} seq={body.seq} credits/s " + " ".join(parts)
    if isinstance(body, Alloc):
        shares = " ".join(
            f"{str(a)[:8]}:cpu={_num(v.get('cpu'))}"
            for a, v in list(body.accounts.items())[:4] if isinstance(v, dict)
        )
        return f"host={body.host} accounts={len(body.accounts)} {shares}"
    fields: dict[str, Any] = msg.body  # checked above; shown as sent, unknown fields too
    scalars = [
        f"{k}={_short(v)}" for k, v in fields.items()
        if isinstance(v, str | int | float | bool) and not isinstance(v, bytes)
    ]
    return " ".join(scalars[:8])


NAMES: dict[str, str] = {}
"""Keys and ids -> key store names (filled by the command from the key store)."""


def _name(key: str) -> str:
    return NAMES.get(key) or subject_id(key)[:8]


def _rate(value: Any) -> str:
    return format_rate(value, 6) if isinstance(value, int | float) else str(value)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(value: Any) -> str:
    text = _num(value)
    return text if len(text) <= 24 else text[:21] + "…"


def line_for(subject: str, data: bytes, bus: Bus, *, as_json: bool, raw: bool) -> str:
    """Verify one message and render it as a line (flagged if rejected)."""
    now = dt.datetime.now().astimezone().isoformat(timespec="milliseconds")
    try:
        if subjects.is_settlement(subject):
            # A logged receipt: a durable token bound to the receipt subject, old by design.
            receipt = verify_receipt(data, open_one(data).sender)
            if as_json:
                return json.dumps({"time": now, "subject": subject, "kind": "bank.receipt",
                                   "receipt": _jsonable(receipt.to_body())}, sort_keys=True)
            return (f"{now} {subject} bank.receipt {_name(receipt.payer)}→"
                    f"{_name(receipt.payee)}:{format_credits(receipt.amount)}"
                    f" seq={receipt.seq}")
        msg = bus.verify(data, subject)
    except Rejected as error:
        bus.rejected[error.code] += 1
        if as_json:
            return json.dumps({"time": now, "subject": subject, "rejected": error.code,
                               "reason": error.message, "bytes": len(data)})
        return f"{now} {subject} REJECTED {error.code}: {error.message} ({len(data)} bytes)"
    sender = subject_id(msg.sender)
    if as_json:
        record = {"time": now, "subject": subject, "kind": msg.kind, "sender": msg.sender,
                  "ts_ns": msg.ts_ns, "body": _jsonable(msg.body)}
        if raw:
            record["raw"] = data.hex()
        return json.dumps(record, sort_keys=True)
    text = f"{now} {subject} {msg.kind} {NAMES.get(sender, sender[:8])} {summarize(msg)}"
    return text + (f"\n  {data.hex()}" if raw else "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


async def cmd_tap(args: argparse.Namespace) -> int:
    NAMES.update(names_of(keystore(args)))
    bus = await bus_for(args, deadline=10.0)
    done = asyncio.Event()
    seen = 0

    async def on_message(subject: str, data: bytes) -> None:
        nonlocal seen
        if done.is_set():
            return
        print(line_for(subject, data, bus, as_json=args.json, raw=args.raw), flush=True)
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    await bus.subscribe_raw(args.subject, on_message)
    await bus.flush()
    try:
        if args.timeout:
            await wait_set(done, args.timeout)
        else:
            await done.wait()
    finally:
        await bus.close()
    return 0
