"""Bus benchmark: signed events/s vs raw NATS and vs the cryptography alone.

Over a real nats-server, in one process and one core for each measurement:
* signed: seal (sign) → publish → subscribe → verify signature → decode → replay check;
* raw: nats-py publish/subscribe of the same bytes, no crypto, no decoding;
* crypto only: PyNaCl sign + verify of the same bytes (the limit for the signed path).

Publisher and subscriber share one event loop (one core); at most ``WINDOW`` messages
are in flight, as a real subscriber's flow control would keep them.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import nats
from _common import emit_json, parser, table
from nacl.bindings import crypto_sign_open
from nats.aio.msg import Msg

from tycoon.bus.connection import Bus
from tycoon.bus.envelope import HEADER_SIZE, SIGNATURE_SIZE, seal
from tycoon.bus.keys import Identity
from tycoon.natsserver import NatsServer

SUBJECT = "tycoon.price.bench"
ROUNDS = 5
BODY = {
    "host": "bench",
    "seq": 1,
    "heartbeat_s": 5.0,
    "resources": {r: {"capacity": 4000, "price": 12.5, "unit_price": 0.003,
                      "utilization": 0.5, "bidders": 3} for r in ("cpu", "memory", "disk", "net")},
}


WINDOW = 2_000
"""Messages in flight at most: the publisher waits for the subscriber to catch up, so a
burst never outgrows the server's buffers for a slow consumer (which drops messages)."""


async def flow_rate(url: str, n: int, make: Callable[[int], bytes],
                    handle: Callable[[bytes], None]) -> float:
    """Publish ``make(i)`` for i < n and ``handle`` each on a subscriber; events/s."""
    pub = await nats.connect(url)
    sub_nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    done, room = asyncio.Event(), asyncio.Event()
    count = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        handle(msg.data)
        count += 1
        if count == n:
            done.set()
        if count % (WINDOW // 2) == 0:
            room.set()

    await sub_nc.subscribe(SUBJECT, cb=on_msg, pending_msgs_limit=n + 10,
                           pending_bytes_limit=1 << 30)
    await sub_nc.flush()
    start = time.perf_counter()
    for i in range(n):
        while i - count >= WINDOW:
            room.clear()
            await pub.flush()
            await room.wait()
        await pub.publish(SUBJECT, make(i))
    await pub.flush()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - start
    await pub.close()
    await sub_nc.close()
    return n / elapsed


async def signed_rate(url: str, n: int) -> float:
    ident = Identity.generate()
    bus = Bus(cast(Any, None), Identity.generate())  # verify only: no connection needed

    def verify(data: bytes) -> None:
        bus.verify(data, SUBJECT)

    return await flow_rate(url, n, lambda _: seal(ident, "price", BODY, subject=SUBJECT),
                           verify)


async def raw_rate(url: str, n: int, payload: bytes) -> float:
    return await flow_rate(url, n, lambda _: payload, lambda _: None)


def crypto_rate(n: int, payload: bytes) -> float:
    ident = Identity.generate()
    signed = payload[:-SIGNATURE_SIZE]
    key = ident.raw_public_key
    start = time.perf_counter()
    for _ in range(n):
        sig = ident.sign(signed)
        crypto_sign_open(sig + signed, key)  # what opening an envelope calls
    return n / (time.perf_counter() - start)


async def main() -> None:
    args = parser(__doc__ or "").parse_args()
    n = 10_000
    sample = seal(Identity.generate(), "price", BODY, subject=SUBJECT)
    # The machine may be shared (and its cores' speed varies): each round measures crypto
    # and the signed path back to back and yields its own ratio; the median round counts,
    # so a burst of load elsewhere during one measurement does not decide the result.
    rounds: list[tuple[float, float, float]] = []
    async with NatsServer() as server:
        await raw_rate(server.url, 2000, sample)  # warm up
        for _ in range(ROUNDS):
            crypto_a = crypto_rate(n // 4, sample)
            signed_one = await signed_rate(server.url, n)
            crypto_b = crypto_rate(n // 4, sample)
            rounds.append((signed_one / ((crypto_a + crypto_b) / 2), signed_one,
                           (crypto_a + crypto_b) / 2))
        raw = statistics.median([await raw_rate(server.url, n, sample) for _ in range(3)])
    ratio, signed, crypto = sorted(rounds)[len(rounds) // 2]
    result = {
        "signed_events_per_s": round(signed),
        "raw_nats_per_s": round(raw),
        "crypto_only_per_s": round(crypto),
        "ratio_to_crypto": round(ratio, 3),
        "ratio_rounds": [round(r[0], 3) for r in rounds],
        "envelope_bytes": len(sample),
        "payload_bytes": len(sample) - HEADER_SIZE - SIGNATURE_SIZE,
        "events": n,
        "rounds": ROUNDS,
    }
    table(
        f"bus: {n:,} events of {len(sample)} bytes, one process, real nats-server"
        f" (median of {ROUNDS} rounds)",
        [
            ("signed: seal → publish → verify → decode", signed),
            ("raw nats-py publish/subscribe", raw),
            ("crypto only: PyNaCl sign + verify", crypto),
            ("signed / crypto only", ratio),
        ],
        ("path", "per second"),
    )
    emit_json(result, args.json)


if __name__ == "__main__":
    asyncio.run(main())
