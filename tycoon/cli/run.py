"""``tycoon run --account ID -- CMD...``: run a command inside a host account's cgroup sandbox.

The "UNIX account" style of virtualization of the original Tycoon: the auctioneer (with the
cgroups driver) keeps one cgroup per host account and sets its weights from the market; this
command starts a process in it, so the kernel charges and limits that process as the account.
The child joins the sandbox before it execs (so nothing it forks escapes), gets
``TYCOON_ACCOUNT`` and ``TYCOON_PORTS`` (the TCP ports the market granted the account) in its
environment, and its exit code is passed through (128 + N when killed by signal N).
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tycoon.errors import Rejected
from tycoon.vmm import cgroupfs
from tycoon.vmm.cgroups import DEFAULT_ROOT, DEFAULT_STATE_DIR, VERSIONS, CgroupsDriver

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    run = sub.add_parser(
        "run",
        help="run a command inside a host account's sandbox (cgroups driver)",
        description="Start CMD inside the cgroup of a host account on this host; "
        "its exit code is passed through.",
    )
    add_arguments(run)
    run.set_defaults(func=cmd_run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tycoon run`` (shared with ``python -m tycoon.cli.run``)."""
    parser.add_argument("--account", required=True, help="the host account id (a public key)")
    parser.add_argument("--driver-root", default=DEFAULT_ROOT,
                        help=f"the cgroups driver's root (default {DEFAULT_ROOT})")
    parser.add_argument("--driver-parent", default="/",
                        help="where the root sits in each hierarchy ('/' or 'self')")
    parser.add_argument("--cgroup-version", default="auto", choices=VERSIONS)
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help="where the driver records port grants")
    parser.add_argument("--create", action="store_true",
                        help="create the sandbox if it does not exist (it then has no share)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the command in the sandbox and return its exit code."""
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("error: no command given (tycoon run --account ID -- CMD ...)", file=sys.stderr)
        return 2
    try:
        driver = CgroupsDriver(
            root=args.driver_root, parent=args.driver_parent, version=args.cgroup_version,
            state_dir=args.state_dir, strict=False,
        )
        if not driver.exists(args.account):
            if not args.create:
                raise Rejected(
                    "unknown_account",
                    f"no sandbox for account {args.account[:24]} on this host "
                    "(fund the host account and bid first, or pass --create)",
                )
            driver.create(args.account)
        procs_files = [
            d / "cgroup.procs" for d in driver.backend.dirs(driver.sandbox(args.account))
        ]
        ports = driver.ports_of(args.account)
    except Rejected as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return 1
    env = dict(os.environ)
    env["TYCOON_ACCOUNT"] = args.account
    env["TYCOON_PORTS"] = ",".join(str(p) for p in ports)
    return spawn_in(procs_files, command, env)


def spawn_in(procs_files: Sequence[Path], command: Sequence[str], env: dict[str, str]) -> int:
    """Start ``command`` with its pid written to every ``cgroup.procs`` before exec; wait for it,
    forwarding termination signals, and return its exit code."""
    paths = [str(p) for p in procs_files]
    try:
        child = subprocess.Popen(list(command), env=env,
                                 preexec_fn=functools.partial(cgroupfs.join, paths))
    except FileNotFoundError:
        print(f"error: command not found: {command[0]}", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"error: permission denied: {command[0]}", file=sys.stderr)
        return 126
    except subprocess.SubprocessError as error:
        print(f"error: driver_failed: cannot join the sandbox: {error}", file=sys.stderr)
        return 1
    previous = {s: signal.signal(s, lambda n, _f: child.send_signal(n)) for s in FORWARDED}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tycoon.cli.run``: the same command without the global options."""
    parser = argparse.ArgumentParser(prog="tycoon run")
    add_arguments(parser)
    return cmd_run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
