"""Bundles benchmark: does pushing bundles slow the bank, and how fast are push and pull?

The bank (``tycoon bank serve``) and the store (``tycoon store serve``) run as their own
processes on one JetStream server, as ``tycoon up`` starts them. Measured:

1. the bank's transfer latency (one client, signed transfers back to back) with nobody
   pushing, then while 4 users (each its own process, key and connection) push 16 MiB
   bundles of fresh random bytes in a loop;
2. push and pull throughput of 1 MiB and 32 MiB bundles (one client, median of 3);
3. the peak memory (VmHWM) of the bank and the store.

Before the store existed, the bank served bundles itself: the red-team run measured
transfer p50 2 ms / p95 5 ms without pushes and 16 / 26 ms with 4 users pushing 16 MiB.

Run: ``python benchmarks/bundles.py [--json] [--seconds S]``. ``--bank-serves-bundles``
starts no store, for measuring a checkout from before the store (the bank served bundles
and made an account's bucket when the account opened: each pusher opens its account).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import emit_json, parser, percentile, serve, table  # noqa: E402

from tycoon.bank.client import BankClient  # noqa: E402
from tycoon.bundles import client as bundles  # noqa: E402
from tycoon.bus.connection import Bus, open_bus  # noqa: E402
from tycoon.bus.keys import Identity, KeyStore  # noqa: E402
from tycoon.natsserver import NatsServer  # noqa: E402
from tycoon.supervisor import Child  # noqa: E402

MIB = 1 << 20
PUSHERS, PUSH_MIB = 4, 16


def peak_mib(child: Child) -> float:
    """The child's peak resident memory (VmHWM), MiB."""
    assert child.process is not None
    for line in Path(f"/proc/{child.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def transfers(client: BankClient, payee: str, seconds: float) -> list[float]:
    """Latencies (ms) of back-to-back transfers for ``seconds``."""
    out: list[float] = []
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        await client.transfer(payee, 1)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def pusher(url: str, size: int, bank_key: str) -> None:
    """(A child process) open a bank account, then push fresh random bundles of ``size``
    bytes until killed."""
    bus = await open_bus(url, Identity.generate())
    await BankClient(bus, bank_key, timeout=10.0).open()
    while True:
        t0 = time.perf_counter()
        await bundles.push_bytes(bus, os.urandom(size), timeout=60)
        print(f"pushed {time.perf_counter() - t0:.3f}", flush=True)


async def throughput(bus: Bus, size: int, runs: int = 3) -> dict[str, float]:
    """Median seconds and MiB/s of a push and a pull of ``size`` fresh random bytes."""
    push_s, pull_s = [], []
    for _ in range(runs):
        data = os.urandom(size)
        t0 = time.perf_counter()
        digest = await bundles.push_bytes(bus, data, timeout=60)
        push_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert await bundles.fetch_bytes(bus, digest, timeout=60) == data
        pull_s.append(time.perf_counter() - t0)
    push, pull = statistics.median(push_s), statistics.median(pull_s)
    return {"push_s": push, "pull_s": pull, "push_mib_s": size / MIB / push,
            "pull_mib_s": size / MIB / pull}


def stats(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99)}


async def bench(seconds: float, store_too: bool = True) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="tycoon-bundles-bench-"))
    home = tmp / "home"
    keys = KeyStore(home)
    bank_key = keys.create("bank").public_key
    operator = keys.create("operator")
    keys.create("store")
    async with NatsServer(jetstream=True, store_dir=str(tmp / "js")) as server:
        bank = await serve("bank", server.url, home, "bank", "serve", "--db",
                           str(tmp / "bank.db"), "--operator-key", "operator",
                           "--no-settlement-log")
        store = await serve("store", server.url, home, "--as", "store", "store", "serve",
                            "--db", str(tmp / "store.db"), "--bucket-bytes", str(4 << 30),
                            "--rate-limit", "off") if store_too else None
        buses: list[Bus] = []
        procs: list[asyncio.subprocess.Process] = []
        try:
            async def client(identity: Identity) -> BankClient:
                bus = await open_bus(server.url, identity)
                buses.append(bus)
                return BankClient(bus, bank_key, timeout=10.0)

            payer, payee = await client(Identity.generate()), await client(Identity.generate())
            for c in (payer, payee):
                await c.open()
            await (await client(operator)).mint(payer.account, 10**12)
            await transfers(payer, payee.account, 1.0)  # warm up
            quiet = await transfers(payer, payee.account, seconds)
            procs = [await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--pusher", server.url, str(PUSH_MIB * MIB), bank_key,
                stdout=asyncio.subprocess.PIPE, env={**os.environ, "TYCOON_LOG": "error"})
                for _ in range(PUSHERS)]
            await asyncio.sleep(2.0)  # every pusher connected and streaming chunks
            busy = await transfers(payer, payee.account, seconds)
            for proc in procs:
                proc.terminate()
            pushes = []
            for proc in procs:
                out, _ = await proc.communicate()
                pushes += [float(line.split()[1]) for line in out.decode().splitlines()
                           if line.startswith("pushed ")]
            speed = {f"{mib}MiB": await throughput(payer.bus, mib * MIB) for mib in (1, 32)}
            memory = {"bank_peak_mib": peak_mib(bank),
                      "store_peak_mib": peak_mib(store) if store else None}
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            for bus in buses:
                await bus.close()
            if store is not None:
                await store.stop(10)
            await bank.stop(10)
    return {"transfer_quiet": stats(quiet), "transfer_while_pushing": stats(busy),
            "pushers": PUSHERS, "push_mib": PUSH_MIB, "pushes_done": len(pushes),
            "push_16mib_s_median": statistics.median(pushes) if pushes else None,
            "throughput": speed, "memory": memory, "cores": os.cpu_count(),
            "bundles_served_by": "store" if store_too else "bank",
            "load_average": os.getloadavg()[0]}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--pusher":
        asyncio.run(pusher(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
        return
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per latency measurement")
    p.add_argument("--bank-serves-bundles", action="store_true",
                   help="start no store (a checkout from before it: the bank served bundles)")
    args = p.parse_args()
    result = asyncio.run(bench(args.seconds, not args.bank_serves_bundles))
    q, b = result["transfer_quiet"], result["transfer_while_pushing"]
    table("bank transfer latency (ms)", [
        ["nobody pushing", q["n"], q["p50_ms"], q["p95_ms"], q["p99_ms"]],
        [f"{PUSHERS} users pushing {PUSH_MIB} MiB", b["n"], b["p50_ms"], b["p95_ms"],
         b["p99_ms"]]], ["", "transfers", "p50", "p95", "p99"])
    table("bundle throughput (one client, median of 3)", [
        [size, r["push_s"], r["push_mib_s"], r["pull_s"], r["pull_mib_s"]]
        for size, r in result["throughput"].items()],
        ["size", "push s", "push MiB/s", "pull s", "pull MiB/s"])
    print(f"\n{result['pushes_done']} pushes of {PUSH_MIB} MiB meanwhile (median "
          f"{result['push_16mib_s_median']} s); peak memory: {result['memory']}")
    emit_json(result, args.json)


if __name__ == "__main__":
    main()
