"""docs/operations.md's runbook, run as written: every `machine$ ...` line of the section
"The runbook: three machines" is executed in order, in that machine's own TYCOON_HOME.

Substitutions, and only these: the pasted public keys (`UBANK…`) are the keys the earlier
`key show` lines made; the nodes n1..n3 become three loopback nodes, each with its own
client, route and monitoring ports (`--cluster` gets them as HOST:PORT:ROUTE:HTTP, and
`DNS:n1` in the certificate request becomes `IP:127.0.0.1`); /etc and /var/lib become a
temporary directory. `nats-server -c` starts a node from the file the box rendered,
`nats-server --signal reload` sends that node SIGHUP, `curl` is an HTTP GET, `export` sets
the variable for every later line. Services (`serve`) run until their ready line. A line
commented `# refused` must fail. The certificates are made by the runbook's own openssl
lines (skipped without openssl). The host's auctioneer runs on real cgroups as written
where the test runs as root with the cgroup v1 controllers (its cgroup root renamed per
run, removed at the end), else with `--driver simulated` in place of the cgroups options."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tycoon.bus.keys import KeyStore, subject_id
from tycoon.cli.main import main
from tycoon.natsserver import NatsServer, free_port

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operations.md"
KEY_OF = {"UBANK": ("bank", "bank"), "USLS2": ("sls-2", "sls-2"), "USLS": ("sls-1", "sls"),
          "UHOST": ("host-1", "host-1"), "UALICE": ("laptop", "alice"),
          "UOPER": ("box", "operator"), "USTORE": ("store", "store")}
URLS = "nats://n1:4222,nats://n2:4222,nats://n3:4222"
CGROUPS = re.compile(r"--driver cgroups --cgroup-root (\S+) --driver-state-dir \S+")


def cgroups_missing() -> str | None:
    """Why the runbook's host cannot run on cgroups here (None: it can)."""
    from tycoon.vmm.cgroups_v1 import lacks

    return lacks(pinned=True)


def remove_cgroup_root(root: str) -> None:
    """What the host's cgroups driver left (it keeps its root for a restart)."""
    from tycoon.vmm.cgroupfs import find_mounts
    from tycoon.vmm.cgroups import CgroupsDriver

    if not any((m / root).is_dir() for m in find_mounts().v1.values()):
        return
    CgroupsDriver(root=root, version="v1", state_dir=None, strict=False).teardown()
    for mount in {*find_mounts().v1.values()}:
        for sandbox in sorted((mount / root).glob("**/"), reverse=True):
            with contextlib.suppress(OSError):
                sandbox.rmdir()


def runbook() -> list[tuple[str, str, bool]]:
    """``(machine, command, refused)`` of every command line of the runbook, in order."""
    text = DOC.read_text()
    section = text[text.index("## The runbook"):text.index("### principals.conf")]
    out = []
    for m in re.finditer(r"^([\w-]+)\$\s+(\S.*)$", section, re.M):
        command, _, comment = m.group(2).partition("  #")
        out.append((m.group(1), command.strip(), comment.strip().startswith("refused")))
    return out


def test_the_runbook_has_every_step() -> None:
    commands = " ".join(c for _, c, _ in runbook())
    for part in ("openssl", "key show", "admit bank", "admit host", "admit sls sls-2",
                 "--driver cgroups --cgroup-root",
                 "--cluster n1,n2,n3", "--tls-cert", "--cluster-ca", "--http-port",
                 "--dry-run", "nats-server -c", "/varz", "SSL_CERT_FILE", "streams ensure",
                 "key trust", "bank serve", "sls-2 sls serve", "auctioneer serve",
                 "status --check", "bank open", "bank mint", "hosts", "revoke",
                 "admit store", "store serve", "host push", "--service store",
                 "--signal reload"):
        assert part in commands, part
    machines = {m for m, _, _ in runbook()}
    assert {"box", "bank", "sls-1", "sls-2", "host-1", "laptop", "n1", "n2", "n3"} <= machines


class Runbook:
    """The machines' homes, the cluster's nodes and the services, as the lines need them."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp, self.monkeypatch = tmp_path, monkeypatch
        self.ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
        self.urls = ",".join(f"nats://127.0.0.1:{c}" for c, _, _ in self.ports)
        self.servers: dict[str, NatsServer] = {}
        self.procs: list[asyncio.subprocess.Process] = []
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("TYCOON_NATS", "SSL_CERT_FILE", "TYCOON_HOME")}
        self.env["PYTHONPATH"] = str(ROOT)
        for name in ("TYCOON_NATS", "SSL_CERT_FILE", "TYCOON_HOME"):
            monkeypatch.delenv(name, raising=False)
        self.outputs: dict[str, str] = {}
        self.cgroup_root = f"tycoon-runbook-{os.getpid()}"
        self.cgroups = cgroups_missing() is None

    def home(self, machine: str) -> Path:
        return self.tmp / "homes" / machine

    def rewrite(self, command: str) -> str:
        for token, (machine, name) in KEY_OF.items():
            if f"{token}…" in command:
                key = KeyStore(self.home(machine)).load(name).public_key
                command = command.replace(f"{token}…", key)
        command = command.replace(URLS, self.urls)
        nodes = ",".join(f"127.0.0.1:{c}:{r}:{h}" for c, r, h in self.ports)
        command = command.replace("--cluster n1,n2,n3", f"--cluster {nodes}")
        command = command.replace("subjectAltName=DNS:n1", "subjectAltName=IP:127.0.0.1")
        for real in ("/etc/", "/var/lib/"):
            command = command.replace(real, f"{self.tmp}{real}")
        if self.cgroups:
            return CGROUPS.sub(lambda m: m.group(0).replace(m.group(1), self.cgroup_root),
                               command)
        return CGROUPS.sub("--driver simulated", command)

    async def run(self, machine: str, command: str, refused: bool) -> None:
        argv = shlex.split(self.rewrite(command))
        if argv[0] == "openssl":
            (self.tmp / "etc" / "nats").mkdir(parents=True, exist_ok=True)
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (command, done.stderr)
        elif argv[0] == "export":
            name, _, value = argv[1].partition("=")
            self.env[name] = value
            self.monkeypatch.setenv(name, value)
        elif argv[0] == "nats-server":
            await self.node(machine, argv)
        elif argv[0] == "curl":
            node = int(machine[1:]) - 1
            url = argv[-1].replace(":8222", f":{self.ports[node][2]}")
            self.outputs[f"{machine} curl"] = await asyncio.to_thread(fetch, url)
        elif "serve" in argv:
            await self.serve(machine, argv)
        else:
            await self.tycoon(machine, command, argv, refused)

    async def node(self, machine: str, argv: list[str]) -> None:
        if "--signal" in argv:
            server = self.servers[machine]
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)
            return
        client, _, _ = self.ports[int(machine[1:]) - 1]
        server = NatsServer(port=client, config=self.home("box") / argv[-1],
                            log_file=self.tmp / f"{machine}.log")
        await server.start()
        self.servers[machine] = server

    async def serve(self, machine: str, argv: list[str]) -> None:
        (self.tmp / "var" / "lib" / "tycoon").mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tycoon.cli.main", "--home", str(self.home(machine)),
            *argv[1:], cwd=ROOT, env=self.env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stderr is not None
        service = argv[argv.index("serve") - 1]
        want = b"ready" if service in ("bank", "store") else b"serving on"
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, (argv, (await proc.stderr.read()).decode()[-2000:])
            if want in line:
                self.outputs[f"{machine} serve"] = line.decode()
                return

    async def tycoon(self, machine: str, command: str, argv: list[str],
                     refused: bool) -> None:
        full = ["--home", str(self.home(machine)), *argv[1:]]
        end = time.monotonic() + 15
        while True:  # a refusal waits for the reload; a check for the services to answer
            code = await asyncio.to_thread(main, full)
            if (code != 0) == refused or time.monotonic() > end:
                break
            await asyncio.sleep(0.3)
        assert (code != 0) == refused, (machine, command, code)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
        await asyncio.gather(*(s.stop() for s in self.servers.values()),
                             return_exceptions=True)
        if self.cgroups:
            remove_cgroup_root(self.cgroup_root)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the runbook makes its certs "
                                                           "with openssl")
async def test_the_runbook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    book = Runbook(tmp_path, monkeypatch)
    try:
        for machine, command, refused in runbook():
            capsys.readouterr()
            await book.run(machine, command, refused)
            out = capsys.readouterr().out
            if "--dry-run" in command:
                assert "changes: none" in out, out  # every setting was kept
            if "bank balance" in command and not refused:
                assert "10" in out, out
            if command.endswith("streams info"):  # the leader and replicas, per stream
                assert out.count(" R3 ") == 2 and out.count("leader n") == 2, out
            if " host push " in command:  # a 64-hex digest: the store made alice's bucket
                assert len(out.strip()) == 64, out
            if command.endswith("alice hosts"):  # the laptop sees host-1 through an SLS
                host = KeyStore(book.home("host-1")).load("host-1").public_key
                assert subject_id(host) in out, out
        # the host on real cgroups where this machine allows it (root, v1 controllers)
        driver = "cgroups" if book.cgroups else "simulated"
        assert f"({driver}) serving" in book.outputs["host-1 serve"]
        if book.cgroups:
            from tycoon.vmm.cgroupfs import find_mounts

            assert (find_mounts().v1["cpu"] / book.cgroup_root).is_dir()
        # TLS on every node, for clients and routes; monitoring on loopback only
        for i in (1, 2, 3):
            conf = (book.home("box") / f"nats-n{i}.conf").read_text()
            assert conf.count("cert_file:") == 2 and "ca_file:" in conf, conf
            assert f'http: "127.0.0.1:{book.ports[i - 1][2]}"' in conf
        varz = json.loads(book.outputs["n1 curl"])
        assert varz["http_host"] == "127.0.0.1" and varz["tls_required"] is True
        routez = json.loads(await asyncio.to_thread(
            fetch, f"http://127.0.0.1:{book.ports[0][2]}/routez"))
        assert routez["num_routes"] >= 2
        assert varz["cluster"]["tls_required"] and varz["cluster"]["tls_verify"]  # routes
        # what the runbook promised: no secret left its machine
        for machine, name in (("box", "operator"), ("bank", "bank"), ("sls-1", "sls"),
                              ("sls-2", "sls-2"), ("host-1", "host-1"), ("laptop", "alice")):
            assert KeyStore(book.home(machine)).names() == [name], machine
    finally:
        await book.stop()
