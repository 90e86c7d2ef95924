"""docs/operations.md's runbook, run as written: every `machine$ tycoon ...` line of the
section "The runbook: three machines" is executed in that machine's own TYCOON_HOME.

Substitutions, and only these: the pasted public keys (`UBANK…`) are the keys the earlier
`key show` lines made; the node names n1..n3 become three loopback nodes (ports chosen
here); /var/lib/tycoon becomes a temporary directory; the TLS options are dropped (no
certificate on a test machine; TLS rendering is covered by test_deploy_keys) and the
monitoring port is off (three nodes on one machine cannot share it). Services
(`serve`) run until their ready line, on the cluster started from the rendered configs."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from tycoon.bus.keys import KeyStore
from tycoon.cli.main import main
from tycoon.natsserver import NatsServer, free_port

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operations.md"
KEY_OF = {"UBANK": ("bank", "bank"), "USLS": ("sls", "sls"), "UHOST": ("host-1", "host-1"),
          "UALICE": ("laptop", "alice"), "UOPER": ("box", "operator")}
READY = {"bank": b"ready", "auctioneer": b"serving on"}


def runbook() -> list[tuple[str, str]]:
    """``(machine, command)`` of every command line of the runbook section, in order."""
    text = DOC.read_text()
    section = text[text.index("## The runbook"):text.index("### principals.conf")]
    joined = re.sub(r"\\\n\s*", " ", section)
    return [(m.group(1), m.group(2).split("  #")[0].strip())
            for m in re.finditer(r"^([\w-]+)\$\s+(tycoon .*)$", joined, re.M)]


def test_the_runbook_has_every_step() -> None:
    commands = " ".join(c for _, c in runbook())
    for part in ("key show", "admit bank", "admit host", "revoke", "init", "--cluster",
                 "key trust", "bank serve", "auctioneer serve", "streams ensure"):
        assert part in commands, part


async def test_the_runbook_runs(tmp_path: Path) -> None:
    nodes = [(free_port(), free_port()) for _ in range(3)]
    urls = ",".join(f"nats://127.0.0.1:{c}" for c, _ in nodes)
    cluster = ",".join(f"127.0.0.1:{c}:{r}" for c, r in nodes)
    homes: dict[str, Path] = {}
    servers: list[NatsServer] = []
    procs: list[asyncio.subprocess.Process] = []

    def home(machine: str) -> Path:
        return homes.setdefault(machine, tmp_path / machine)

    def rewrite(command: str) -> list[str]:
        for token, (machine, name) in KEY_OF.items():
            if f"{token}…" in command:
                command = command.replace(f"{token}…", KeyStore(home(machine)).load(name)
                                          .public_key)
        command = command.replace("nats://n1:4222,nats://n2:4222,nats://n3:4222", urls)
        command = command.replace("--cluster n1,n2,n3", f"--cluster {cluster}")
        command = re.sub(r"--tls-(cert|key) \S+ ?", "", command)
        command = command.replace("--http-port 8222", "--http-port 0")  # 3 nodes, 1 machine
        command = command.replace("/var/lib/tycoon", str(tmp_path / "var"))
        argv = shlex.split(command)
        assert argv[0] == "tycoon"
        return argv[1:]

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TYCOON_NATS": urls}
    try:
        for machine, command in runbook():
            argv = ["--home", str(home(machine)), *rewrite(command)]
            if "serve" in argv:
                if not servers:  # the cluster, from the configs the box rendered
                    box = home("box")
                    servers = [NatsServer(port=c, config=box / f"nats-n{i}.conf",
                                          log_file=tmp_path / f"n{i}.log")
                               for i, (c, _) in enumerate(nodes, 1)]
                    await asyncio.gather(*(s.start() for s in servers))
                (tmp_path / "var").mkdir(exist_ok=True)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tycoon.cli.main", *argv, cwd=ROOT, env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                procs.append(proc)
                assert proc.stdout is not None and proc.stderr is not None
                want = READY["bank" if "bank" in argv[argv.index("serve") - 1] else
                             "auctioneer"]
                while True:
                    line = await asyncio.wait_for(proc.stdout.readline(), 60)
                    assert line, (command, (await proc.stderr.read()).decode()[-2000:])
                    if want in line:
                        break
                continue
            os.environ["TYCOON_NATS"] = urls
            try:
                code = await asyncio.to_thread(main, argv)
            finally:
                del os.environ["TYCOON_NATS"]
            assert code == 0, (machine, command)
        # what the runbook promised: no secret left its machine
        assert set(KeyStore(home("box")).names()) == {"operator"}
        assert set(KeyStore(home("bank")).names()) == {"bank"}
    finally:
        for proc in procs:
            proc.terminate()
            await proc.wait()
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
