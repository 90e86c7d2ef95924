"""Red team: bundles and the hosts' JetStream rights, on a real permissioned nats-server
(the fixture of tests/test_bundles_bus.py), and crafted trees for ``--collect`` (pure)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from test_bundles_bus import Market, exec_by, market  # noqa: F401  (the fixture)

from tycoon.bundles import client, names
from tycoon.bundles.collect import collect
from tycoon.bundles.pack import Limits
from tycoon.bundles.service import BundleService
from tycoon.bundles.state import StoreState
from tycoon.errors import Rejected


@pytest.mark.nats
@pytest.mark.hostile
async def test_a_hostile_host_cannot_steer_a_message_get_answer_into_the_bank(
        market: Market) -> None:  # noqa: F811
    """A host holding STREAM.MSG.GET (as hosts did to read buckets) has the server send
    the answer to any reply subject: into SETTLEMENTS (2 GiB, discard old: junk evicts
    receipts) or onto a JetStream API subject. Hosts hold no JetStream right (72bd133)."""
    m = market
    alice = m.id(m.alice)
    await m.bus["store"].nc.jetstream().publish(names.chunks(alice, "x"), b"stored")
    for reply in ("tycoon.settlement.junk.junk", "$JS.API.STREAM.PURGE.PRICES",
                  "$JS.API.STREAM.DELETE.SETTLEMENTS"):
        await m.host.nc.publish(names.msg_get(alice), b'{"seq": 1}', reply=reply)
        await m.host.nc.publish("$JS.API.STREAM.MSG.GET.PRICES", b'{"seq": 1}', reply=reply)
    await m.host.nc.flush()
    await asyncio.sleep(0.3)
    assert "SETTLEMENTS" in await m.streams()
    assert await m.messages("PRICES") == 3
    assert await m.messages("SETTLEMENTS") == 0


def _deep(root: Path, depth: int) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)


def _undeep(root: Path, depth: int) -> None:
    """Remove a chain of ``d`` too deep for shutil.rmtree's recursion."""
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(depth - 1):
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        for fd in reversed(fds):
            os.rmdir("d", dir_fd=fd)
    finally:
        for fd in fds:
            os.close(fd)


def test_collecting_links_to_a_sparse_file_reads_no_more_than_the_limit(tmp_path: Path) -> None:
    """A job names a directory of 40 hard links to one sparse 1 MiB file (no disk used):
    the host must refuse before holding 40 MiB in memory (64 MiB × 10,000 by default)."""
    out = tmp_path / "out"
    out.mkdir()
    with open(out / "big", "wb") as f:
        f.truncate(1 << 20)
    for i in range(40):
        os.link(out / "big", out / f"l{i}")
    limits = Limits(bundle=4 << 20, member=1 << 20, total=2 << 20, members=1000)
    tracemalloc.start()
    try:
        with pytest.raises(Rejected) as refused:
            collect(tmp_path, tmp_path, ["out"], limits, owner=os.getuid())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.code == "bundle_too_large"
    assert peak < 6 << 20, peak


def test_collecting_a_very_deep_tree_is_refused_cleanly(tmp_path: Path) -> None:
    """1,200 nested directories: a clear refusal, not a RecursionError in the host's
    exit path (which would never publish the job's exit) holding a descriptor per level."""
    shm = Path("/dev/shm")  # tmpfs: 1,200 levels made and removed in milliseconds
    root = Path(tempfile.mkdtemp(dir=shm)) if os.access(shm, os.W_OK) else tmp_path
    _deep(root, 1200)
    try:
        with pytest.raises(Rejected) as refused:
            collect(root, root, ["d"], owner=os.getuid())
        assert refused.value.code == "bundle_unsafe"
    finally:
        _undeep(root, 1200)
        root.rmdir()


@pytest.mark.nats
@pytest.mark.hostile
async def test_one_proof_lets_a_host_store_one_bundles_worth_not_fill_the_bucket(
        market: Market) -> None:  # noqa: F811
    """A hostile host keeps an account's signed host.exec (with collect): its proof for
    storing that job's results. Re-used for object after object, it would fill the
    account's bucket (nothing in it expires) so the owner could push nothing more."""
    m = market
    await m.service.stop()  # the store's service, with a 256 KiB bundle limit
    service = BundleService(m.bus["store"], limits=Limits(bundle=256 << 10))
    await service.start()
    try:
        alice = m.ids["alice"]
        proof = exec_by(alice, m.host, collect=["out"])
        stored, refused = 0, None
        for _ in range(8):  # 8 × 200 KiB: more than the 1 MiB bucket
            try:
                await client.push_bytes(m.host, os.urandom(200 << 10),
                                        account=alice.public_key, proof=proof)
                stored += 1
            except Rejected as error:
                refused = error.code
                break
        assert stored == 1 and refused == "bundle_too_large", (stored, refused)
        assert await client.push_bytes(m.alice, os.urandom(200 << 10))  # room left
    finally:
        await service.stop()


@pytest.mark.nats
@pytest.mark.hostile
async def test_restarting_the_store_does_not_renew_a_proofs_budget(
        market: Market, tmp_path: Path) -> None:  # noqa: F811
    """The hostile host stores one job's results, waits for (or causes) a restart of the
    store, and stores again with the same proof: the budget lives in the store's SQLite
    file, so the second upload is refused as if no restart had happened."""
    m = market
    await m.service.stop()
    limits, db = Limits(bundle=256 << 10), tmp_path / "restarted.db"
    alice = m.ids["alice"]
    proof = exec_by(alice, m.host, collect=["out"])
    for run in range(2):
        state = StoreState(db)
        service = BundleService(m.bus["store"], limits=limits, state=state)
        await service.start()
        try:
            if run == 0:
                await client.push_bytes(m.host, os.urandom(200 << 10),
                                        account=alice.public_key, proof=proof)
            else:
                with pytest.raises(Rejected) as refused:
                    await client.push_bytes(m.host, os.urandom(200 << 10),
                                            account=alice.public_key, proof=proof)
                assert refused.value.code == "bundle_too_large"
                assert state.spent(proof) == 200 << 10
        finally:
            await service.stop()
            state.close()
