"""Who the client is, by address: the peer, or behind trusted reverse proxies the address the
last trusted proxy saw.

A proxy that appends to ``X-Forwarded-For`` keeps whatever the client sent before the address it
saw, so the first entry is the client's to choose: reading it (as daphne's ``--proxy-headers``
does) lets a client be anyone. ``STREAMAPP["TRUSTED_PROXIES"]`` says which hops to believe:

- ``None`` (the default): no proxy; the peer is the client and the header is ignored;
- an ``int`` N: N proxies in front, each appending; the client is the entry N hops from the
  right, counting the peer (the last proxy) as the first hop;
- a list of addresses and networks (``["10.0.0.0/8", "192.0.2.7"]``): walking from the right,
  the first address that is not one of them is the client. Tighter than a count: a client that
  reaches an inner proxy directly cannot pass for another.

Entries are read by explicit ASCII rules (an IPv4 or IPv6 address, with or without a port or
brackets); an entry that is not one stops the walk at the proxy that wrote it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from .conf import app_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Trust = None | int | tuple[Network, ...]

FORWARDED_FOR = b"x-forwarded-for"
ENTRY = re.compile(r"\[?([0-9A-Fa-f:.]{2,45})\]?(?::[0-9]{1,5})?", re.ASCII)
IPV4_WITH_PORT = re.compile(r"([0-9.]{7,15}):[0-9]{1,5}", re.ASCII)
SHOWN_CHARS = 100
IPV6_PREFIX = 64  # one IPv6 subscriber gets a /64: counted as one client


def parse_address(text: str) -> str | None:
    """``text`` as a normalised IP address, or None when it is not one."""
    text = text.strip(" \t")
    match = IPV4_WITH_PORT.fullmatch(text) or ENTRY.fullmatch(text)
    if match is None:
        return None
    try:
        address = ipaddress.ip_address(match.group(1))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.compressed


def parse_trust(value: Any) -> Trust:
    """A TRUSTED_PROXIES value as used; ValueError saying what is wrong (the system check)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("expected None, a number of proxies or a list of addresses, got a bool")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a number of proxies is 0 or more, got {value}")
        return value
    return parse_networks(value)


def parse_networks(value: Any) -> tuple[Network, ...]:
    """A list of addresses and networks; ValueError saying which item is not one."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"expected a list of addresses or networks, got {value!r:.60}")
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{item!r:.60} is not an address or a network") from None
    return tuple(networks)


@lru_cache(maxsize=8)
def _trust(value: Any) -> Trust:
    return parse_trust(value)


@lru_cache(maxsize=8)
def networks_of(value: tuple[str, ...]) -> tuple[Network, ...]:
    """``parse_networks`` once per value (settings are read on every request)."""
    return parse_networks(value)


def trusted_proxies() -> Trust:
    """TRUSTED_PROXIES as used (parsed once per value)."""
    value = app_settings.TRUSTED_PROXIES
    if isinstance(value, (list, set, frozenset)):
        value = tuple(value)
    return _trust(value)


def _is_trusted(address: str | None, networks: tuple[Network, ...]) -> bool:
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip.version == network.version and ip in network for network in networks)


def resolve(peer: str | None, forwarded: Sequence[str], trust: Trust) -> str | None:
    """The client's address from the peer's and the ``X-Forwarded-For`` entries, oldest first.

    ``peer`` None is a unix socket: its other end is on this host, so with proxies configured it
    counts as the last proxy.
    """
    if trust is None or trust == 0 or (peer is None and not forwarded):
        return peer
    entries = [parse_address(entry) for entry in forwarded]
    if isinstance(trust, int):
        chain = [*entries, peer]
        index = max(0, len(chain) - 1 - trust)
        # A hop that wrote something unreadable is the last one we can name.
        for address in chain[index:]:
            if address is not None:
                return address
        return peer
    if peer is not None and not _is_trusted(parse_address(peer), trust):
        return peer  # not through a proxy of ours: the header is the client's own
    last = peer
    for address in reversed(entries):
        if address is None or not _is_trusted(address, trust):
            return address if address is not None else last
        last = address
    return last


def forwarded_entries(values: Iterable[str]) -> list[str]:
    """Every ``X-Forwarded-For`` header value split into entries, in order."""
    return [entry for value in values for entry in value.split(",")]


def scope_address(scope: dict[str, Any]) -> str | None:
    """The client address of an ASGI scope (None: a unix socket with no proxy in front)."""
    client = scope.get("client")
    peer = shown_peer(client[0]) if client else None
    trust = trusted_proxies()
    if trust is None:
        return peer
    values = [
        value.decode("latin-1") for name, value in scope.get("headers", ())
        if name.lower() == FORWARDED_FOR
    ]
    return resolve(peer, forwarded_entries(values), trust)


def request_address(meta: dict[str, Any]) -> str | None:
    """The client address of a Django request's META, by the same rule."""
    peer = meta.get("REMOTE_ADDR") or None
    trust = trusted_proxies()
    if trust is None:
        return shown_peer(peer) if peer else None
    header = meta.get("HTTP_X_FORWARDED_FOR")
    return resolve(shown_peer(peer) if peer else None,
                   forwarded_entries([header] if header else []), trust)


def shown_peer(value: Any) -> str:
    """The server's own peer value: normalised when it is an IP, else kept short and printable."""
    text = str(value)
    address = parse_address(text)
    if address is not None:
        return address
    return text[:SHOWN_CHARS].encode("ascii", "backslashreplace").decode("ascii")


def limit_key(address: str) -> str:
    """What the limits count by: the address, or for IPv6 its /64 (one subscriber's network)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False).with_prefixlen
    return ip.compressed


def allowed(address: str | None, networks: Sequence[Network]) -> bool:
    """Is ``address`` in one of ``networks``?"""
    if address is None or parse_address(address) is None:
        return False
    return _is_trusted(parse_address(address), tuple(networks))
