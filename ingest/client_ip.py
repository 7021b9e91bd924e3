"""The address of the client behind a request, for ``context.ip``: pure functions.

The client is the socket peer, unless the peer is one of the configured trusted proxies
(``SEGFLOW_INGEST_TRUSTED_PROXIES``, CIDRs; none by default). Then ``X-Forwarded-For`` is walked
from the right (the entry the nearest proxy appended) leftwards, skipping trusted addresses, and
the first untrusted address is the client: every entry to its left was written by the client
or by proxies nobody vouches for, so a client cannot choose its address by sending the header
itself. When every entry is trusted, the leftmost is the client (an internal caller).

Empty entries (``a,,b``) are skipped; an entry that is not an IP address stops the walk and
the client is unknown (None): skipping it could reach a value the client wrote. Ports
(``1.2.3.4:5678``, ``[2001:db8::1]:443``) are removed; an IPv4-mapped IPv6 address is given as
IPv4. The ``Forwarded`` header (RFC 7239) is not read: the proxies in use send
``X-Forwarded-For`` (nginx, Envoy, HAProxy, cloud load balancers), and reading two headers that
could disagree would give a client two chances to be believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs (or single addresses) -> networks; ValueError naming a bad one."""
    networks = []
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP network (CIDR such as 10.0.0.0/8)") from exc
    return tuple(networks)


def parse_address(text: str) -> IPAddress | None:
    """One address as a proxy writes it (port and brackets allowed); None when it is none."""
    value = text.strip()
    if not value or len(value) > 64:
        return None
    if value.startswith("["):  # [v6] or [v6]:port
        end = value.find("]")
        if end < 0 or (end + 1 < len(value) and not _is_port(value[end + 1 :])):
            return None
        value = value[1:end]
    elif value.count(":") == 1:  # v4:port
        value, port = value.split(":")
        if not port.isdigit():
            return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
    return address


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit()


class TrustedProxies:
    """The networks whose ``X-Forwarded-For`` is believed."""

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: list[str]) -> str | None:
        """The client's address as text; None when it cannot be known.

        `peer` is the socket peer's host; `forwarded_for` the values of every
        ``X-Forwarded-For`` header of the request, in the order received.
        """
        if peer is None:
            return None
        if not self.networks:
            return _plain(peer)
        peer_address = parse_address(peer)
        if peer_address is None:
            return None
        if not self.trusts(peer_address):
            return str(peer_address)
        entries = [e for value in forwarded_for for e in value.split(",") if e.strip()]
        client = peer_address
        for entry in reversed(entries):
            address = parse_address(entry)
            if address is None:
                return None
            client = address
            if not self.trusts(address):
                break
        return str(client)


def _plain(peer: str) -> str:
    """The peer as text, an IPv4-mapped IPv6 peer (dual-stack sockets) as IPv4."""
    if peer.startswith("::ffff:") and "." in peer:
        return peer[7:]
    return peer
