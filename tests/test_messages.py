"""The message model (tycoon/messages) and the one verification path (tycoon/bus/verify)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tycoon.bus.envelope import Message, seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.bus.kinds import KINDS
from tycoon.bus.replay import ReplayGuard
from tycoon.bus.schema import get_bytes, get_int, get_str
from tycoon.bus.verify import (
    check_live,
    check_signer,
    open_batch,
    signer_raw,
    verify_live,
    verify_stored,
)
from tycoon.errors import Rejected
from tycoon.messages import MESSAGES, REPLIES, Body
from tycoon.messages.agent import AgentWarning
from tycoon.messages.bank import BankEntry, BankHistory, BankMint, BankTransfer
from tycoon.messages.jobs import HostJob
from tycoon.messages.market import HostFund
from tycoon.messages.price import Offer, PriceUpdate, offers_from_body
from tycoon.messages.sls import SlsHost, SlsQuery

ROOT = Path(__file__).resolve().parent.parent
SAMPLES: dict[str, Any] = {"str": "x", "int": 7, "float": 1.5, "bool": True, "bin": b"\x01",
                           "map": {"a": 1}, "array": [1], "any": "v", "str or int": "1h",
                           "str or map": "cpu:1", "fields": {"k": 1}}
ALL = sorted({*MESSAGES.values(), *REPLIES.values()}, key=lambda c: c.__name__)
OWN_PARSER = [c for c in ALL if c.__dict__.get("from_body") is not None]
"""Bodies with rules of their own (tested one by one below)."""
ROWS: list[type[Body]] = [BankEntry, HostJob]
"""Rows of a reply's list, read with their own class (bank.history, host.jobs)."""


def sample(cls: type[Body], *, optional: bool) -> dict[str, Any]:
    return {s.name: SAMPLES[s.wire] for s in cls.specs() if optional or not s.optional}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_on_the_wire_is_a_frozen_body_class(kind: str) -> None:
    cls = MESSAGES.get(kind)
    assert cls is not None, f"{kind} (tycoon/bus/kinds.py) has no class in tycoon/messages"
    assert issubclass(cls, Body) and kind in cls.KINDS and cls.SUMMARY
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", [c for c in ALL if c not in OWN_PARSER] + ROWS,
                         ids=lambda c: c.__name__)
def test_every_body_round_trips(cls: type[Body]) -> None:
    for optional in (False, True):
        body = sample(cls, optional=optional)
        read = cls.from_body(body)
        written = read.to_body()  # every field given, and the defaults of those not given
        assert {k: written[k] for k in body} == body and cls.from_body(written) == read
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", [c for c in ALL + ROWS if any(not s.optional for s in c.specs())],
                         ids=lambda c: c.__name__)
def test_a_missing_or_mistyped_field_is_malformed(cls: type[Body]) -> None:
    body = sample(cls, optional=False)
    required = next(s for s in cls.specs() if not s.optional)
    with pytest.raises(Rejected) as info:
        cls.from_body({k: v for k, v in body.items() if k != required.name})
    assert info.value.code == "malformed" and required.name in info.value.message
    typed = next((s for s in cls.specs() if s.wire in ("int", "str", "bin", "map", "array")),
                 None)
    if typed is not None:
        wrong = True if typed.wire == "int" else 3  # a bool is not an int; 3 is no str/bin/…
        with pytest.raises(Rejected) as info:
            cls.from_body({**sample(cls, optional=True), typed.name: wrong})
        assert info.value.code == "malformed"


def test_a_body_that_is_not_a_map_is_malformed() -> None:
    for cls in ALL:
        with pytest.raises(Rejected) as info:
            cls.from_body(["not", "a", "map"])
        assert info.value.code == "malformed"


def test_length_bounds_are_checked() -> None:
    with pytest.raises(Rejected):
        MESSAGES["bank.transfer"].from_body({"payee": "U", "amount": 1, "transfer_id": "t" * 129})
    with pytest.raises(Rejected):
        MESSAGES["host.fund"].from_body({"receipt": b"x" * 4097})


def test_own_parsers_are_the_expected_ones() -> None:
    assert {c.__name__ for c in OWN_PARSER} == {"PriceUpdate", "SlsQuery", "AgentWarning"}


def _code(cls: type[Body], body: Any) -> str:
    try:
        cls.from_body(body)
    except Rejected as error:
        return error.code
    return "ok"


def test_a_field_with_its_own_check_keeps_the_services_code() -> None:
    for amount in (None, 0, -1, 2**63, 1.5, "10", True):
        body = {"payee": "U", "amount": amount, "transfer_id": "t"}
        assert _code(BankTransfer, body) == "bad_amount", amount
        assert _code(BankMint, {"account": "U", "amount": amount, "mint_id": "m"}) \
            == "bad_amount"
    assert _code(BankTransfer, {"payee": 5, "amount": "x", "transfer_id": "t"}) == "malformed"
    for host in (None, "", "h" * 65, "a b", 7):
        assert _code(SlsHost, {"host": host}) == "malformed"
    assert SlsHost.from_body({"host": "abc"}).host == "abc"


@pytest.mark.parametrize(("cls", "body", "reader"), [
    (BankTransfer, {"payee": 5, "amount": 1, "transfer_id": "t"},
     lambda b: get_str(b, "payee", max_len=64)),
    (BankTransfer, {"payee": "p" * 65, "amount": 1, "transfer_id": "t"},
     lambda b: get_str(b, "payee", max_len=64)),
    (BankTransfer, {"amount": 1, "transfer_id": "t"}, lambda b: get_str(b, "payee")),
    (BankHistory, {"offset": True}, lambda b: get_int(b, "offset", optional=True)),
    (HostFund, {"receipt": "text"}, lambda b: get_bytes(b, "receipt")),
    (HostFund, {"receipt": b"x" * 4097}, lambda b: get_bytes(b, "receipt", max_len=4096)),
    (HostFund, [], lambda b: get_bytes(b, "receipt")),
])
def test_malformed_says_what_the_schema_readers_said(cls: type[Body], body: Any,
                                                      reader: Any) -> None:
    """The services read bodies with bus/schema before; their refusals read the same."""
    with pytest.raises(Rejected) as model:
        cls.from_body(body)
    with pytest.raises(Rejected) as schema:
        reader(body)
    assert (model.value.code, model.value.message) == (schema.value.code, schema.value.message)


def test_a_warnings_detail_travels_beside_its_message() -> None:
    warning = AgentWarning("host down", {"host": "abc", "code": "timeout"})
    assert warning.to_body() == {"message": "host down", "host": "abc", "code": "timeout"}
    assert AgentWarning.from_body(warning.to_body()) == warning
    assert _code(AgentWarning, {"host": "abc"}) == "malformed"


def test_a_query_is_checked_when_built_and_read() -> None:
    assert SlsQuery.from_body({}) == SlsQuery()
    query = SlsQuery("memory", 5, 1.5, None, "price", 10, 20, False, "random")
    assert SlsQuery.from_body(query.to_body()) == query
    assert "max_price" not in query.to_body()
    for bad in ({"resource": "gpu"}, {"limit": 501}, {"sort": "x"}, {"offset": -1},
                {"max_price": float("nan")}, {"statistics": 1}, {"ties": 0}):
        assert _code(SlsQuery, bad) == "malformed", bad
    with pytest.raises(Rejected):
        SlsQuery(limit=600)


offers = st.builds(Offer, st.integers(0, 2**62), st.floats(0, 1e12), st.floats(0, 1),
                   st.integers(0, 10**6))


@given(st.integers(0, 2**62), st.floats(0.01, 86_400),
       st.dictionaries(st.sampled_from(["cpu", "memory", "disk", "net"]), offers))
def test_price_update_producer_and_consumer_agree(seq: int, heartbeat: float,
                                                  resources: dict[str, Offer]) -> None:
    update = PriceUpdate("abcdefghijklmnop", seq, heartbeat, "host h0", "simulated", resources)
    again = PriceUpdate.from_body(update.to_body())
    assert again.to_body() == update.to_body()
    assert offers_from_body(update.to_body()["resources"]) == again.resources


def test_rows_read_what_their_producers_write() -> None:
    """A bank.history entry and a host.jobs row, as the ledger and the host write them."""
    from tycoon.auctioneer.jobs import EXITED, Job
    from tycoon.bank.ledger import history_entry
    from tycoon.bank.store import EventRow

    paid = EventRow(3, "transfer", NOW, "UA", op_id="t1", payer="UA", payee="UB", amount=5,
                    memo="m", receipt=b"r")
    entry = BankEntry.from_body(history_entry(paid, "UA"))
    assert (entry.amount, entry.counterparty, entry.id, entry.receipt) == (-5, "UB", "t1", b"r")
    assert BankEntry.from_body(history_entry(paid, "UB")).amount == 5
    job = Job("j1", "UA", ("sleep", "9"), NOW, pid=12, adopted=True)
    running = HostJob.from_body({**job.view(), "cpu_s": 0.5, "memory": 4096})
    assert (running.state, running.pid, running.memory, running.adopted) == \
        ("running", 12, 4096, True)
    job.state, job.status, job.signal, job.cpu_s, job.peak_memory = EXITED, None, 9, 1.0, 7
    exited = HostJob.from_body(job.view())
    assert (exited.status, exited.signal, exited.peak_memory) == (None, 9, 7)


def test_the_auctioneers_price_body_is_a_price_update() -> None:
    """The producer (auctioneer views) writes what every consumer reads."""
    from tycoon.auctioneer import views

    src = Path(views.__file__).read_text()
    assert "PriceUpdate(" in src and '"unit_price"' not in src


def test_no_consumer_reads_a_price_body_by_hand() -> None:
    for rel in ("tycoon/agent/agent.py", "tycoon/cli/top.py", "tycoon/cli/tap.py",
                "tycoon/cli/auctioneer.py", "tycoon/sls/registry.py"):
        src = (ROOT / rel).read_text()
        for pattern in ('body.get("resources"', 'get("resources") or', '["resources"].get(',
                        'body.get("resources", {})'):
            assert pattern not in src, (rel, pattern)


# -- producers and consumers use the model -----------------------------------------------

def _in_scope(rel: str) -> bool:
    """Every module of the package but the message model itself: services, clients, the
    agent, the CLI (replies it prints, events it shows), the bus (error bodies)."""
    return rel.startswith("tycoon/") and not rel.startswith("tycoon/messages/")


NOT_BODIES = {
    ("tycoon/bundles/client.py", "*"): "JetStream API requests and answers (JSON), not "
                                       "envelopes",
    ("tycoon/sls/client.py", "from_body"): "HostRow: one row of an sls.query reply, whose "
                                           "body SlsQueryReply checked",
    ("tycoon/sls/stats.py", "*"): "Moments, ProbabilityDistribution, PriceStatistics: the "
                                  "typed readers of the statistics map nested in SLS rows "
                                  "(the model of that part), not a whole body",
    ("tycoon/agent/prediction.py", "read_stats"): "the statistics map of one SLS row (the "
                                                  "row checked by SlsQueryReply) or of a "
                                                  "file (bad_input), not a whole body",
    ("tycoon/auctioneer/bidparse.py", "bid_from_body"): "a host.bid body, read by the bid "
                                                        "grammar: HostBid's own reader (its "
                                                        "docstring names it), two forms",
    ("tycoon/auctioneer/bidparse.py", "_structured"): "the structured form of the same",
    ("tycoon/auctioneer/jobs.py", "check_exec"): "the rules of a host.exec body beyond its "
                                                 "types (NUL, sizes, env names), after "
                                                 "HostExec.from_body (jobhost._exec)",
    ("tycoon/bus/connection.py", "check_reply"): "an error body: tycoon.bus may not import "
                                                 "tycoon.messages (which imports bus.schema: "
                                                 "a package cycle, test_structure); Error's "
                                                 "two fields become a Rejected",
    ("tycoon/cli/sim.py", "*"): "simulation results (its own dicts), not wire bodies",
}
"""(module, function or ``*``) → why what it reads by key is no whole wire body, or is
read there on purpose."""
PENDING: dict[str, str] = {}
"""Modules not yet on the model: each must still be found (remove it once it is not).
Empty: every module in scope builds and reads its bodies with the message classes."""
BODY_RETURNS = {
    ("tycoon/bank/ledger.py", "open"), ("tycoon/bank/ledger.py", "mint"),
    ("tycoon/bank/ledger.py", "close"), ("tycoon/agent/parts.py", "done_body"),
}
"""Functions that are no handlers but return a wire body (a reply, an event): checked
like handlers (no dict built by hand)."""
GETTERS = {"get_str", "get_int", "get_bytes", "get_id", "get_name"}
SENDERS = {"publish", "request", "_call"}
BODY_NAMES = frozenset({"body", "reply"})
CLI_BODY_NAMES = BODY_NAMES | {"result"}
"""In tycoon/cli a command's reply is often called ``result``."""


def _is_body(node: ast.AST, names: frozenset[str] = BODY_NAMES) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "body") or \
        (isinstance(node, ast.Name) and node.id in names)


def _is_key(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _is_dict_body(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Dict) and any(k is not None and _is_key(k) for k in node.keys)


def _by_hand(node: ast.AST, names: frozenset[str] = BODY_NAMES) -> str | None:
    """What ``node`` does by hand with a body, if it does: a string key read from a body
    (``x.body[...]``, ``.get``, a bus/schema reader) or a dict literal sent as one."""
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
            and _is_body(node.value, names) and _is_key(node.slice):
        return f"reads {ast.unparse(node)}"
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name == "get" and isinstance(func, ast.Attribute) and _is_body(func.value, names) \
            and node.args and _is_key(node.args[0]):
        return f"reads {ast.unparse(node)}"
    if name in GETTERS and node.args and _is_body(node.args[0], names):
        return f"reads {ast.unparse(node)[:60]}"
    if name in SENDERS and any(_is_dict_body(a) for a in node.args):
        return f"sends a dict built by hand: {ast.unparse(node)[:60]}"
    return None


def _bodies_by_hand(rel: str, source: str) -> list[str]:
    found: list[str] = []
    if (rel, "*") in NOT_BODIES:
        return found
    names = CLI_BODY_NAMES if rel.startswith("tycoon/cli/") else BODY_NAMES
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef) \
                or (rel, func.name) in NOT_BODIES:
            continue
        handler = (rel, func.name) in BODY_RETURNS or any(
            isinstance(a.annotation, ast.Name) and a.annotation.id == "Message"
            for a in func.args.args)
        for node in ast.walk(func):
            what = _by_hand(node, names)
            if what is None and handler and isinstance(node, ast.Return) \
                    and _is_dict_body(node.value):
                what = f"{func.name} answers a dict built by hand"
            if what is not None:
                found.append(f"{node.lineno}: {what}")  # type: ignore[attr-defined]
    return sorted(set(found))


def _scan() -> dict[str, list[str]]:
    out = {}
    for path in sorted((ROOT / "tycoon").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if _in_scope(rel) and (found := _bodies_by_hand(rel, path.read_text())):
            out[rel] = found
    return out


def test_services_and_clients_build_and_read_bodies_through_the_model() -> None:
    """Every kind has a class: a body is built with ``to_body`` and read with ``from_body``,
    never taken apart by string keys (tycoon/messages)."""
    offenders = {rel: found for rel, found in _scan().items() if rel not in PENDING}
    assert not offenders, offenders


def test_pending_modules_are_still_pending() -> None:
    scanned = _scan()
    done = [rel for rel in PENDING if (ROOT / rel).exists() and rel not in scanned]
    assert not done, f"on the model now: remove {done} from PENDING"


def test_the_body_rule_catches_what_it_forbids() -> None:
    source = (
        "async def handle(msg: Message):\n"
        "    a = msg.body['amount']\n"
        "    b = msg.body.get('memo')\n"
        "    c = get_str(msg.body, 'payee')\n"
        "    d = reply.get('balance')\n"
        "    await bus.publish(s, 'bank.settled', {'receipts': []})\n"
        "    return {'receipt': b''}\n"
        "def fine(msg, rows):\n"
        "    x = BankTransfer.from_body(msg.body).amount\n"
        "    return rows['r'], {'not': 'a handler'}, msg.body\n")
    assert len(_bodies_by_hand("tycoon/x/service.py", source)) == 6
    printed = "def show(result):\n    print(result['job'], result.get('state'))\n"
    assert len(_bodies_by_hand("tycoon/cli/x.py", printed)) == 2
    assert not _bodies_by_hand("tycoon/x/core.py", printed)
    assert _in_scope("tycoon/cli/bank.py") and _in_scope("tycoon/bus/connection.py")
    assert not _in_scope("tycoon/messages/price.py")


def test_what_is_read_by_key_on_purpose_still_is() -> None:
    """Each allow-list entry names a module and function that exist and read by key."""
    stale = []
    for rel, func in NOT_BODIES:
        path = ROOT / rel
        if not path.exists():
            stale.append((rel, func))
            continue
        names = CLI_BODY_NAMES if rel.startswith("tycoon/cli/") else BODY_NAMES
        tree = ast.parse(path.read_text())
        scope = [tree] if func == "*" else [
            f for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.name == func]
        if not any(_by_hand(n, names) for s in scope for n in ast.walk(s)):
            stale.append((rel, func))
    assert not stale, f"no longer read by key: remove {stale} from NOT_BODIES"


# -- the one verification path ------------------------------------------------------------

RAW_NATS_ALLOWED = {
    "tycoon/cli/status.py": "$SRV discovery: JSON, not envelopes",
    "tycoon/testing/natscluster.py": "a cluster probe of opaque tokens (test support)",
    "tycoon/streams/reader.py": "the JetStream pull consumer: turns stored messages into "
                                "StoredMsg (subject, bytes, headers) for the verify path",
    "tycoon/bundles/client.py": "JetStream answers (JSON) and object-store chunks: bytes "
                                "checked against their SHA-256 name, not envelopes",
}


def _raw_nats_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nats.aio.msg"):
            found.append(f"{node.lineno}: imports nats.aio.msg")
        elif isinstance(node, ast.Attribute) and node.attr == "_msg":
            found.append(f"{node.lineno}: reads ._msg")
        elif isinstance(node, ast.Attribute) and node.attr == "send_request":
            found.append(f"{node.lineno}: send_request returns a raw NATS message")
        elif isinstance(node, ast.Attribute) and node.attr in ("subscribe", "request") \
                and ((isinstance(node.value, ast.Name) and node.value.id == "nc")
                     or (isinstance(node.value, ast.Attribute) and node.value.attr == "nc")):
            found.append(f"{node.lineno}: nc.{node.attr} delivers raw NATS messages")
    return found


def test_no_module_outside_the_bus_touches_a_raw_nats_message() -> None:
    offenders = {}
    for path in sorted((ROOT / "tycoon").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("tycoon/bus/") or rel in RAW_NATS_ALLOWED:
            continue
        uses = _raw_nats_uses(path)
        if uses:
            offenders[rel] = uses
    assert not offenders, offenders


def test_the_rule_catches_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from nats.aio.msg import Msg\n"
                   "async def f(bus, r):\n"
                   "    await bus.nc.subscribe('x')\n"
                   "    resp = await bus.send_request('s', b'')\n"
                   "    return r._msg.reply, resp.data[3:35]\n")
    assert len(_raw_nats_uses(bad)) == 4


HOST = Identity.from_seed("SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU")
NOW = 1_700_000_000_000_000_000


def _batch() -> list[tuple[str, bytes]]:
    subject = "tycoon.demo.echo"
    good = seal(HOST, "demo.echo", {"text": "a"}, subject=subject, ts_ns=NOW)
    flipped = bytearray(seal(HOST, "demo.echo", {"text": "b"}, subject=subject, ts_ns=NOW))
    flipped[-1] ^= 1
    other = seal(HOST, "demo.echo", {"text": "c"}, subject="tycoon.demo.x", ts_ns=NOW)
    old = seal(HOST, "demo.echo", {"text": "d"}, subject=subject, ts_ns=NOW - 10**12)
    return [(subject, good), (subject, bytes(flipped)), (subject, other), (subject, old),
            (subject, good), (subject, b"TY")]


def test_batch_and_single_verification_agree() -> None:
    batch = _batch()
    # the batch path the SLS's ingest takes: open_batch (signatures checked together), then
    # check_live of each opened message against the subject it came on
    batched: list[Message | Rejected] = []
    live = ReplayGuard()
    for (subject, _), msg in zip(batch, open_batch([d for _, d in batch]), strict=True):
        if not isinstance(msg, Rejected):
            try:
                check_live(msg.subject, subject, msg.sender, msg.nonce, msg.ts_ns, live, NOW)
            except Rejected as error:
                msg = error
        batched.append(msg)
    guard = ReplayGuard()
    single = []
    for subject, data in batch:
        try:
            single.append(verify_live(data, subject, guard, now_ns=NOW).kind)
        except Rejected as error:
            single.append(error.code)
    codes = [m.code if isinstance(m, Rejected) else m.kind for m in batched]
    assert codes == single == ["demo.echo", "bad_signature", "wrong_subject", "stale",
                               "replayed", "malformed"]


def test_stored_messages_skip_freshness_but_not_binding_or_kind() -> None:
    subject, data = _batch()[3]  # far too old to be live
    assert verify_stored(data, subject, "demo.echo").body == {"text": "d"}
    with pytest.raises(Rejected) as info:
        verify_stored(data, "tycoon.demo.x")
    assert info.value.code == "wrong_subject"
    with pytest.raises(Rejected) as info:
        verify_stored(data, subject, "price")
    assert info.value.code == "unknown_kind"


def test_a_pinned_signer_refuses_another_key() -> None:
    data = _batch()[0][1]
    check_signer(data, signer_raw(HOST.public_key))
    with pytest.raises(Rejected) as info:
        check_signer(data, signer_raw(Identity.generate().public_key))
    assert info.value.code == "wrong_reply"
    assert subject_id(HOST.public_key)  # the vectors' key is a valid user key
