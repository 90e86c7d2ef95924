"""Real enforcement: the market's shares, applied by the cgroups driver, measured by the kernel.

Two CPU-bound processes in two host accounts, pinned to one CPU. The accounts are funded
with bank receipts and bid through the real market core (tycoon.auctioneer.market): equal
funds spent over 1 h and 3 h give bid rates 3:1, so shares 3:1; the kernel's CPU time (read
through the driver's usage, which also feeds the market's charging tick) must split within
10 % of 3:1 over three seconds. Then the second account rebids over 1 h (rates 1:1) and the
split must follow within 2 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tycoon.auctioneer.bidparse import parse_bid
from tycoon.auctioneer.events import SharesChanged
from tycoon.auctioneer.market import Market
from tycoon.bank.receipt import make_receipt
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected
from tycoon.vmm import cgroupfs
from tycoon.vmm.cgroups import CgroupsDriver

pytestmark = [pytest.mark.cgroups, pytest.mark.slow, pytest.mark.xdist_group("cpu")]

FUNDS = 1_000_000_000  # 1000 credits each, in micro-credits
TICK_S = 0.25


def _no_cpu_controller() -> str | None:
    """Why no cpu controller is writable here, or None if one is."""
    try:
        probe = CgroupsDriver(root=f"tycoon-probe-{uuid.uuid4().hex[:8]}", parent="self",
                              state_dir=None)
    except Rejected as error:
        return f"no writable cpu controller: {error.message}"
    except (OSError, ValueError) as error:
        return f"no writable cpu controller: {error}"
    probe.teardown()
    return None


REASON = _no_cpu_controller()


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[CgroupsDriver]:
    if REASON is not None:
        pytest.skip(REASON)
    d = CgroupsDriver(root=f"tycoon-enforce-{uuid.uuid4().hex[:10]}", parent="self",
                      state_dir=str(tmp_path))
    try:
        yield d
    finally:
        d.teardown()


def _spawn_pinned(driver: CgroupsDriver, account: str, cpu: int) -> subprocess.Popen:
    """A busy loop that joins the account's cgroups and its CPU before it execs."""
    procs = [str(p / "cgroup.procs") for p in driver.backend.dirs(driver.sandbox(account))]

    def enter() -> None:
        os.sched_setaffinity(0, {cpu})
        cgroupfs.join(procs)

    code = "import time\nend = time.time() + 60\nwhile time.time() < end: pass\n"
    return subprocess.Popen([sys.executable, "-c", code], preexec_fn=enter)


def _run_market(market: Market, driver: CgroupsDriver, seconds: float,
                accounts: tuple[str, str]) -> tuple[float, float]:
    """Tick the market with the driver's usage for ``seconds``; the CPU seconds each account
    used as the kernel counted them (usage fraction × elapsed × cores, summed)."""
    used = [0.0, 0.0]
    driver.usage()  # start the measuring window now
    last = time.monotonic()
    end = last + seconds
    while time.monotonic() < end:
        time.sleep(TICK_S)
        usage = driver.usage()
        now = time.monotonic()
        for i, account in enumerate(accounts):
            used[i] += usage[account].cpu * (now - last) * driver.capacity().cores
        last = now
        events = market.tick(time.time_ns(), usage)
        if any(isinstance(e, SharesChanged) for e in events):
            driver.apply(market.shares_map())
    return used[0], used[1]


def test_bids_3_to_1_give_cpu_3_to_1_then_1_to_1(driver: CgroupsDriver) -> None:
    bank, host = Identity.generate(), Identity.generate()
    alice, bob = Identity.generate().public_key, Identity.generate().public_key
    market = Market(host_key=host.public_key, bank_key=bank.public_key,
                    capacity=driver.capacity(), driver_name=driver.name)
    now = time.time_ns()
    for seq, payer in enumerate((alice, bob), start=1):
        receipt = make_receipt(bank, transfer_id=f"t{seq}", payer=payer, payee=host.public_key,
                               amount=FUNDS, memo="fund", seq=seq, settled_ns=now)
        market.fund(receipt, now)
        driver.create(payer)
    market.place_bid(alice, parse_bid("1h cpu:1,0,1", now_ns=now), now)
    market.place_bid(bob, parse_bid("3h cpu:1,0,1", now_ns=now), now)
    shares = market.shares_map()
    assert shares[alice].cpu == pytest.approx(0.75, rel=1e-3)
    assert shares[bob].cpu == pytest.approx(0.25, rel=1e-3)
    driver.apply(shares)

    cpu = max(os.sched_getaffinity(0))
    procs = [_spawn_pinned(driver, alice, cpu), _spawn_pinned(driver, bob, cpu)]
    try:
        time.sleep(0.3)  # both running and settled on the CPU
        a, b = _run_market(market, driver, 3.0, (alice, bob))
        assert b > 0.0, "the second process got no CPU at all"
        ratio = a / b
        print(f"bids 3:1 -> CPU {a:.3f} s : {b:.3f} s = {ratio:.3f}")
        assert abs(ratio / 3.0 - 1.0) <= 0.10, f"CPU split {ratio:.3f}, wanted 3 ± 10 %"

        # bob now spends as fast as alice: rates 1:1, and the kernel must follow within 2 s
        now = time.time_ns()
        market.place_bid(bob, parse_bid("1h cpu:1,0,1", now_ns=now), now)
        shares = market.shares_map()
        assert shares[alice].cpu == pytest.approx(shares[bob].cpu, rel=0.02)
        driver.apply(shares)
        a, b = _run_market(market, driver, 2.0, (alice, bob))
        ratio = a / b
        print(f"bids 1:1 -> CPU {a:.3f} s : {b:.3f} s = {ratio:.3f}")
        assert abs(ratio - 1.0) <= 0.10, f"CPU split {ratio:.3f} after the rebid, wanted 1"
        assert market.conserved()
        assert market.earnings > 0  # the tick charged for the CPU actually used
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
