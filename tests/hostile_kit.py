"""Shared tools of the hostile-input suite and the permission tests.

* :class:`Cast`: every identity a test server admits, and the permissioned config for it
  (``tycoon.natsconf``), so the attackers are authenticated principals with the
  permissions their role gives — the realistic threat.
* :func:`call`: one raw request (hand-made bytes, no client-side checks) and its verified
  reply; :func:`flood`: many raw requests pipelined, every reply collected.
* :class:`Fuzzer`: hypothesis draws recipes; each recipe expands into
  :data:`PER_RECIPE` random or mutated messages for one service.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from polling import until

from tycoon.bus.envelope import MAGIC, VERSION, Message, open_envelope, seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.bus.kinds import KINDS
from tycoon.errors import CODES
from tycoon.natsconf import Principal, render_principals
from tycoon.natsserver import NatsServer, free_port
from tycoon.units import NS

PER_RECIPE = 10
RECIPES = 1000  # x PER_RECIPE = 10,000 messages per service


# ------------------------------------------------------------------ identities and server


@dataclass
class Cast:
    """The principals of one test market, by role."""

    bank: Identity = field(default_factory=Identity.generate)
    sls: Identity = field(default_factory=Identity.generate)
    operator: Identity = field(default_factory=Identity.generate)
    watcher: Identity = field(default_factory=Identity.generate)
    hosts: list[Identity] = field(default_factory=lambda: [Identity.generate() for _ in range(3)])
    agents: list[Identity] = field(default_factory=lambda: [Identity.generate() for _ in range(2)])
    users: list[Identity] = field(default_factory=lambda: [Identity.generate() for _ in range(3)])
    broker: Identity = field(default_factory=Identity.generate)

    def principals(self) -> list[Principal]:
        out = [
            Principal(self.bank.public_key, "bank", "bank"),
            Principal(self.sls.public_key, "sls", "sls"),
            Principal(self.operator.public_key, "operator", "operator",
                      frozenset({"requests", "monitor"})),
            Principal(self.watcher.public_key, "operator", "watcher"),
            Principal(self.broker.public_key, "broker", "broker"),
        ]  # fmt: skip
        out += [Principal(h.public_key, "host", f"host-{i}") for i, h in enumerate(self.hosts)]
        out += [Principal(a.public_key, "agent", f"agent-{i}") for i, a in enumerate(self.agents)]
        out += [Principal(u.public_key, "user", f"user-{i}") for i, u in enumerate(self.users)]
        return out

    def host_id(self, i: int) -> str:
        return subject_id(self.hosts[i].public_key)


def secure_server(tmp: Path, cast: Cast, *, max_payload: str = "2MB") -> NatsServer:
    """A nats-server (not started) whose config admits exactly ``cast``.

    The hostile suite raises ``max_payload`` above the envelope limit (1 MiB) so that
    oversize envelopes reach the services' own size check.
    """
    port = free_port()
    path = tmp / "nats.conf"
    path.write_text(render_principals(cast.principals(), port=port, max_payload=max_payload))
    return NatsServer(port=port, config=path)


# ------------------------------------------------------------------ raw requests


def open_reply(raw_request: bytes, data: bytes, service_key: str) -> Message:
    """Open a reply and check it is signed by the service and answers this request."""
    msg = open_envelope(data)
    assert msg.sender == service_key, "reply not signed by the service"
    assert msg.answers == hashlib.sha256(raw_request).digest(), "reply answers another request"
    assert msg.kind in ("reply", "error"), msg.kind
    if msg.kind == "error":
        assert msg.body.get("code") in CODES, msg.body
    return msg


def code(msg: Message) -> str:
    """``ok`` for a reply, else the error code."""
    return "ok" if msg.kind == "reply" else str(msg.body["code"])


async def call(nc: Client, subject: str, raw: bytes, service_key: str,
               timeout: float = 5.0) -> Message:
    """Send hand-made bytes as a request; return the verified reply."""
    resp = await nc.request(subject, raw, timeout=timeout)
    return open_reply(raw, resp.data, service_key)


async def expect(nc: Client, subject: str, raw: bytes, service_key: str, *codes: str) -> str:
    """Send one raw request and assert the reply's code is one of ``codes``."""
    got = code(await call(nc, subject, raw, service_key))
    assert got in codes, f"{subject}: expected {codes}, got {got}"
    return got


async def flood(nc: Client, prefix: str, items: list[tuple[str, bytes]], service_key: str,
                *, window: int = 256, timeout: float = 120.0) -> list[Message]:
    """Send every (subject, raw) as a request, ``window`` in flight; return the replies.

    Fails if any request gets no reply, or a reply that is not a signed answer to it.
    """
    replies: dict[int, bytes] = {}
    slots = asyncio.Semaphore(window)
    done = asyncio.Event()

    async def on_reply(msg: Any) -> None:
        index = int(msg.subject.rsplit(".", 1)[1])
        if index not in replies:
            replies[index] = msg.data
            slots.release()
        if len(replies) == len(items):
            done.set()

    sub = await nc.subscribe(f"{prefix}.flood.*", cb=on_reply)
    try:
        for index, (subject, raw) in enumerate(items):
            await slots.acquire()
            await nc.publish(subject, raw, reply=f"{prefix}.flood.{index}")
        if items:
            await asyncio.wait_for(done.wait(), timeout)
    finally:
        await sub.unsubscribe()
    return [open_reply(raw, replies[i], service_key) for i, (_, raw) in enumerate(items)]


# ------------------------------------------------------------------ hand-made envelopes


def signed_payload(identity: Identity, payload: bytes) -> bytes:
    """A correctly signed envelope around arbitrary payload bytes."""
    signed = MAGIC + bytes([VERSION]) + identity.raw_public_key + payload
    return signed + identity.sign(signed)


def payload(kind: Any, subject: Any, body: Any, *, ts_ns: int | None = None,
            nonce: bytes | None = None, answers: bytes = b"") -> bytes:
    """The msgpack payload of an envelope, with any field values (even wrong ones)."""
    return msgpack.packb([kind, subject, answers, time.time_ns() if ts_ns is None else ts_ns,
                          nonce if nonce is not None else random.randbytes(16), body],
                         use_bin_type=True)


def forged(victim: Identity, forger: Identity, kind: str, body: Any, subject: str) -> bytes:
    """An envelope naming ``victim`` as sender but signed by ``forger``."""
    raw = seal(victim, kind, body, subject=subject)
    signed = raw[:-64]
    return signed + forger.sign(signed)


def nested(depth: int) -> Any:
    """A body nested ``depth`` levels deep (maps inside maps)."""
    body: Any = 0
    for _ in range(depth):
        body = {"x": body}
    return body


def deep_msgpack(identity: Identity, kind: str, subject: str, depth: int) -> bytes:
    """A signed envelope whose body nests ``depth`` arrays (built as raw msgpack bytes)."""
    head = msgpack.packb([kind, subject, b"", time.time_ns(), random.randbytes(16)],
                         use_bin_type=True)
    # turn the 5-array into a 6-array and append the deep body by hand
    body = b"\x91" * depth + b"\xc0"
    return signed_payload(identity, b"\x96" + head[1:] + body)


def padded(identity: Identity, kind: str, subject: str, body: dict[str, Any],
           size: int) -> bytes:
    """A signed envelope of exactly ``size`` bytes (a ``pad`` bin field fills it)."""
    length = size
    for _ in range(4):
        raw = seal(identity, kind, {**body, "pad": b"\x00" * max(0, length)}, subject=subject)
        if len(raw) == size:
            return raw
        length += size - len(raw)
    raise AssertionError("could not pad to the exact size")


# ------------------------------------------------------------------ the fuzzer

FLOATS = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, 5e-324, 0.5, 1.5, -1.0, 1e19)
INTS = (0, 1, -1, 2, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 10**18)
STRINGS = ("", "1h", "0s", "-1h", "1o1y", "30s", "99999999999y", "nan", "inf", "1e309s",
           "cpu:1,0.1,1", "cpu:nan,0.1,1", "cpu:inf", "gpu:1", "memory:1,512XB,1GB",
           "cpu:-1", "cpu:1,2,1", "tcpv4port,80:1", "ipv4address,10.0.0.1:1", "cpu",
           "memory", "disk", "net", "capacity_per_price", "price", "a" * 300, "\x00",
           "tycoon.>", "*", "..", "é" * 40, "U" + "A" * 55)
FIELDS = ("amount", "payee", "account", "transfer_id", "mint_id", "memo", "name", "offset",
          "limit", "receipt", "duration", "resources", "ports", "ips", "host", "resource",
          "sort", "min_capacity", "max_unit_price", "max_price", "statistics", "deadline",
          "max_hosts", "weight", "min", "max", "cpu", "memory", "seq", "pad")


@dataclass
class Target:
    """One request endpoint of a service and a valid-looking body template for it."""

    subject: str
    kind: str
    template: dict[str, Any]
    fuzz_body: bool = True
    """False for an endpoint where a well-formed request would legitimately change state
    (e.g. opening the attacker's own account): it gets only malformed variants."""


class Fuzzer:
    """Expands a (seed, noise) recipe into random and mutated messages for one service."""

    def __init__(self, attacker: Identity, targets: list[Target], *,
                 values: tuple[Any, ...] = (), other_subjects: tuple[str, ...] = ()) -> None:
        self.attacker = attacker
        self.targets = targets
        self.values = tuple(values)
        self.subjects = tuple(t.subject for t in targets) + tuple(other_subjects)
        self.kinds = tuple(sorted(KINDS))

    # -- values
    def value(self, rng: random.Random, depth: int = 0) -> Any:
        r = rng.random()
        if depth < 3 and r < 0.12:
            return [self.value(rng, depth + 1) for _ in range(rng.randrange(4))]
        if depth < 3 and r < 0.22:
            return {self.key(rng): self.value(rng, depth + 1) for _ in range(rng.randrange(4))}
        pick = rng.randrange(10)
        if pick == 0:
            return None if rng.random() < 0.5 else rng.random() < 0.5
        if pick == 1:
            return rng.choice(INTS)
        if pick == 2:
            return rng.randrange(-(2**63), 2**64)
        if pick == 3:
            return rng.choice(FLOATS) if rng.random() < 0.6 else rng.uniform(-1e6, 1e6)
        if pick == 4:
            return rng.choice(STRINGS)
        if pick == 5:
            return "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(12)))
        if pick == 6:
            return rng.randbytes(rng.randrange(40))
        if self.values:
            return rng.choice(self.values)
        return rng.choice(STRINGS)

    def key(self, rng: random.Random) -> str:
        return rng.choice(FIELDS) if rng.random() < 0.8 else rng.choice(STRINGS)[:20]

    def body(self, rng: random.Random, template: dict[str, Any]) -> Any:
        """The template with fields replaced, dropped or added; sometimes not a map at all."""
        if rng.random() < 0.05:
            return self.value(rng)
        out = dict(template)
        for name in list(out):
            r = rng.random()
            if r < 0.35:
                out[name] = self.value(rng)
            elif r < 0.5:
                del out[name]
        for _ in range(rng.randrange(3)):
            out[self.key(rng)] = self.value(rng)
        return out

    # -- messages
    def seal_any(self, kind: str, subject: str, body: Any, ts_ns: int | None = None) -> bytes:
        return signed_payload(self.attacker, payload(kind, subject, body, ts_ns=ts_ns))

    def recipe(self, seed: int, noise: bytes) -> list[tuple[str, bytes]]:
        """:data:`PER_RECIPE` messages: random, malformed, hostile bodies, mutations, replays."""
        rng = random.Random(seed)
        target = rng.choice(self.targets)
        body_targets = [t for t in self.targets if t.fuzz_body] or self.targets
        goods = []
        for _ in range(3):  # signed, fresh, right kind and subject: they reach the handler
            real = rng.choice(body_targets)
            goods.append((real.subject,
                          self.seal_any(real.kind, real.subject, self.body(rng, real.template))))
        # signed, but the payload is not an envelope's
        junk = msgpack.packb(self.value(rng), use_bin_type=True) if rng.random() < 0.5 else noise
        if rng.random() < 0.5:  # a kind that does not belong on this subject
            kind = rng.choice([k for k in self.kinds if k != target.kind])
            misplaced = self.seal_any(kind, target.subject, self.body(rng, target.template))
        else:  # signed for another subject
            other = rng.choice(self.subjects)
            other = other if other != target.subject else target.subject + ".x"
            misplaced = self.seal_any(target.kind, other, self.body(rng, target.template))
        skew = rng.choice((-1, 1)) * rng.randrange(61 * NS, 10**6 * NS)
        stale = self.seal_any(target.kind, target.subject, self.body(rng, target.template),
                              ts_ns=time.time_ns() + skew)
        subject, good = goods[0]
        flipped = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        cut = good[: rng.randrange(len(good))] if rng.random() < 0.5 else good + noise
        messages = [
            (target.subject, noise),
            (target.subject, signed_payload(self.attacker, junk)),
            *goods,
            (target.subject, misplaced),
            (target.subject, stale),
            (subject, bytes(flipped)),
            (subject, cut),
            (subject, good),  # the same bytes again: a replay
        ]
        assert len(messages) == PER_RECIPE
        return messages

    def messages(self, recipes: list[tuple[int, bytes]]) -> list[tuple[str, bytes]]:
        return [m for seed, noise in recipes for m in self.recipe(seed, noise)]


def draw_recipes(count: int = RECIPES) -> list[tuple[int, bytes]]:
    """``count`` (seed, noise) recipes drawn by hypothesis (generation phase only)."""
    out: list[tuple[int, bytes]] = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 2**64 - 1), st.binary(max_size=96))
    def collect(seed: int, noise: bytes) -> None:
        out.append((seed, noise))

    collect()
    while len(out) < count:  # hypothesis stops early only if it exhausts the space
        out.append((len(out), random.randbytes(len(out) % 96)))
    return out


def tally(replies: list[Message]) -> collections.Counter[str]:
    """Replies by code (``ok`` for a success)."""
    return collections.Counter(code(m) for m in replies)


def assert_no_success_except(items: list[tuple[str, bytes]], replies: list[Message],
                             read_only: set[str]) -> None:
    """Every success reply answers a request on a read-only subject; no ``internal``."""
    for (subject, raw), reply in zip(items, replies, strict=True):
        got = code(reply)
        assert got != "internal", f"internal error on {subject}: {raw.hex()} -> {reply.body}"
        if got == "ok":
            assert subject in read_only, f"state-changing success on {subject}: {raw.hex()}"


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true (fails after ``timeout`` s)."""
    await until(predicate, timeout=timeout, every=0.02)

