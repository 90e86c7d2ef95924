"""``tycoon bank verify-log | republish | restore-from-log``: SETTLEMENTS against the ledger.

Registered under ``tycoon bank`` by :func:`add_verify_log` (called from
:mod:`tycoon.cli.bank`).

* ``verify-log`` reads the bank's SQLite file read-only (it runs while the bank serves).
  Exit 0 when the log matches, 1 when anything is missing, extra, doubled or does not
  verify, 2 when the stream was tampered with (purged, deleted from, reconfigured).
* ``republish`` publishes the ledger's receipts that the stream lacks, signed in as the
  bank's key (the only key allowed to write SETTLEMENTS): the operator runs it on the
  bank's machine, beside a running bank or not.
* ``restore-from-log`` re-enters into a restored backup of bank.db (the bank stopped)
  the transfers settled after the backup, from their bank-signed receipts in SETTLEMENTS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tycoon.bank.receipt import Receipt, verify_receipt
from tycoon.bank.sqlite_store import SqliteStore, StoreLocked
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity
from tycoon.cli.bankpaths import bank_key_name, db_path, operator_key
from tycoon.cli.common import bus_for, fail, keystore, print_json
from tycoon.errors import Rejected
from tycoon.streams.config import JS_ERRORS, SETTLEMENTS, js_unavailable
from tycoon.streams.reader import read_stream
from tycoon.streams.verify import LogReport, republish, verify_log

EXIT_TAMPERED = 2


def add_verify_log(cmds: argparse._SubParsersAction,
                   db_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``verify-log``, ``republish`` and ``restore-from-log`` to ``tycoon bank``."""
    check = cmds.add_parser("verify-log", help="compare the SETTLEMENTS stream with the ledger")
    db_options(check)
    check.add_argument("--grace", type=float, default=5.0,
                       help="transfers settled this recently may still be on their way (s)")
    check.add_argument("--repair", action="store_true",
                       help="publish the ledger's receipts of missing transfers (as the bank "
                            "key), check again")
    check.add_argument("--bank-key", default=None, help="name of the bank's key (--repair)")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=cmd_verify_log)

    again = cmds.add_parser("republish", help="publish receipts SETTLEMENTS lacks, from the "
                                              "ledger, as the bank key")
    db_options(again)
    again.add_argument("--bank-key", default=None, help="name of the bank's key")
    again.add_argument("--grace", type=float, default=5.0,
                       help="transfers settled this recently are left to the bank (s)")
    again.add_argument("--json", action="store_true", help="print one JSON object")
    again.set_defaults(func=cmd_republish)

    restore = cmds.add_parser("restore-from-log", help="re-enter into a restored bank.db the "
                                                       "transfers SETTLEMENTS holds after it")
    db_options(restore)
    restore.add_argument("--bank-key", default=None, help="name of the bank's key")
    restore.add_argument("--operator", default=None, help="the operator's public key (U…)")
    restore.add_argument("--operator-key", default=None, help="or its name in the key store")
    restore.add_argument("--json", action="store_true", help="print one JSON object")
    restore.set_defaults(func=cmd_restore_from_log)


def _bank_identity(args: argparse.Namespace) -> Identity:
    name = bank_key_name(args)
    try:
        return keystore(args).load(name)
    except FileNotFoundError as exc:
        raise Rejected("unknown_account", f"no bank key named {name!r} in the key store: "
                                          "run this on the bank's machine") from exc


def _print_report(path: Path, report: LogReport, stream: Any = None) -> None:
    stream = sys.stdout if stream is None else stream  # not at import: tests swap stdout
    print(f"{path}: {report.ledger_transfers} transfers in the ledger, "
          f"{report.stream_messages} receipts in SETTLEMENTS, {report.matched} match, "
          f"{report.in_flight} in flight", file=stream)
    for note in report.notes:
        print(f"note: {note}", file=stream)
    for what in ("tampering", "missing", "extra", "duplicates", "invalid"):
        if report.counts[what]:
            listed = getattr(report, what)
            print(f"{what.upper()} ({report.counts[what]}): " + "; ".join(listed[:10]),
                  file=stream)
    verdict = "TAMPERED WITH" if report.tampered else ("OK" if report.ok else "FAILED")
    print(verdict, file=stream)


def _exit(report: LogReport) -> int:
    return EXIT_TAMPERED if report.tampered else (0 if report.ok else 1)


async def cmd_verify_log(args: argparse.Namespace) -> int:
    """Exit 0 when every receipt in the stream matches the ledger and none is missing,
    1 when not, 2 when the stream was tampered with."""
    path: Path = db_path(args)
    try:
        store = SqliteStore(path, readonly=True)
    except FileNotFoundError as error:
        return fail(str(error))
    try:
        bank_key = store.get_meta("bank_key")
        if bank_key is None:
            return fail(f"{path} holds no ledger yet")
        bus = await (open_bus(args.nats, _bank_identity(args), name="tycoon-cli-republish")
                     if args.repair else bus_for(args))
        try:
            js = bus.nc.jetstream(timeout=10.0)
            report = await verify_log(js, store, bank_key, grace_s=args.grace)
            if args.repair and report.missing_events:
                repaired = await republish(js, report.missing_events)
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
        _print_report(path, report)
    return _exit(report)


async def cmd_republish(args: argparse.Namespace) -> int:
    """Publish every ledger receipt SETTLEMENTS lacks; exit as ``verify-log`` after it."""
    path: Path = db_path(args)
    try:
        store = SqliteStore(path, readonly=True)
    except FileNotFoundError as error:
        return fail(str(error))
    try:
        bank = _bank_identity(args)
        if store.get_meta("bank_key") != bank.public_key:
            return fail(f"{path} is not the ledger of bank key {bank.public_key}")
        bus = await open_bus(args.nats, bank, name="tycoon-cli-republish")
        try:
            js = bus.nc.jetstream(timeout=10.0)
            before = await verify_log(js, store, bank.public_key, grace_s=args.grace)
            stored = await republish(js, before.missing_events)
            after = await verify_log(js, store, bank.public_key, grace_s=args.grace)
        finally:
            await bus.close()
    finally:
        store.close()
    if args.json:
        print_json({"db": str(path), "missing_before": before.counts["missing"],
                    "republished": stored, **after.to_dict()})
    else:
        print(f"republished {stored} of {before.counts['missing']} missing receipts")
        _print_report(path, after)
    # receipts are back: what remains is what republishing cannot fix (or new tampering)
    return 0 if after.counts["missing"] == 0 and after.ok else _exit(after)


async def _receipts_after(js: Any, bank_key: str, seq: int) -> tuple[list[Receipt], int]:
    """The stream's receipts that verify with ``bank_key`` and settled after ledger ``seq``,
    in ledger order (one per seq), and how many stored messages did not verify."""
    try:
        info = await js.stream_info(SETTLEMENTS)
        found: dict[int, Receipt] = {}
        bad = 0
        if info.state.messages:
            async for msg in read_stream(js, SETTLEMENTS, stop_seq=info.state.last_seq):
                try:
                    receipt = verify_receipt(msg.data, bank_key)
                except Rejected:
                    bad += 1
                    continue
                if receipt.seq > seq:
                    found.setdefault(receipt.seq, receipt)
    except JS_ERRORS as exc:
        raise js_unavailable(exc) from exc
    return [found[s] for s in sorted(found)], bad


async def cmd_restore_from_log(args: argparse.Namespace) -> int:
    """Re-enter the transfers settled after a restored backup (bank stopped).

    Each receipt must verify with the bank's key and carry the ledger's next sequence;
    the command stops at the first one that does not fit (an open, mint or close that
    followed the backup is in no log: enter it again, then run the command again)."""
    from tycoon.bank.ledger import Ledger

    path: Path = db_path(args)
    if not path.exists():
        return fail(f"no bank database at {path}")
    bank = _bank_identity(args)
    try:
        store = SqliteStore(path)
    except StoreLocked as error:
        return fail(f"{error}: stop the bank first")
    entered: list[int] = []
    stopped: str | None = None
    try:
        ledger = Ledger(store, bank, operator=operator_key(args))
        start = ledger.seq
        bus = await open_bus(args.nats, bank, name="tycoon-cli-restore")
        try:
            receipts, bad = await _receipts_after(bus.nc.jetstream(timeout=10.0),
                                                  bank.public_key, start)
        finally:
            await bus.close()
        for receipt in receipts:
            try:
                ledger.apply(lambda b, r=receipt: b.reenter(r.raw))
            except Rejected as error:
                stopped = f"seq {receipt.seq} ({receipt.transfer_id}): {error}"
                break
            entered.append(receipt.seq)
        seq = ledger.seq
    except ValueError as error:
        return fail(str(error))
    finally:
        store.close()
    result = {"db": str(path), "from_seq": start, "seq": seq, "entered": len(entered),
              "in_log": len(receipts), "unverified": bad, "stopped": stopped}
    if args.json:
        print_json(result)
    else:
        print(f"{path}: re-entered {len(entered)} of {len(receipts)} transfers settled after "
              f"seq {start}; the ledger is now at seq {seq}")
        if bad:
            print(f"{bad} stored messages do not verify with the bank key (ignored)")
        if stopped:
            print(f"STOPPED at {stopped}")
    return 1 if stopped else 0
