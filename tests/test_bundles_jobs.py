"""Bundles through host.exec: code in before the job starts, results out when it exits
(simulated driver, real unconfined processes; the cgroups test runs them as the account's
uid). Refusals carry a clear code and start nothing."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from jobs_kit import JobMarket, User, job_market

from tycoon.auctioneer.jobhost import JobConfig
from tycoon.auctioneer.jobs import Limits
from tycoon.bundles import client, names
from tycoon.bundles import host as bundles_host
from tycoon.bundles.pack import Limits as BundleLimits
from tycoon.bundles.service import BundleService
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity, subject_id
from tycoon.errors import Rejected
from tycoon.natsserver import NatsServer
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]
PY = sys.executable
SCRIPT = "import pathlib\np = pathlib.Path('out')\np.mkdir()\n" \
         "(p / 'answer.txt').write_text(open('data/in.txt').read().upper())\nprint('done')\n"


async def bucket_for(url: str, user: User) -> str:
    """The account's bucket, made as the store or operator would (an open server here)."""
    nc = await nats.connect(url)
    try:
        return await client.ensure_bucket(nc, subject_id(user.key), max_bytes=4 << 20)
    finally:
        await nc.close()


def crafted(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE,
            linkname: str = "") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return out.getvalue()


@contextlib.asynccontextmanager
async def bundle_service(url: str) -> AsyncIterator[BundleService]:
    """What `tycoon store serve` runs (an open test server: any key will do)."""
    bus = await open_bus(url, Identity.generate())
    service = BundleService(bus)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        await bus.close()


@pytest.fixture
async def js_url() -> AsyncIterator[str]:
    async with NatsServer(jetstream=True) as server, bundle_service(server.url):
        yield server.url


@pytest.fixture
async def market(js_url: str, tmp_path: Path) -> AsyncIterator[JobMarket]:
    limits = Limits(output_rate=10**9, output_burst=10**9, grace_s=0.5)
    async with job_market(js_url, tmp_path, SimulatedDriver(preset="small"),
                          JobConfig(root=tmp_path / "jobs", limits=limits)) as m:
        yield m


def code(src: Path) -> Path:
    (src / "data").mkdir(parents=True)
    (src / "data" / "in.txt").write_text("forty-two")
    (src / "job.py").write_text(SCRIPT)
    return src


async def test_a_job_runs_its_bundle_and_its_results_come_back(market: JobMarket,
                                                               tmp_path: Path) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    await bucket_for(market.url, user)
    digest = await client.push(user.jobs.bus, code(tmp_path / "src"))
    _, stream, sub = await user.jobs.start([PY, "job.py"], cwd="work", bundle=digest,
                                           collect=["out", "missing"])
    async for _ in stream.events(timeout=20):
        pass
    await sub.unsubscribe()
    done = stream.exit
    assert done is not None and done.status == 0 and done.result
    got = await client.pull(user.jobs.bus, done.result, tmp_path / "results")
    assert (got / "out" / "answer.txt").read_text() == "FORTY-TWO"
    assert not (got / "missing").exists()
    listed = (await user.jobs.jobs())["jobs"]  # a --detach caller finds it here
    assert [j.get("result") for j in listed] == [done.result]
    _, plain = await user.jobs.run([PY, "-c", "print(1)"])  # no collect: no result
    assert plain.result is None and plain.result_error is None


async def test_bad_bundles_are_refused_and_nothing_starts(market: JobMarket,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    await bucket_for(market.url, user)
    bus, account = user.jobs.bus, subject_id(user.key)
    escaping = await client.push_bytes(bus, crafted("../../escape.py"))  # as a user would
    link_out = await client.push_bytes(bus, crafted("etc", kind=tarfile.SYMTYPE,
                                                    linkname="/etc"))
    big = await client.push_bytes(bus, crafted("big", b"x" * 5000))
    monkeypatch.setattr(bundles_host, "LIMITS", BundleLimits(member=4096))
    # a bad digest: the meta of `forged` names chunks whose bytes hash to something else
    # (a corrupted store: written here directly, which the test server allows)
    forged = "f" * 64
    meta = {"name": forged, "nuid": "N" * 22, "size": 3, "chunks": 1,
            "digest": "SHA-256=" + base64.urlsafe_b64encode(b"\0" * 32).decode()}
    nc = bus.nc
    await nc.request(names.chunks(account, "N" * 22), b"abc")
    await nc.request(names.metas(account, base64.urlsafe_b64encode(forged.encode()).decode()),
                     json.dumps(meta).encode())
    for bundle, want in ((escaping, "bundle_unsafe"), (link_out, "bundle_unsafe"),
                         (big, "bundle_too_large"), (forged, "bad_digest"),
                         ("0" * 64, "unknown_bundle"), ("nothex", "malformed")):
        with pytest.raises(Rejected) as caught:
            await user.jobs.start([PY, "-c", "open('/tmp/started', 'w')"], bundle=bundle)
        assert caught.value.code == want, (bundle, caught.value)
    assert market.jobhost.table.of(user.key) == []  # not one job was started
    sandbox = market.jobhost.config.root
    assert not any(p.name == "escape.py" for p in Path(sandbox).parent.rglob("escape.py"))
    with pytest.raises(Rejected, match="malformed"):
        await user.jobs.start([PY, "-c", "0"], collect=["../../etc/passwd"])


@pytest.mark.cgroups
async def test_bundles_belong_to_the_jobs_uid(js_url: str, tmp_path: Path) -> None:
    from test_jobs_cgroups import PY as SYSTEM_PY
    from test_jobs_cgroups import UIDS, _driver_and_base

    driver, base = _driver_and_base(tmp_path, "tycoon-bundles-")
    config = JobConfig(root=base / "jobs", uid_file=tmp_path / "uids.json", uid_range=UIDS,
                       limits=Limits(grace_s=0.5))
    try:
        async with job_market(js_url, tmp_path, driver, config, idle_s=1.0) as m:
            user = await m.user()
            await user.fund_and_bid(10)
            await bucket_for(m.url, user)
            digest = await client.push(user.jobs.bus, code(tmp_path / "src"))
            (tmp_path / "secret").write_text("root only")
            os.chmod(tmp_path / "secret", 0o600)
            steal = f"import os; os.symlink('{tmp_path}/secret', 'out/stolen')"
            chunks, done = await user.jobs.run(
                [SYSTEM_PY, "-c", f"exec(open('job.py').read()); {steal}"], bundle=digest,
                collect=["out", "job.py"])
            assert done.status == 0, b"".join(c.data for c in chunks)
            uid = m.jobhost.uids.uid(user.key) if m.jobhost.uids else -1
            home = base / "jobs"
            owners = {p.stat().st_uid for p in home.rglob("*") if "job.py" in str(p)
                      or "data" in str(p)}
            assert owners == {uid}, owners
            # the link out made the whole collection refused: nothing of the host's leaked
            assert done.result is None and done.result_error == "bundle_unsafe"
    finally:
        driver.teardown()
        shutil.rmtree(base, ignore_errors=True)


async def test_a_job_adopted_after_a_restart_still_sends_its_results(
        market: JobMarket, tmp_path: Path) -> None:
    from test_jobs_restart import restart

    user = await market.user()
    await user.fund_and_bid(10)
    await bucket_for(market.url, user)
    script = "import os, time\ntime.sleep(0.6)\nos.mkdir('out')\nopen('out/r', 'w').write('late')\n"
    _, stream, sub = await user.jobs.start([PY, "-c", script], collect=["out"])
    await restart(market, tmp_path)
    async for _ in stream.events(timeout=15):
        pass
    await sub.unsubscribe()
    assert stream.exit is not None and stream.exit.result, stream.exit
    got = await client.pull(user.jobs.bus, stream.exit.result, tmp_path / "got")
    assert (got / "out" / "r").read_text() == "late"
