"""``tycoon bank verify-log``: replay the SETTLEMENTS stream and compare it with the ledger.

Registered under ``tycoon bank`` by :func:`add_verify_log` (called from
:mod:`tycoon.cli.bank`). Reads the bank's SQLite file read-only, so it runs while the
bank serves. Exit 0 when the log matches, 1 when anything is missing, extra, doubled
or does not verify.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from tycoon.bank.sqlite_store import SqliteStore
from tycoon.cli.common import bus_for, fail, print_json
from tycoon.streams.verify import republish, verify_log


def add_verify_log(cmds: argparse._SubParsersAction,
                   db_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``verify-log`` to the ``tycoon bank`` subcommands."""
    check = cmds.add_parser("verify-log", help="compare the SETTLEMENTS stream with the ledger")
    db_options(check)
    check.add_argument("--grace", type=float, default=5.0,
                       help="transfers settled this recently may still be on their way (s)")
    check.add_argument("--repair", action="store_true",
                       help="publish the ledger's receipts of missing transfers, check again")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=cmd_verify_log)


async def cmd_verify_log(args: argparse.Namespace) -> int:
    """Exit 0 when every receipt in the stream matches the ledger and none is missing."""
    from tycoon.cli.bank import db_path

    path: Path = db_path(args)
    try:
        store = SqliteStore(path, readonly=True)
    except FileNotFoundError as error:
        return fail(str(error))
    try:
        bank_key = store.get_meta("bank_key")
        if bank_key is None:
            return fail(f"{path} holds no ledger yet")
        bus = await bus_for(args)
        try:
            js = bus.nc.jetstream(timeout=10.0)
            report = await verify_log(js, store, bank_key, grace_s=args.grace)
            if args.repair and report.missing_ids:
                repaired = await republish(js, store, report.missing_ids)
                print(f"republished {repaired} missing receipts from the ledger",
                      file=sys.stderr if args.json else sys.stdout)
                report = await verify_log(js, store, bank_key, grace_s=args.grace)
        finally:
            await bus.close()
    finally:
        store.close()
    if args.json:
        print_json({"db": str(path), **report.to_dict()})
    else:
        print(f"{path}: {report.ledger_transfers} transfers in the ledger, "
              f"{report.stream_messages} receipts in SETTLEMENTS, {report.matched} match, "
              f"{report.in_flight} in flight")
        if report.truncated_before_seq is not None:
            print(f"the stream starts at ledger seq {report.truncated_before_seq} "
                  "(older receipts were discarded by its limits)")
        for what in ("missing", "extra", "duplicates", "invalid"):
            if report.counts[what]:
                listed = getattr(report, what)
                print(f"{what.upper()} ({report.counts[what]}): " + ", ".join(listed[:10]))
        print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1
