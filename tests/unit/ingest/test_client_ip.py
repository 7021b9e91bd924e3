"""The client address behind a request: trusted proxies, X-Forwarded-For walking, bad input."""

from __future__ import annotations

import pytest

from ingest.client_ip import TrustedProxies, parse_address, parse_networks
from ingest.settings import IngestSettings
from runtime.settings import build_settings
from schemas.errors import ConfigError

PROXIES = TrustedProxies(parse_networks("10.0.0.0/8, 2001:db8:ffff::/48, 192.0.2.7"))


def test_without_trusted_proxies_the_peer_is_the_client_and_the_header_is_ignored() -> None:
    none = TrustedProxies()
    assert not none
    assert none.client("203.0.113.5", ["198.51.100.1"]) == "203.0.113.5"
    assert none.client("2001:db8::5", []) == "2001:db8::5"
    assert none.client("::ffff:203.0.113.5", []) == "203.0.113.5"  # dual-stack socket
    assert none.client(None, ["198.51.100.1"]) is None  # a unix socket: no peer address


def test_a_spoofed_header_from_an_untrusted_peer_is_ignored() -> None:
    assert PROXIES.client("203.0.113.5", ["198.51.100.1"]) == "203.0.113.5"
    assert PROXIES.client("::ffff:203.0.113.5", ["10.1.1.1"]) == "203.0.113.5"


@pytest.mark.parametrize(
    ("headers", "client"),
    [
        (["198.51.100.1"], "198.51.100.1"),
        # the client wrote "1.1.1.1" itself; the trusted proxy appended what it saw
        (["1.1.1.1, 198.51.100.1"], "198.51.100.1"),
        # two trusted hops (one IPv6) are skipped from the right
        (["1.1.1.1, 198.51.100.1, 2001:db8:ffff::9, 10.2.3.4"], "198.51.100.1"),
        # several headers are one list, in the order received
        (["1.1.1.1", "198.51.100.1, 10.9.9.9"], "198.51.100.1"),
        # ports and brackets as some proxies write them; empty entries are skipped
        (["198.51.100.1:5555,"], "198.51.100.1"),
        (["[2001:db8:1::2]:443"], "2001:db8:1::2"),
        (["2001:db8:1::2"], "2001:db8:1::2"),
        (["::ffff:198.51.100.1"], "198.51.100.1"),
        # every hop trusted: the leftmost is the client (an internal caller)
        (["10.5.5.5, 10.6.6.6"], "10.5.5.5"),
        # no header: the trusted peer itself
        ([], "10.0.0.1"),
    ],
)
def test_x_forwarded_for_from_a_trusted_proxy_is_walked_from_the_right(
    headers: list[str], client: str
) -> None:
    assert PROXIES.client("10.0.0.1", headers) == client


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "198.51.100.1, not-an-ip",
        "198.51.100.1, 999.1.1.1",
        "unknown",
        "fe80::1%eth0",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "1.2.3.4:port",
        "x" * 10_000,
        "\x00\xff",
    ],
)
def test_a_bad_entry_where_the_walk_reaches_it_leaves_the_client_unknown(header: str) -> None:
    assert PROXIES.client("10.0.0.1", [header]) is None


def test_a_bad_entry_left_of_the_client_does_not_matter() -> None:
    assert PROXIES.client("10.0.0.1", ["garbage, 198.51.100.1"]) == "198.51.100.1"


def test_parse_address_takes_what_proxies_write() -> None:
    assert str(parse_address(" 192.0.2.1 ")) == "192.0.2.1"
    assert str(parse_address("192.0.2.1:80")) == "192.0.2.1"
    assert parse_address("") is None
    assert parse_address("192.0.2.1:80:90") is None  # neither IPv4:port nor IPv6


def test_a_bad_trusted_proxy_stops_the_start_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEGFLOW_INGEST_TRUSTED_PROXIES", "10.0.0.0/8, 10.0.0.0/33")
    with pytest.raises(ConfigError, match=r"trusted_proxies \(SEGFLOW_INGEST_TRUSTED_PROXIES\)"):
        build_settings(IngestSettings)
    monkeypatch.setenv("SEGFLOW_INGEST_TRUSTED_PROXIES", "10.0.0.0/8,, ::1")
    assert len(build_settings(IngestSettings).proxies().networks) == 2
