"""The bid language: valid and invalid strings, the structured form, round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tycoon.auctioneer.bidparse import (
    NS,
    Amount,
    bid_from_body,
    parse_bid,
    parse_duration,
    parse_resources,
)
from tycoon.errors import Rejected
from tycoon.resources import RESOURCES

JAN_2025 = 1_735_689_600 * NS  # 2025-01-01T00:00:00Z (31-day month, 365-day year)
FEB_2024 = 1_706_745_600 * NS  # 2024-02-01T00:00:00Z (29-day month, leap year)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86_400),
        ("1w", 604_800),
        ("1h30m", 5400),
        ("1.5h", 5400),
        (".5m", 30),
        ("1o", 31 * 86_400),
        ("1y", 365 * 86_400),
        ("1o1y", 396 * 86_400),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, JAN_2025) == seconds * NS


def test_months_and_years_follow_the_calendar() -> None:
    assert parse_duration("1o1y", FEB_2024) == (29 + 366) * 86_400 * NS
    assert parse_duration("1o") == 30 * 86_400 * NS  # no clock: 30 days
    assert parse_duration("0") == 0  # keep the current expiry


@pytest.mark.parametrize(
    "text", ["", "h", "10", "1x", "1h 30m", "-1h", "1e3s", "nans", "infh", "0s", "1h-", "200y"]
)
def test_bad_durations_name_the_token(text: str) -> None:
    with pytest.raises(Rejected) as info:
        parse_duration(text)
    assert info.value.code == "bad_bid"
    assert repr(text.strip()) in info.value.message


def test_manual_example() -> None:
    bid = parse_bid("1y CPU:1,0.1,1.0 disk:1,2GB,2GB memory:1,512MB,512MB", now_ns=JAN_2025)
    assert bid.duration_ns == 365 * 86_400 * NS
    cpu, disk, memory = bid.preferences
    assert (cpu.resource, cpu.weight, cpu.min, cpu.max) == ("cpu", 1.0, Amount(0.1), Amount(1.0))
    assert disk.min == disk.max == Amount(2e9, absolute=True)
    assert memory.min == Amount(512e6, absolute=True)
    assert bid.total_weight == 3.0


@pytest.mark.parametrize(
    ("token", "resource", "low", "high"),
    [
        ("cpu:2,500MHz,2GHz", "cpu", 500.0, 2000.0),  # cpu capacity unit is MHz
        ("memory:1,1GiB,2GiB", "memory", 2.0**30, 2.0**31),
        ("memory:1,512kB,1MB", "memory", 512e3, 1e6),
        ("net:1,10Mbps,1Gbps", "net", 1e7, 1e9),
        ("disk:1,1TB,1TB", "disk", 1e12, 1e12),
    ],
)
def test_absolute_amounts(token: str, resource: str, low: float, high: float) -> None:
    (pref,), _ = parse_resources(token)
    assert pref.resource == resource
    assert pref.min == Amount(low, absolute=True)
    assert pref.max == Amount(high, absolute=True)
    assert pref.min.fraction(int(high * 2)) == pytest.approx(low / (high * 2))


def test_defaults_and_unique_resources() -> None:
    prefs, unique = parse_resources("cpu:1 net:2,0.25 tcpv4port,8080:3,80 IPv4Address,10.0.0.5:1")
    assert prefs[0].min == Amount(0.0) and prefs[0].max == Amount(1.0)
    assert prefs[1].min == Amount(0.25) and prefs[1].max == Amount(1.0)
    assert (unique[0].kind, unique[0].key, unique[0].weight, unique[0].target) == (
        "port", "8080", 3.0, 80,
    )
    assert (unique[1].kind, unique[1].key) == ("ip", "10.0.0.5")


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("1h gpu:1", "gpu:1"),
        ("1h cpu:1,2", "cpu:1,2"),
        ("1h cpu:1,0.5,0.1", "cpu:1,0.5,0.1"),
        ("1h cpu:nan", "cpu:nan"),
        ("1h cpu:inf", "cpu:inf"),
        ("1h cpu:-1", "cpu:-1"),
        ("1h cpu:0", "cpu:0"),
        ("1h cpu:1,-0.1", "cpu:1,-0.1"),
        ("1h cpu:1,nan", "cpu:1,nan"),
        ("1h cpu:1,0.1,inf", "cpu:1,0.1,inf"),
        ("1h cpu:1,1e-3", "cpu:1,1e-3"),
        ("1h memory:1,1KB", "memory:1,1KB"),
        ("1h cpu:1,1GB", "cpu:1,1GB"),
        ("1h net:1,1MB", "net:1,1MB"),
        ("1h cpu:", "cpu:"),
        ("1h cpu", "cpu"),
        ("1h cpu:1,0,1,1", "cpu:1,0,1,1"),
        ("1h cpu:1 CPU:2", "CPU:2"),
        ("1h tcpv4port,0:1", "tcpv4port,0:1"),
        ("1h tcpv4port,80", "tcpv4port,80"),
        ("1h tcpv4port,80:1,70000", "tcpv4port,80:1,70000"),
        ("1h ipv4address,300.1.1.1:1", "ipv4address,300.1.1.1:1"),
        ("1h ipv4address,10.0.0.1:1 ipv4address,10.0.0.1:2", "ipv4address,10.0.0.1:2"),
        ("1q cpu:1", "1q"),
    ],
)
def test_invalid_bids_name_the_bad_token(text: str, bad: str) -> None:
    with pytest.raises(Rejected) as info:
        parse_bid(text)
    assert info.value.code == "bad_bid"
    assert repr(bad) in info.value.message


@pytest.mark.parametrize("text", ["", "1h", "   ", "1h " + "cpu:1 " * 500])
def test_empty_or_oversized(text: str) -> None:
    with pytest.raises(Rejected) as info:
        parse_bid(text)
    assert info.value.code == "bad_bid"


def test_structured_form_equals_text_form() -> None:
    text = bid_from_body(
        {"duration": "1h", "resources": "cpu:2,0.1,2GHz memory:1,512MB tcpv4port,22:1,2222"}
    )
    structured = bid_from_body(
        {
            "duration": 3600,
            "resources": {"cpu": {"weight": 2, "min": 0.1, "max": "2GHz"},
                          "memory": {"weight": 1.0, "min": "512MB"}},
            "ports": {"22": {"weight": 1, "target": 2222}},
        }
    )  # fmt: skip
    assert text == structured


@pytest.mark.parametrize(
    "body",
    [
        {"duration": "1h"},
        {"resources": "cpu:1"},
        {"duration": True, "resources": "cpu:1"},
        {"duration": -5, "resources": "cpu:1"},
        {"duration": 1.5, "resources": "cpu:1"},
        {"duration": "1h", "resources": {"cpu": {"weight": math.nan}}},
        {"duration": "1h", "resources": {"cpu": {"weight": math.inf}}},
        {"duration": "1h", "resources": {"cpu": {"weight": -1}}},
        {"duration": "1h", "resources": {"cpu": {"weight": 1, "min": math.nan}}},
        {"duration": "1h", "resources": {"cpu": {"weight": 1, "min": -0.5}}},
        {"duration": "1h", "resources": {"cpu": {"weight": 1, "max": [1]}}},
        {"duration": "1h", "resources": {"gpu": {"weight": 1}}},
        {"duration": "1h", "resources": {"cpu": 1}},
        {"duration": "1h", "resources": []},
        {"duration": "1h", "resources": {"cpu": {"weight": 1, "min": "1 GB"}}},
        {"duration": "1h", "ports": {"http": 1}},
        "1h cpu:1",
    ],
)
def test_structured_invalid(body: object) -> None:
    with pytest.raises(Rejected) as info:
        bid_from_body(body)  # type: ignore[arg-type]
    assert info.value.code == "bad_bid"


weights = st.floats(0.001, 1000, allow_nan=False).map(lambda w: round(w, 3))
fractions = st.floats(0, 1).map(lambda f: round(f, 4))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=4, unique=True),
    st.lists(st.tuples(weights, fractions, fractions), min_size=4, max_size=4),
)
def test_text_round_trip(resources: list[str], values: list[tuple[float, float, float]]) -> None:
    tokens = []
    for resource, (weight, a, b) in zip(resources, values, strict=False):
        tokens.append(f"{resource}:{weight},{min(a, b)},{max(a, b)}")
    bid = parse_bid("2h " + " ".join(tokens))
    again = parse_resources(bid.text())
    assert again == (bid.preferences, bid.unique)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_never_crashes(text: str) -> None:
    try:
        bid = parse_bid(text)
    except Rejected as error:
        assert error.code == "bad_bid"
    else:
        for pref in bid.preferences:
            assert math.isfinite(pref.weight) and pref.weight > 0
            assert pref.min.value >= 0 and math.isfinite(pref.max.value)


# -- look-alike input (issue 18): ASCII digits and spaces only, no unsellable addresses ----

ARABIC_ONE, ARABIC_ZERO, ARABIC_FIVE = "\u0661", "\u0660", "\u0665"


@pytest.mark.parametrize(
    "text",
    [
        f"{ARABIC_ONE}h cpu:1",  # Arabic-Indic digit in the duration
        f"1h cpu:{ARABIC_ONE},{ARABIC_ZERO}.{ARABIC_FIVE}",  # and in weight, min
        "1h\u00a0cpu:1",  # no-break space as separator
        "1h cpu:1\u2003memory:1",  # em space
        "1h\tcpu:1",  # tab
        "1h cpu:1\n",  # newline
        "1h tcpv4port,\u00b2:1",  # superscript two: str.isdigit() says yes, int() raises
        "1h tcpv4port,8080:1,\u0668\u0660",  # Arabic-Indic guest port
        "\uff11h cpu:1",  # fullwidth digit
        "1h cpu:\U0001d7d9",  # mathematical bold digit one
    ],
)
def test_only_ascii_digits_and_spaces(text: str) -> None:
    with pytest.raises(Rejected) as refused:
        parse_bid(text)
    assert refused.value.code == "bad_bid"


def test_unicode_digits_refused_in_every_entry_point() -> None:
    with pytest.raises(Rejected):
        parse_duration(f"{ARABIC_ONE}h")
    with pytest.raises(Rejected):
        parse_resources(f"cpu:{ARABIC_ONE}")
    for body in ({"duration": f"{ARABIC_ONE}h", "resources": "cpu:1"},
                 {"duration": "1h", "resources": f"cpu:1,{ARABIC_ZERO}.{ARABIC_FIVE}"},
                 {"duration": "1h", "resources": {"cpu": {"weight": 1, "min": f"{ARABIC_ONE}GHz"}}},
                 {"duration": "1h", "ips": {"10.0.0.\u0665": 1}},
                 {"duration": "1h", "ports": {"\u0668\u0660": 1}}):
        with pytest.raises(Rejected) as refused:
            bid_from_body(body)
        assert refused.value.code == "bad_bid", body


@pytest.mark.parametrize(
    "address",
    ["0.0.0.0", "0.1.2.3", "255.255.255.255", "224.0.0.1", "239.255.255.250", "240.0.0.1",
     "127.0.0.1", "127.1.2.3", "169.254.169.254", "010.0.0.1", "10.0.0.01"],
)
def test_unsellable_or_ambiguous_ip_addresses_are_refused(address: str) -> None:
    with pytest.raises(Rejected) as refused:
        parse_bid(f"1h ipv4address,{address}:1")
    assert refused.value.code == "bad_bid"
    with pytest.raises(Rejected):
        bid_from_body({"duration": "1h", "ips": {address: 1}})


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.20", "172.16.0.1", "203.0.113.9"])
def test_ordinary_addresses_are_sold(address: str) -> None:
    (bid,) = parse_bid(f"1h ipv4address,{address}:1").unique
    assert bid.key == address


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_whatever_parses_is_printable_ascii(text: str) -> None:
    try:
        parse_bid(text)
    except Rejected:
        return
    assert all(" " <= c <= "~" for c in text)


@pytest.mark.parametrize("weight", ["-1", "0", "0.0", "2e9", "-0"])
def test_a_weight_out_of_range_gets_one_message_whatever_its_sign(weight: str) -> None:
    """Issue 19: `-1` was "not a plain non-negative number" while `0` was "must be > 0"."""
    with pytest.raises(Rejected, match=r"weight '.*' is not a positive number up to 1e\+09"):
        parse_bid(f"1h cpu:{weight}")
