"""The bid language of the original Tycoon manual, parsed in one place.

A bid is a duration and one preference per resource::

    1y cpu:1,0.1,1.0 disk:1,2GB,2GB memory:1,512MB,512MB tcpv4port,8080:2,80

* Duration: numbers with a unit letter, concatenable — ``s`` seconds, ``m`` minutes,
  ``h`` hours, ``d`` days, ``w`` weeks, ``o`` months, ``y`` years (``1o1y``, ``1h30m``,
  ``1.5h``). As in the original, a month is the length of the current month and a year
  the length of the current year (UTC, from the clock passed in); ``0`` keeps the
  current bid's expiry.
* Divisible resources (``cpu``, ``memory``, ``disk``, ``net``; case-insensitive):
  ``resource:weight[,min[,max]]``. The weight splits the account's funds among the
  resources; min and max are fractions of capacity (``0.1``) or absolute amounts with an
  SI prefix and the resource's unit: ``Hz`` for cpu (``500MHz``, ``2GHz``), ``B`` for
  memory and disk (``512MB`` = 512·10⁶, ``1GiB`` = 2³⁰), ``bps`` for net (``10Mbps``).
  Prefixes: ``k M G T P`` (10³ⁿ) and ``Ki Mi Gi Ti Pi`` (2¹⁰ⁿ); ``K`` is refused as
  ambiguous. Defaults: min 0, max 1 (the whole resource).
* Unique resources, all-or-nothing: ``tcpv4port,<port>:<weight>[,<guest port>]`` and
  ``ipv4address,<address>:<weight>``.

Every error is ``Rejected("bad_bid", ...)`` naming the offending token.
"""

from __future__ import annotations

import calendar
import ipaddress
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tycoon.errors import Rejected
from tycoon.resources import RESOURCES
from tycoon.units import NS

MAX_DURATION_NS = 100 * 366 * 86_400 * NS
"""A century: longer bids are refused."""
MAX_WEIGHT = 1e9
MAX_TEXT = 2048
MAX_UNIQUE = 16
UNITS_S: dict[str, float] = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
BASE_UNIT: dict[str, tuple[str, float]] = {
    # resource: (unit text, how many base units (capacity units) one of it is)
    "cpu": ("Hz", 1e-6),  # capacity in MHz
    "memory": ("B", 1.0),
    "disk": ("B", 1.0),
    "net": ("bps", 1.0),
}
PREFIXES: dict[str, float] = {
    "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50,
}  # fmt: skip
UNIQUE_KINDS = {"tcpv4port": "port", "ipv4address": "ip"}

_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"  # ASCII digits only (\d matches ١ too)
_DURATION_PART = re.compile(rf"({_NUMBER})([smhdwoy])")
_AMOUNT = re.compile(rf"^({_NUMBER})([A-Za-z/]*)$")
_WEIGHT = re.compile(rf"^{_NUMBER}$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_BID_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F))
"""A bid is printable ASCII: digits are ASCII digits (``int``, ``float`` and ``isdigit``
take Arabic-Indic and other digits too) and the only space is the ASCII space."""


def _ascii(text: str, what: str) -> str:
    """``text`` if it is printable ASCII, else ``bad_bid``."""
    if not isinstance(text, str) or not _BID_CHARS.issuperset(text):
        bad = next((c for c in text if c not in _BID_CHARS), "") if isinstance(text, str) else ""
        raise Rejected("bad_bid", f"{what} has the character {bad!r}: a bid is printable ASCII "
                                  "(ASCII digits, tokens separated by ASCII spaces)")
    return text


def _bad(token: str, why: str) -> Rejected:
    return Rejected("bad_bid", f"bad token {token!r}: {why}")


@dataclass(frozen=True)
class Amount:
    """A bound of a preference: a fraction of capacity, or an absolute amount in base units."""

    value: float
    absolute: bool = False

    def fraction(self, capacity: int) -> float:
        """This bound as a fraction of ``capacity`` (absolute amounts above it give > 1)."""
        if not self.absolute:
            return self.value
        return self.value / capacity if capacity > 0 else math.inf


@dataclass(frozen=True)
class Preference:
    """``resource:weight,min,max`` for one divisible resource."""

    resource: str
    weight: float
    min: Amount
    max: Amount


@dataclass(frozen=True)
class UniqueBid:
    """A bid for one unique resource: a host TCP port (``kind="port"``) or an IP address."""

    kind: str
    key: str
    weight: float
    target: int = 0  # for a port: the guest port to forward to (0 = same)


@dataclass(frozen=True)
class BidSpec:
    """A parsed bid. ``duration_ns == 0`` keeps the current bid's expiry."""

    duration_ns: int
    preferences: tuple[Preference, ...]
    unique: tuple[UniqueBid, ...] = ()

    @property
    def total_weight(self) -> float:
        return sum(p.weight for p in self.preferences) + sum(u.weight for u in self.unique)

    def text(self) -> str:
        """The resources part in the bid syntax (amounts in base units)."""
        parts = []
        for p in self.preferences:
            unit = BASE_UNIT[p.resource]
            parts.append(f"{p.resource}:{_num(p.weight)},{_fmt(p.min, unit)},{_fmt(p.max, unit)}")
        for u in self.unique:
            if u.kind == "port":
                target = f",{u.target}" if u.target else ""
                parts.append(f"tcpv4port,{u.key}:{_num(u.weight)}{target}")
            else:
                parts.append(f"ipv4address,{u.key}:{_num(u.weight)}")
        return " ".join(parts)


def _num(value: float) -> str:
    """Shortest round-tripping decimal text without an exponent (the grammar has none)."""
    text = repr(float(value))
    if "e" in text:
        text = format(Decimal(text), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _fmt(amount: Amount, unit: tuple[str, float]) -> str:
    if not amount.absolute:
        return _num(amount.value)
    return f"{_num(amount.value / unit[1])}{unit[0]}"


def _number(text: str, token: str, what: str) -> float:
    if not _WEIGHT.match(text):
        raise _bad(token, f"{what} {text!r} is not a plain non-negative number")
    value = float(text)
    if not math.isfinite(value):
        raise _bad(token, f"{what} is not finite")
    return value


def _month_s(now_ns: int | None) -> tuple[float, float]:
    """Seconds in the current month and the current year (UTC); 30 and 365 days without a clock."""
    if now_ns is None:
        return 30 * 86_400.0, 365 * 86_400.0
    day = datetime.fromtimestamp(now_ns / NS, tz=UTC)
    month = calendar.monthrange(day.year, day.month)[1] * 86_400.0
    year = (366 if calendar.isleap(day.year) else 365) * 86_400.0
    return month, year


def parse_duration(text: str, now_ns: int | None = None) -> int:
    """A duration such as ``30s``, ``1h30m`` or ``1o1y`` in nanoseconds (``0`` = keep)."""
    token = _ascii(text, "the duration").strip(" ")
    if token == "0":
        return 0
    if not token or _DURATION_PART.sub("", token) != "":
        raise _bad(token, "a duration is numbers with units s m h d w o y, e.g. 30s, 2h, 1o1y")
    month_s, year_s = _month_s(now_ns)
    seconds = 0.0
    for number, unit in _DURATION_PART.findall(token):
        scale = {"o": month_s, "y": year_s}.get(unit) or UNITS_S[unit]
        seconds += float(number) * scale
    if not math.isfinite(seconds):  # e.g. a 400-digit number: float() gives inf
        raise _bad(token, "duration must be positive and at most a century")
    ns = round(seconds * NS)
    if not 0 < ns <= MAX_DURATION_NS:
        raise _bad(token, "duration must be positive and at most a century")
    return ns


def parse_amount(text: str, resource: str, token: str) -> Amount:
    """A min or max bound: a fraction in [0, 1] or an SI amount in the resource's unit."""
    match = _AMOUNT.match(text)
    if match is None:
        raise _bad(token, f"{text!r} is not a fraction or an amount with a unit")
    value = float(match[1])
    suffix = match[2]
    if not math.isfinite(value):
        raise _bad(token, f"{text!r} is not finite")
    if not suffix:
        if value > 1.0:
            raise _bad(token, f"fraction {text} is above 1 (add a unit for an absolute amount)")
        return Amount(value)
    unit, scale = BASE_UNIT[resource]
    if not suffix.endswith(unit) or suffix[: -len(unit)] not in PREFIXES:
        hint = " (use k for 10^3 or Ki for 2^10)" if suffix.startswith("K") else ""
        raise _bad(token, f"unit {suffix!r} is not an SI-prefixed {unit} for {resource}{hint}")
    amount = value * PREFIXES[suffix[: -len(unit)]] * scale
    if not math.isfinite(amount):
        raise _bad(token, f"{text!r} is too large")
    return Amount(amount, absolute=True)


def parse_weight(text: str, token: str) -> float:
    """A weight: a positive plain number."""
    if text.startswith("-") or not _WEIGHT.match(text) or not 0 < float(text) <= MAX_WEIGHT:
        raise _bad(token, f"weight {text!r} is not a positive number up to {MAX_WEIGHT:g}")
    weight = _number(text, token, "weight")
    return weight


def _preference(token: str) -> Preference:
    name, _, rest = token.partition(":")
    resource = name.lower()
    if resource not in RESOURCES:
        raise _bad(token, f"unknown resource {name!r} (known: {', '.join(RESOURCES)})")
    fields = rest.split(",")
    if not rest or len(fields) > 3:
        raise _bad(token, "expected resource:weight[,min[,max]]")
    weight = parse_weight(fields[0], token)
    low = parse_amount(fields[1], resource, token) if len(fields) > 1 else Amount(0.0)
    high = parse_amount(fields[2], resource, token) if len(fields) > 2 else Amount(1.0)
    if low.absolute == high.absolute and low.value > high.value:
        raise _bad(token, "min is above max")
    return Preference(resource, weight, low, high)


def _unique(token: str) -> UniqueBid:
    head, _, rest = token.partition(",")
    kind = UNIQUE_KINDS[head.lower()]
    key, sep, tail = rest.partition(":")
    fields = tail.split(",")
    if not sep or not key or not tail or len(fields) > (2 if kind == "port" else 1):
        form = "tcpv4port,<port>:<weight>[,<guest port>]" if kind == "port" else head
        raise _bad(token, f"expected {form}" + ("" if kind == "port" else ",<address>:<weight>"))
    weight = parse_weight(fields[0], token)
    if kind == "ip":
        return UniqueBid("ip", _address(key, token), weight)
    port = _port(key, token)
    target = _port(fields[1], token) if len(fields) > 1 else 0
    return UniqueBid("port", str(port), weight, target)


_NOT_SOLD = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "an unspecified ('this network') address"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "a loopback address"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "a link-local address"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "a multicast address"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "a reserved or broadcast address"),
)
"""Addresses no host sells: they name no one machine on the cluster's network (and
169.254.169.254 is a cloud's metadata service). See docs/security.md, "Look-alike ids"."""


def _address(text: str, token: str) -> str:
    """A sellable IPv4 address in its one dotted-decimal form."""
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError as error:
        raise _bad(token, f"{text!r} is not an IPv4 address") from error
    for network, why in _NOT_SOLD:
        if address in network:
            raise _bad(token, f"{address} is {why}: not sold")
    if str(address) != text:  # e.g. a leading zero; one written form per address
        raise _bad(token, f"write {text!r} as {address}")
    return str(address)


def _port(text: str, token: str) -> int:
    if not _PORT.match(text) or not 1 <= int(text) <= 65535:
        raise _bad(token, f"{text!r} is not a TCP port 1..65535")
    return int(text)


def parse_resources(text: str) -> tuple[tuple[Preference, ...], tuple[UniqueBid, ...]]:
    """The preferences of a bid (whitespace-separated tokens), checked for duplicates."""
    if len(text) > MAX_TEXT:
        raise Rejected("bad_bid", f"bid text longer than {MAX_TEXT} characters")
    _ascii(text, "the bid")
    prefs: dict[str, Preference] = {}
    unique: dict[tuple[str, str], UniqueBid] = {}
    for token in text.split(" "):
        if not token:
            continue
        head = token.split(",", 1)[0].lower()
        if head in UNIQUE_KINDS and "," in token:
            bid = _unique(token)
            if (bid.kind, bid.key) in unique:
                raise _bad(token, f"{bid.kind} {bid.key} appears twice")
            unique[(bid.kind, bid.key)] = bid
        else:
            pref = _preference(token)
            if pref.resource in prefs:
                raise _bad(token, f"{pref.resource} appears twice")
            prefs[pref.resource] = pref
    if len(unique) > MAX_UNIQUE:
        raise Rejected("bad_bid", f"at most {MAX_UNIQUE} ports and addresses per bid")
    if not prefs and not unique:
        raise Rejected("bad_bid", "a bid names at least one resource")
    return tuple(prefs.values()), tuple(unique.values())


def parse_bid(text: str, *, now_ns: int | None = None) -> BidSpec:
    """A whole bid line: ``<duration> <pref> <pref> ...``."""
    if len(text) > MAX_TEXT:
        raise Rejected("bad_bid", f"bid text longer than {MAX_TEXT} characters")
    duration, _, rest = _ascii(text, "the bid").strip(" ").partition(" ")
    if not duration:
        raise Rejected("bad_bid", "empty bid")
    prefs, unique = parse_resources(rest)
    return BidSpec(parse_duration(duration, now_ns), prefs, unique)


def _structured_amount(value: Any, resource: str, token: str) -> Amount:
    if isinstance(value, str):
        return parse_amount(value, resource, token)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(token, "min and max are numbers (fractions) or strings (amounts)")
    if not math.isfinite(value):
        raise _bad(token, f"{value!r} is not finite")
    return parse_amount(_num(value) if value >= 0 else repr(value), resource, token)


def bid_from_body(body: dict[str, Any], *, now_ns: int | None = None) -> BidSpec:
    """A bid from a request body, in text or structured form (see docs/auctioneer.md).

    Text: ``{"duration": "1h", "resources": "cpu:1,0.1,1.0 memory:1,512MB,1GB"}``.
    Structured: ``{"duration": "1h" | int seconds, "resources": {"cpu": {"weight": 1,
    "min": 0.1, "max": "2GHz"}}, "ports": {"8080": {"weight": 1, "target": 80}},
    "ips": {"10.0.0.5": 1}}``.
    """
    if not isinstance(body, dict):
        raise Rejected("bad_bid", "a bid body is a map")
    duration = body.get("duration")
    if isinstance(duration, int) and not isinstance(duration, bool):
        if not 0 <= duration * NS <= MAX_DURATION_NS:
            raise _bad(str(duration), "duration seconds out of range")
        duration_ns = duration * NS
    elif isinstance(duration, str):
        duration_ns = parse_duration(duration, now_ns)
    else:
        raise Rejected("bad_bid", "field 'duration' must be a duration string or int seconds")
    resources = body.get("resources")
    if isinstance(resources, str):
        prefs, unique = parse_resources(resources)
        return BidSpec(duration_ns, prefs, unique)
    return BidSpec(duration_ns, *_structured(body))


def _structured(body: dict[str, Any]) -> tuple[tuple[Preference, ...], tuple[UniqueBid, ...]]:
    resources = body.get("resources") or {}
    ports = body.get("ports") or {}
    ips = body.get("ips") or {}
    if not all(isinstance(m, dict) for m in (resources, ports, ips)):
        raise Rejected("bad_bid", "'resources', 'ports' and 'ips' must be maps")
    tokens: list[str] = []
    for name, pref in resources.items():
        if not isinstance(pref, dict) or not isinstance(name, str):
            raise _bad(str(name), "a structured preference is {weight, min, max}")
        resource = name.lower()
        if resource not in RESOURCES:
            raise _bad(name, f"unknown resource (known: {', '.join(RESOURCES)})")
        parts = [_text(pref.get("weight"), name)]
        for bound in ("min", "max"):
            if bound in pref:
                value = pref[bound]
                amount = _structured_amount(value, resource, f"{name}.{bound}")
                parts.append(_fmt(amount, BASE_UNIT[resource]))
            elif bound == "min" and "max" in pref:
                parts.append("0")
        tokens.append(f"{resource}:{','.join(parts)}")
    for port, spec in ports.items():
        weight, target = (spec.get("weight"), spec.get("target", 0)) if isinstance(
            spec, dict
        ) else (spec, 0)
        extra = f",{_text(target, str(port))}" if target else ""
        tokens.append(f"tcpv4port,{port}:{_text(weight, str(port))}{extra}")
    for address, weight in ips.items():
        tokens.append(f"ipv4address,{address}:{_text(weight, str(address))}")
    if any(" " in t for t in tokens):
        raise Rejected("bad_bid", "names and values may not contain spaces")
    return parse_resources(" ".join(tokens))


def _text(value: Any, token: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(token, f"{value!r} is not a finite number")
    if value < 0:
        raise _bad(token, f"{value!r} is negative")
    return str(value) if isinstance(value, int) else _num(value)
