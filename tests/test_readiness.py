"""``tycoon up`` counts a child as ready only when it writes READY=1 to its ready pipe
(tycoon.supervisor): printed or logged text, this run's or an earlier one's, never counts."""

from __future__ import annotations

import sys
from pathlib import Path

from tycoon.supervisor import Child, notify_ready


def script(tmp_path: Path, source: str) -> Child:
    """A child running ``source`` (its ``--ready-fd N`` in sys.argv) instead of tycoon."""
    return Child("svc", [], tmp_path / "logs", program=[sys.executable, "-c", source])


READY_FD = "fd = int(sys.argv[sys.argv.index('--ready-fd') + 1])\n"


async def test_the_old_ready_text_is_not_readiness(tmp_path: Path) -> None:
    """A child that prints and logs every line the old matcher looked for, and then hangs
    without writing to its pipe, is not ready."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "svc.log").write_text("bank ready\n")  # an earlier run's log
    child = script(tmp_path, "import sys, time\n"
                             "print('bank UX ready: db bank.db', flush=True)\n"
                             "print('sls serving on nats://x', flush=True)\n"
                             "print('auctioneer of host H serving on nats://x', flush=True)\n"
                             "time.sleep(30)\n")
    await child.start(notify=True)
    try:
        assert not await child.ready(1.0)
        assert "serving on" in child.out_path.read_text()  # it did print the old text
    finally:
        await child.stop(2)


async def test_a_child_that_exits_is_not_ready_at_once(tmp_path: Path) -> None:
    child = script(tmp_path, "print('bank UX ready', flush=True)\n")
    await child.start(notify=True)
    try:
        assert not await child.ready(30.0)  # EOF on the pipe: no wait for the timeout
    finally:
        await child.stop(2)


async def test_a_child_that_writes_something_else_is_not_ready(tmp_path: Path) -> None:
    child = script(tmp_path, "import os, sys, time\n" + READY_FD +
                   "os.write(fd, b'ready\\n'); os.close(fd); time.sleep(30)\n")
    await child.start(notify=True)
    try:
        assert not await child.ready(5.0)
    finally:
        await child.stop(2)


async def test_the_ready_line_on_the_pipe_is_readiness(tmp_path: Path) -> None:
    """Silent on stdout, READY=1 on the pipe (as notify_ready writes it): ready."""
    child = script(tmp_path, "import sys, time\n" + READY_FD +
                   "from tycoon.supervisor import notify_ready\n"
                   "notify_ready(fd)\ntime.sleep(30)\n")
    await child.start(notify=True)
    try:
        assert await child.ready(20.0)
        assert child.out_path.read_text() == ""
    finally:
        assert await child.stop(2) is not None


def test_notify_ready_without_a_supervisor_is_a_no_op() -> None:
    notify_ready(None)  # a service run by hand: no --ready-fd


def test_the_service_commands_take_ready_fd() -> None:
    import argparse

    from tycoon.cli import agent, auctioneer, bank, sls

    for module, argv in ((bank, ["bank", "serve"]), (sls, ["sls", "serve"]),
                         (auctioneer, ["auctioneer", "serve"]), (agent, ["broker", "serve"])):
        parser = argparse.ArgumentParser()
        module.register(parser.add_subparsers())
        assert parser.parse_args([*argv, "--ready-fd", "7"]).ready_fd == 7
