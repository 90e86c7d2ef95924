"""The web dashboard (docs/dashboard.md): what it ships, what its server hands out, its
in-browser verifier against the protocol's vectors (under node), and the page itself in a
real headless Chromium against a real ``tycoon up --web``, with forged messages injected.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import msgpack
import nats
import pytest
from polling import until, until_blocking
from up_kit import stop

from tycoon.bus import subjects
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.bus.kinds import KINDS
from tycoon.natsserver import NatsServer
from tycoon.sls.launch import start_sls
from tycoon.sls.service import SLSConfig
from tycoon.web.history import HistorySource, history_json
from tycoon.web.server import DashboardServer, PageConfig

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "tycoon" / "web" / "static"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000")

# ------------------------------------------------------------------ what ships


def test_vendored_files_match_the_hashes_in_vendor_md() -> None:
    listed = dict((path, digest) for digest, path in re.findall(
        r"^([0-9a-f]{64})  (vendor/\S+)$", (STATIC / "VENDOR.md").read_text(), re.M))
    shipped = sorted(p.relative_to(STATIC).as_posix() for p in (STATIC / "vendor").iterdir())
    assert sorted(listed) == shipped
    for path, digest in listed.items():
        assert hashlib.sha256((STATIC / path).read_bytes()).hexdigest() == digest, path


def test_package_data_ships_every_static_file() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("[tool.setuptools.package-data]"):]
    patterns = re.findall(r'"(static/[^"]+)"', block.split("\n\n", 1)[0])
    for path in STATIC.rglob("*"):
        if path.is_file():
            rel = path.relative_to(STATIC.parent).as_posix()
            assert any(fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns), rel


def test_the_page_knows_the_kinds_of_its_feeds() -> None:
    """The page refuses kinds it does not know (``unknown_kind``, as the protocol says);
    it must know every kind its feeds carry, and no kind the protocol does not have."""
    text = (STATIC / "verify.js").read_text()
    listed = re.search(r"const KINDS = new Set\(\[(.*?)\]\)", text, re.S)
    assert listed is not None
    known = set(re.findall(r'"([a-z.]+)"', listed.group(1)))
    assert known <= set(KINDS)
    feeds = {"price", "alloc", "bank.settled", "bank.receipt", "sls.snapshot"}
    assert feeds | {k for k in KINDS if k.startswith("agent.")} <= known


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for path in ("index.html", "dashboard.js", "natsws.js", "verify.js"):
        text = (STATIC / path).read_text()
        assert "http://" not in text and "https://" not in text.replace(
            "https://docs.nats.io", ""), path


NODE_VECTORS = r"""
const V = require(process.argv[2] + "/verify.js");
const fs = require("fs");
const env = JSON.parse(fs.readFileSync(process.argv[3] + "/envelope.json"));
const ref = JSON.parse(fs.readFileSync(process.argv[3] + "/refusals.json"));
const h2b = (h) => Uint8Array.from(Buffer.from(h, "hex"));
const out = {ids: [], senders: [], refusals: []};
for (const s of env.subject_ids) out.ids.push([V.subjectId(s.public_key), s.subject_id]);
for (const v of env.vectors) out.senders.push([V.open(h2b(v.envelope)).sender, v.public_key]);
for (const v of ref.vectors) {
  let code = "ok";
  try {
    if (v.received_on === "") throw new V.Refused("wrong_reply", "a viewer sends no request");
    const r = new V.Receiver(null);
    r.pin = (m) => m;  // these vectors are not on public feeds (pinning: the browser test)
    for (let i = 0; i < Number(v.deliveries || 1); i++) {
      const raw = h2b(v.envelope);
      if (v.max_size && raw.length > Number(v.max_size)) throw new V.Refused("too_large", "");
      r.accept(raw, v.received_on, BigInt(v.now_ns));
    }
  } catch (e) { if (!(e instanceof V.Refused)) throw e; code = e.code; }
  out.refusals.push([v.name, code, v.code]);
}
console.log(JSON.stringify(out));
"""


def test_the_browser_verifier_agrees_with_the_protocol_vectors(tmp_path: Path) -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed: verify.js runs only in the browser test")
    script = tmp_path / "vectors.js"
    script.write_text(NODE_VECTORS)
    done = subprocess.run([node, str(script), str(STATIC), str(ROOT / "docs" / "vectors")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ids"] and all(got == want for got, want in out["ids"])
    assert out["senders"] and all(got == want for got, want in out["senders"])
    assert len(out["refusals"]) >= 30
    for name, got, want in out["refusals"]:
        assert got == want, name


NODE_HISTORY = r"""
const V = require(process.argv[2] + "/verify.js");
const cases = JSON.parse(require("fs").readFileSync(process.argv[3]));
const h2b = (h) => Uint8Array.from(Buffer.from(h, "hex"));
const r = new V.Receiver(null), out = [];
for (const c of cases.stored) {  // one host's history, in the order the server gave it
  try { r.acceptStored(h2b(c.raw), cases.host, BigInt(cases.now_ns)); out.push([c.name, "ok"]); }
  catch (e) { if (!(e instanceof V.Refused)) throw e; out.push([c.name, e.code]); }
}
try {
  r.accept(h2b(cases.stored[0].raw), "tycoon.price." + cases.host, BigInt(cases.now_ns));
  out.push(["live", "ok"]);
} catch (e) { out.push(["live", e.code]); }
console.log(JSON.stringify(out));
"""


def price_body(host: Identity, seq: int, price: float) -> dict[str, object]:
    return {"host": subject_id(host.public_key), "seq": seq, "heartbeat_s": 5.0,
            "name": "node", "driver": "sim",
            "resources": {"cpu": {"capacity": 2000, "price": price, "unit_price": price / 2000,
                                  "utilization": 0.5, "bidders": 1}}}


def test_the_browser_history_rule_accepts_old_signed_updates_only_in_order(
        tmp_path: Path) -> None:
    """History is old by nature: no age limit, but the exact bytes and signature, the
    subject binding, the host's own key, nothing from the future, and strictly rising
    timestamps per host (a server may cut the history, never repeat or reorder it)."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed")
    host, other, stranger = Identity.generate(), Identity.generate(), Identity.generate()
    hid, subject = subject_id(host.public_key), subjects.price(subject_id(host.public_key))
    now = time.time_ns()
    day = 86_400 * 10**9

    def env(who: Identity, seq: int, ts: int, on: str = subject,
            body_of: Identity | None = None) -> bytes:
        return seal(who, "price", price_body(body_of or who, seq, 1.0 + seq), subject=on,
                    ts_ns=ts)

    first = env(host, 1, now - day)
    tampered = bytearray(env(host, 3, now - day + 3 * 10**9))
    tampered[-1] ^= 1
    stored = [
        ("old", first),
        ("old2", env(host, 2, now - day + 2 * 10**9)),
        ("tampered", bytes(tampered)),
        ("other_host", env(other, 4, now - day + 4 * 10**9,
                           on=subjects.price(subject_id(other.public_key)))),
        ("stranger", env(stranger, 5, now - day + 5 * 10**9, body_of=host)),
        ("repeated", first),
        ("reordered", env(host, 6, now - day + 10**9)),
        ("future", env(host, 7, now + 600 * 10**9)),
        ("newer", env(host, 8, now - 10**9)),
    ]
    cases = tmp_path / "history.json"
    cases.write_text(json.dumps({"host": hid, "now_ns": str(now), "stored": [
        {"name": name, "raw": raw.hex()} for name, raw in stored]}))
    script = tmp_path / "history.js"
    script.write_text(NODE_HISTORY)
    done = subprocess.run([node, str(script), str(STATIC), str(cases)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert dict(json.loads(done.stdout)) == {
        "old": "ok", "old2": "ok", "tampered": "bad_signature", "other_host": "wrong_subject",
        "stranger": "forbidden", "repeated": "stale", "reordered": "stale", "future": "stale",
        "newer": "ok", "live": "stale"}  # the live rule would refuse the day-old update


# ------------------------------------------------------------------ the web server


def test_the_server_hands_out_its_files_and_config_only() -> None:
    config = PageConfig("ws://127.0.0.1:1", Identity.generate().seed,
                        Identity.generate().public_key)
    server = DashboardServer(config).start()
    try:
        def get(path: str) -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(server.url + path, timeout=5) as reply:
                    return reply.status, reply.read()
            except urllib.error.HTTPError as error:
                return error.code, b""

        assert get("")[0] == 200 and b"verify.js" in get("")[1]
        status, body = get("config.json")
        assert status == 200 and json.loads(body)["bank_key"] == config.bank_key
        assert get("vendor/nacl-fast.min.js")[0] == 200
        for path in ("../pyproject.toml", "%2e%2e/pyproject.toml", "vendor/", "server.py",
                     "/etc/passwd", "vendor/../../server.py"):
            assert get(path)[0] == 404, path
        status, body = get("history?host=abcdefghijklmnop")
        assert status == 200 and json.loads(body)["envelopes"] == []  # no history source
    finally:
        server.stop()


def test_history_is_handed_out_exactly_as_stored() -> None:
    """``/history`` passes the stored bytes through unchanged — a corrupted one too, for
    the browser to refuse — and asks its source only about well-formed host ids."""
    host = Identity.generate()
    hid = subject_id(host.public_key)
    good = seal(host, "price", price_body(host, 1, 2.0), subject=subjects.price(hid))
    bad = bytearray(good)
    bad[40] ^= 0xFF
    asked: list[str] = []

    def fetch(h: str) -> tuple[str, list[bytes]]:
        asked.append(h)
        return "sls", [good, bytes(bad)]

    server = DashboardServer(PageConfig("ws://127.0.0.1:1", Identity.generate().seed,
                                        Identity.generate().public_key, hosts=[hid]),
                             history=fetch).start()
    try:
        with urllib.request.urlopen(server.url + f"history?host={hid}", timeout=5) as reply:
            body = json.loads(reply.read())
        assert body["source"] == "sls"
        assert [base64.b64decode(e) for e in body["envelopes"]] == [good, bytes(bad)]
        assert history_json(fetch, "../../etc")["error"] and asked == [hid]
    finally:
        server.stop()


@pytest.mark.nats
async def test_history_source_reads_through_the_sls_else_prices(tmp_path: Path) -> None:
    """The server side of ``/history``: a host's stored envelopes, byte for byte as the host
    signed them, through ``sls.history``; with no SLS, by direct gets from PRICES."""
    async with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        sls = await start_sls(server.url, None, SLSConfig())  # creates PRICES
        host = Identity.generate()
        hid = subject_id(host.public_key)
        sent = [seal(host, "price", price_body(host, seq, 1.0 + seq), subject=subjects.price(hid))
                for seq in range(1, 6)]
        nc = await nats.connect(server.url)
        for raw in sent:
            await nc.publish(subjects.price(hid), raw)
        await nc.flush()
        await nc.close()
        source = HistorySource(server.url, Identity.generate(), newest=4)
        try:
            got = await until(lambda: _full(asyncio.to_thread(source.fetch, hid), 4),
                              what="four stored prices")
            assert got == ("sls", sent[-4:])
            await sls.stop()
            assert await asyncio.to_thread(source.fetch, hid) == ("jetstream", sent[-4:])
        finally:
            await asyncio.to_thread(source.close)


async def _full(fetching, n: int):
    source, envelopes = await fetching
    return (source, envelopes) if len(envelopes) == n else None


# ------------------------------------------------------------------ a real browser


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromium-driver, installed when missing and we are root."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e .[dev])")
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if None in found and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run("apt-get update -qq && apt-get install -y -qq chromium chromium-driver",
                       shell=True, env=env, capture_output=True, timeout=900)
        found = shutil.which("chromium"), shutil.which("chromedriver")
    if None in found:
        pytest.skip("chromium and chromium-driver are not installed and cannot be "
                    "(apt-get install chromium chromium-driver needs root and Debian)")
    return found[0] or "", found[1] or ""


@pytest.fixture
def browser(chromium: tuple[str, str]) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    profile = tempfile.mkdtemp(prefix="tycoon-chromium-")
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(chromium[1]))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(predicate, timeout: float, what: str):
    """Poll the page; an element the page re-rendered meanwhile counts as "not yet"."""
    from selenium.common.exceptions import StaleElementReferenceException

    return until_blocking(predicate, timeout=timeout, what=what,
                          ignore=(StaleElementReferenceException,))


def read_until(proc: subprocess.Popen[str], pattern: str, seen: list[str],
               timeout: float = 120) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("tycoon up stopped:\n" + "".join(seen))
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"no {pattern!r} in time:\n" + "".join(seen))


def forge(intruder: Identity) -> list[tuple[str, bytes]]:
    """Two forgeries and one honest message on the intruder's own agent subjects."""
    me = subject_id(intruder.public_key)
    bad_sig = bytearray(seal(intruder, "agent.warning", {"message": "FORGED-BADSIG"},
                             subject=subjects.agent(me, "warning")))
    bad_sig[-1] ^= 0x01
    stranger = Identity.generate()  # a valid signature, by a key that is not agent `me`
    wrong_signer = seal(stranger, "agent.warning", {"message": "FORGED-SIGNER"},
                        subject=subjects.agent(me, "warning"))
    honest = seal(intruder, "agent.warning", {"message": "HONEST-INTRUDER"},
                  subject=subjects.agent(me, "warning"))
    return [(subjects.agent(me, "warning"), bytes(bad_sig)),
            (subjects.agent(me, "warning"), wrong_signer),
            (subjects.agent(me, "warning"), honest)]


async def publish(url: str, intruder: Identity, messages: list[tuple[str, bytes]]) -> None:
    nc = await nats.connect(url, nkeys_seed_str=intruder.seed, allow_reconnect=False)
    try:
        for subject, raw in messages:
            await nc.publish(subject, raw)
        await nc.flush()
        assert nc.last_error is None, nc.last_error
    finally:
        await nc.close()


PAST_POINTS = ("return [...window.tycoonDashboard.hosts.values()].flatMap((h) => "
               "h.points.filter((p) => p.past).map((p) => p.ts.toString()))")


def check_tampered_history(browser, state: Path, nats_url: str, artifacts: Path) -> None:
    """A second dashboard on the same market whose history path corrupts one envelope per
    host (as a tampering SLS or server would): each is refused and not drawn, the rest are."""
    from tycoon.cli.web import page_config
    from tycoon.deploy import Deployment

    deployment = Deployment.load(state)
    source = HistorySource(nats_url, deployment.store.load(deployment.operator_key))
    tampered: list[int] = []

    def corrupt(host: str) -> tuple[str, list[bytes]]:
        where, envelopes = source.fetch(host)
        if len(envelopes) >= 2:
            i = len(envelopes) // 2
            raw = bytearray(envelopes[i])
            raw[-10] ^= 0x40  # a signature byte: the bytes no longer verify
            envelopes[i] = bytes(raw)
            tampered.append(msgpack.unpackb(raw[35:-64])[3])
        return where, envelopes

    server = DashboardServer(page_config(deployment), history=corrupt,
                             on_stop=source.close).start()
    try:
        browser.get(server.url)
        wait_for(lambda: browser.find_element("id", "status").text == "connected", 30,
                 "the second page to connect")
        wait_for(lambda: tampered and browser.find_element("id", "refusals").text.count(
            "bad_signature") >= len(tampered), 30, "the tampered history to be refused")
        refusals = browser.find_element("id", "refusals").text
        assert "history of tycoon.price." in refusals
        drawn = set(browser.execute_script(PAST_POINTS))
        assert drawn and not drawn & {str(ts) for ts in tampered}
        assert int(browser.find_element("id", "refused").text) >= len(tampered)
        browser.save_screenshot(str(artifacts / "tampered-history.png"))
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.nats
@pytest.mark.timeout(420)
def test_the_dashboard_verifies_a_live_market_in_chromium(browser, tmp_path: Path) -> None:
    state = tmp_path / "market"
    state.mkdir()
    intruder = Identity.generate()  # an agent key allowed to publish its own agent events
    (state / "principals.conf").write_text(f"agent  {intruder.public_key}  intruder\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tycoon.cli.main", "up", "--hosts", "2", "--agents", "1",
         "--duration", "240", "--state", str(state), "--web", "--heartbeat", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "TYCOON_HOME": str(state)})
    seen: list[str] = []
    artifacts = Path(tempfile.mkdtemp(prefix="tycoon-web-test-"))
    try:
        nats_url = read_until(proc, r"nats-server on (nats://\S+)", seen).group(1)
        page = read_until(proc, r"dashboard at (http://\S+/)", seen).group(1)
        read_until(proc, r"market ready", seen)
        browser.get(page)
        count = lambda name: int(browser.find_element("id", name).text or 0)  # noqa: E731
        wait_for(lambda: browser.find_element("id", "status").text == "connected", 30,
                 "the page to connect to nats-server's websocket")
        first = wait_for(lambda: count("verified"), 60, "a verified message")
        wait_for(lambda: count("verified") > first, 60, "the verified count to rise")
        prices = wait_for(lambda: [e.text for e in browser.find_elements(
            "css selector", "#hosts td.price") if e.text.strip()], 60, "a host's price")
        assert all(float(p) >= 0 for p in prices)
        names = browser.find_element("id", "hosts").text
        assert "host-1" in names and "host-2" in names
        assert count("refused") == 0
        # the history, loaded from /history before the page went live, verified and drawn
        assert count("history") > 0
        assert browser.find_element("id", "history-from").text == "(from sls)"
        assert browser.execute_script(PAST_POINTS), "no history point drawn"
        check_tampered_history(browser, state, nats_url, artifacts)
        browser.get(page)
        wait_for(lambda: browser.find_element("id", "status").text == "connected", 30,
                 "the page to reconnect")

        asyncio.run(publish(nats_url, intruder, forge(intruder)))
        wait_for(lambda: count("refused") >= 2, 30, "the forgeries to be refused")
        refusals = browser.find_element("id", "refusals").text
        assert "bad_signature" in refusals and "forbidden" in refusals, refusals
        wait_for(lambda: "HONEST-INTRUDER" in browser.page_source, 30,
                 "the intruder's honest message (the injection path works)")
        shown = browser.find_element("tag name", "main").text
        assert "FORGED" not in shown
        assert "FORGED" not in browser.find_element("id", "agents").text
        shot = artifacts / "dashboard.png"
        browser.save_screenshot(str(shot))
        print(f"\nscreenshot: {shot}")
        if os.environ.get("TYCOON_SCREENSHOT"):
            shutil.copy(shot, os.environ["TYCOON_SCREENSHOT"])
    finally:
        stop(proc)
