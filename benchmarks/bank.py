"""Bank benchmark: durable signed transfers end to end through NATS.

Each transfer: the client signs the request -> the bank verifies it -> applies it
-> group-commits (one transaction + fsync per batch, ``synchronous=FULL``) ->
signs the receipt and the reply -> the client verifies the reply and the receipt.
The bank runs as its own process (``tycoon bank serve``); the clients run here,
each with its own key and connection, with 1, 16 and 64 concurrent clients.
Also measured: the crypto bound of one transfer (one Ed25519 verify + one sign)
on one core.

Run: ``python benchmarks/bank.py [--json] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nacl.bindings import crypto_sign_open

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import serve  # noqa: E402

from tycoon.bank.client import BankClient  # noqa: E402
from tycoon.bank.receipt import make_receipt  # noqa: E402
from tycoon.bank.sqlite_store import SqliteStore  # noqa: E402
from tycoon.bus import subjects  # noqa: E402
from tycoon.bus.connection import Bus, open_bus  # noqa: E402
from tycoon.bus.envelope import seal  # noqa: E402
from tycoon.bus.keys import Identity, KeyStore  # noqa: E402
from tycoon.natsserver import NatsServer  # noqa: E402
from tycoon.supervisor import Child  # noqa: E402

LEVELS = (1, 16, 64)


def crypto_bound(seconds: float = 1.0) -> float:
    """Transfers per second one core could do if it only verified one request and signed
    one receipt (pure Ed25519 on the real message sizes)."""
    bank, payer, payee = Identity.generate(), Identity.generate(), Identity.generate()
    body = {"payee": payee.public_key, "amount": 1234, "transfer_id": os.urandom(16).hex(),
            "memo": ""}
    request = seal(payer, "bank.transfer", body, subject=subjects.bank("transfer"))
    receipt = make_receipt(bank, transfer_id=body["transfer_id"], payer=payer.public_key,
                           payee=payee.public_key, amount=1234, memo="", seq=1,
                           settled_ns=time.time_ns())
    signed, sig, key = request[:-64], request[-64:], payer.raw_public_key
    to_sign = receipt[:-64]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            crypto_sign_open(sig + signed, key)  # what opening an envelope calls
            bank.sign(to_sign)
        n += 200
    return n / (time.perf_counter() - start)


async def start_bank(url: str, home: Path, db: Path) -> Child:
    """``tycoon bank serve`` as a child process (:func:`_common.serve`)."""
    return await serve("bank", url, home, "bank", "serve", "--db", str(db), "--operator-key",
                       "operator")


async def run_level(clients: list[BankClient], payees: list[str], seconds: float
                    ) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker(index: int, client: BankClient) -> None:
        nonlocal done
        payee = payees[index % len(payees)]
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await client.transfer(payee, 1)
            latencies.append(time.perf_counter() - t0)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*[worker(i, c) for i, c in enumerate(clients)])
    return done, time.perf_counter() - start, latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def bench(seconds: float) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="tycoon-bank-bench-"))
    home, db = tmp / "home", tmp / "bank.db"
    store = KeyStore(home)
    bank_key = store.create("bank").public_key
    operator = store.create("operator")
    results: dict[int, dict[str, float]] = {}
    async with NatsServer() as server:
        bank = await start_bank(server.url, home, db)
        assert bank.process is not None
        pid = bank.process.pid
        buses: list[Bus] = []
        try:
            async def client(identity: Identity) -> BankClient:
                bus = await open_bus(server.url, identity)
                buses.append(bus)
                return BankClient(bus, bank_key, timeout=10.0)

            op = await client(operator)
            payers = [await client(Identity.generate()) for _ in range(max(LEVELS))]
            payees = [await client(Identity.generate()) for _ in range(8)]
            for c in payers + payees:
                await c.open()
            await asyncio.gather(*[op.mint(c.account, 10**12) for c in payers])
            await run_level(payers[:8], [p.account for p in payees], 0.5)  # warm up
            for level in LEVELS:
                bank_cpu, client_cpu = cpu_seconds(pid), time.process_time()
                done, elapsed, lat = await run_level(payers[:level],
                                                     [p.account for p in payees], seconds)
                bank_cpu = cpu_seconds(pid) - bank_cpu
                client_cpu = time.process_time() - client_cpu
                results[level] = {"clients": level, "transfers": done,
                                  "transfers_per_s": done / elapsed,
                                  "p50_ms": pct(lat, 0.50), "p99_ms": pct(lat, 0.99),
                                  "mean_ms": statistics.fmean(lat) * 1000,
                                  "bank_cpu_us": bank_cpu / done * 1e6,
                                  "client_cpu_us": client_cpu / done * 1e6,
                                  "bank_cpu_util": bank_cpu / elapsed}
        finally:
            for bus in buses:
                await bus.close()
            await bank.stop(20)
    with SqliteStore(db, readonly=True) as ro:
        mode = ro._db.execute("PRAGMA journal_mode").fetchone()[0]
        transfers = sum(1 for e in ro.events() if e.kind == "transfer")
    bound = crypto_bound()
    top = results[max(LEVELS)]
    return {
        "levels": [results[level] for level in LEVELS],
        "journal_mode": mode,
        "synchronous": "FULL",
        "ledger_transfers": transfers,
        "transfers_per_s": round(top["transfers_per_s"], 1),
        "p50_ms": round(top["p50_ms"], 2),
        "p99_ms": round(top["p99_ms"], 2),
        "crypto_bound_per_s": round(bound, 1),
        "ratio_to_crypto": round(top["transfers_per_s"] / bound, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--seconds", type=float, default=5.0, help="per concurrency level")
    args = parser.parse_args()
    out = asyncio.run(bench(args.seconds))
    print(f"{'clients':>8} {'transfers':>10} {'per s':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'bank cpu us':>12} {'client cpu us':>14} {'bank util':>10}")
    for row in out["levels"]:  # type: ignore[union-attr]
        print(f"{row['clients']:>8} {row['transfers']:>10} {row['transfers_per_s']:>10.0f} "
              f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['bank_cpu_us']:>12.0f} "
              f"{row['client_cpu_us']:>14.0f} {row['bank_cpu_util']:>10.2f}")
    print(f"crypto bound (1 verify + 1 sign, one core): {out['crypto_bound_per_s']:.0f}/s; "
          f"ratio at 64 clients: {out['ratio_to_crypto']:.3f}; "
          f"journal {out['journal_mode']}, synchronous FULL")
    if args.json:
        keys = ("transfers_per_s", "p50_ms", "p99_ms", "crypto_bound_per_s", "ratio_to_crypto")
        print(json.dumps({k: out[k] for k in keys} | {"levels": out["levels"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
