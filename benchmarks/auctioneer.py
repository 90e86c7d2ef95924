"""Auctioneer benchmark: allocation recompute time, and bid → shares applied → signed reply.

(1) ``Market.recompute`` (expiry sweep, rates, water-filling of the four resources, port
auctions, change detection) for 10 … 100,000 accounts with live bids; median of repeated
runs. (2) 1,000 sequential bids of one user over a real nats-server to an auctioneer with
the simulated driver and a real bank: each reply leaves only after the bid is committed
to SQLite (synchronous=FULL) and the new shares were applied to the driver.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit_json, parser, percentile, table

from tycoon.auctioneer.allocation import water_fill
from tycoon.auctioneer.bidparse import BidSpec, parse_resources
from tycoon.auctioneer.events import Account, Bid
from tycoon.auctioneer.market import Market
from tycoon.bus.keys import Identity
from tycoon.log import configure_logging
from tycoon.units import NS
from tycoon.vmm.simulated import SimulatedDriver, capacity_from_config

COUNTS = (10, 1_000, 10_000, 100_000)
BIDS = 1_000


def build_market(n: int, seed: int = 1) -> tuple[Market, int]:
    """A market with ``n`` funded accounts, each with a live bid on every resource."""
    rng = np.random.default_rng(seed)
    bank, host = Identity.generate(), Identity.generate()
    market = Market(host_key=host.public_key, bank_key=bank.public_key,
                    capacity=capacity_from_config("large"), name="bench")  # fmt: skip
    now = 1_750_000_000 * NS
    accounts = []
    reserve = 0.5 / n  # half the capacity reserved by mins in total
    for i in range(n):
        w = rng.integers(1, 10, size=4)
        lo = reserve if i % 2 == 0 else 0.0
        hi = min(1.0, float(rng.uniform(2, 50)) / n + lo)
        text = " ".join(f"{r}:{w[k]},{lo:.12f},{hi:.12f}" for k, r in
                        enumerate(("cpu", "memory", "disk", "net")))  # fmt: skip
        prefs, unique = parse_resources(text)
        balance = int(rng.integers(1, 10**9))
        account = Account(f"acct{i:06d}", balance=balance, funded=balance, created_ns=now)
        duration = int(rng.integers(60, 86_400)) * NS
        account.bid = Bid(BidSpec(duration, prefs, unique), now, now + duration, (), (), ())
        accounts.append(account)
    market.load(accounts=accounts, redeemed=[], pending=[], earnings=0,
                funded=sum(a.funded for a in accounts), refunded=0, seq=0,
                now_ns=now)  # fmt: skip
    return market, now


def bench_recompute(n: int) -> tuple[float, float]:
    """Median ms of Market.recompute and of water_fill alone, for ``n`` accounts."""
    market, now = build_market(n)
    runs = 30 if n <= 10_000 else 8
    full, fill = [], []
    for k in range(runs):
        t = now + (k + 1) * NS // 10
        start = time.perf_counter()
        market.recompute(t)
        full.append((time.perf_counter() - start) * 1e3)
        rates = market.book.rates(t)
        lo, hi = market.book.bounds(t)
        start = time.perf_counter()
        water_fill(rates, lo, hi, validate=False)
        fill.append((time.perf_counter() - start) * 1e3)
    assert market.conserved()
    return statistics.median(full), statistics.median(fill)


async def bench_bids(count: int) -> list[float]:
    """Latencies (ms) of ``count`` sequential bids over NATS, shares applied before reply."""
    from tycoon.auctioneer.client import AuctioneerClient
    from tycoon.auctioneer.launch import start_auctioneer
    from tycoon.bank.client import BankClient
    from tycoon.bank.launch import start_bank
    from tycoon.bus.connection import open_bus
    from tycoon.natsserver import NatsServer

    with tempfile.TemporaryDirectory() as tmp:
        async with NatsServer() as server:
            bank_id, operator, host, user = (Identity.generate() for _ in range(4))
            bank = await start_bank(server.url, bank_id, db=Path(tmp) / "bank.db",
                                    operator=operator.public_key)
            driver = SimulatedDriver(preset="medium")
            # one user bids back to back (~300/s): latency, not the per-key limit (flood.py)
            auctioneer = await start_auctioneer(
                server.url, host, bank_key=bank_id.public_key, driver=driver,
                store_path=Path(tmp) / "host.db", tick_s=1.0, heartbeat_s=5.0,
                rate_limit=None,
            )  # fmt: skip
            buses = [await open_bus(server.url, i) for i in (operator, user)]
            try:
                await BankClient(auctioneer.bus, bank_id.public_key).open(exist_ok=True)
                payer = BankClient(buses[1], bank_id.public_key)
                await payer.open()
                await BankClient(buses[0], bank_id.public_key).mint(user.public_key, 10**12)
                client = AuctioneerClient(buses[1], auctioneer.market.host_id)
                await client.fund(await payer.transfer(host.public_key, 10**11))
                specs = ["1h cpu:2,0.1,1.0 memory:1,512MB,4GB", "2h cpu:1 net:1,10Mbps",
                         "30m cpu:3,0.2 disk:1,1GB,10GB memory:1"]  # fmt: skip
                for spec in specs:  # warm up
                    await client.bid(spec)
                latencies = []
                for k in range(count):
                    start = time.perf_counter()
                    await client.bid(specs[k % len(specs)])
                    latencies.append((time.perf_counter() - start) * 1e3)
                return latencies
            finally:
                for bus in buses:
                    await bus.close()
                await auctioneer.stop()
                await bank.stop()


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    configure_logging("error")
    recompute: dict[str, float] = {}
    rows = []
    for n in COUNTS:
        full, fill = bench_recompute(n)
        recompute[str(n)] = round(full, 3)
        rows.append((n, full, fill))
    table("Allocation recompute (median ms, 4 resources)", rows,
          ("accounts", "Market.recompute", "water_fill only"))  # fmt: skip
    latencies = asyncio.run(bench_bids(BIDS))
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    table(f"{BIDS} sequential bids over NATS (simulated driver; ms)",
          [(p50, p99, max(latencies))], ("p50", "p99", "max"))  # fmt: skip
    print(f"\ngoals: recompute_ms['10000'] <= 5 ({recompute['10000']:.2f}); "
          f"bid_p99_ms <= 10 ({p99:.2f})")
    emit_json({"recompute_ms": recompute, "bid_p50_ms": round(p50, 3),
               "bid_p99_ms": round(p99, 3)}, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
