"""``tycoon demo``: a signed request/reply exchange between two processes over a real server.

``tycoon demo`` starts an embedded nats-server, runs ``tycoon demo serve`` as a
second process, sends it signed requests (one refused on purpose) and prints every
verified reply. It is the smallest end-to-end proof of the wire protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys

from tycoon.bus import subjects
from tycoon.bus.connection import connect
from tycoon.bus.envelope import Message
from tycoon.bus.keys import Identity, subject_id
from tycoon.bus.runner import run_until_signal
from tycoon.bus.service import Endpoint, Service
from tycoon.errors import Rejected
from tycoon.messages import DemoEcho, DemoEchoReply
from tycoon.natsserver import NatsServer


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the smallest proof of the wire protocol: signed "
                                       "request/reply between two processes (make demo is "
                                       "tycoon up --duration 60)")
    demo.set_defaults(func=cmd_demo)
    ops = demo.add_subparsers(dest="op")
    serve = ops.add_parser("serve", help="run the echo service (the second process)")
    serve.set_defaults(func=cmd_serve)


async def echo(msg: Message) -> dict[str, object]:
    """Echo a text back; refuse an empty one (to show a signed error reply)."""
    text = DemoEcho.from_body(msg.body).text
    if not text:
        raise Rejected("malformed", "text must not be empty")
    return DemoEchoReply(text, subject_id(msg.sender), len(text)).to_body()


async def cmd_serve(args: argparse.Namespace) -> int:
    async with connect(args.nats, Identity.generate(), name="tycoon-demo-echo") as bus:
        service = Service(bus, "tycoon-demo", [Endpoint(subjects.DEMO_ECHO, "demo.echo", echo)])
        await service.start()
        print("echo service ready", flush=True)
        await run_until_signal(service)
    return 0


def _show(label: str, msg: Message) -> None:
    print(f"{label} kind={msg.kind} sender={subject_id(msg.sender)} ts={msg.ts_ns} body={msg.body}")


async def cmd_demo(args: argparse.Namespace) -> int:
    async with NatsServer() as server:
        print(f"nats-server on {server.url}")
        env = {**os.environ, "TYCOON_LOG": "error"}
        child = subprocess.Popen(
            [sys.executable, "-m", "tycoon.cli.main", "--nats", server.url, "demo", "serve"],
            stdout=subprocess.PIPE, env=env, text=True,
        )
        try:
            assert child.stdout is not None
            print(await asyncio.to_thread(child.stdout.readline), end="")
            async with connect(server.url, Identity.generate(), name="tycoon-demo-client") as bus:
                print(f"client {subject_id(bus.identity.public_key)} sends three signed requests")
                for text in ("hello, market", "bids are signed", ""):
                    try:
                        reply = await bus.request(subjects.DEMO_ECHO, "demo.echo",
                                                  DemoEcho(text).to_body())
                        _show("verified reply:", reply)
                    except Rejected as error:
                        print(f"verified error reply: code={error.code} message={error.message}")
        finally:
            child.terminate()
            child.wait(5)
    return 0
