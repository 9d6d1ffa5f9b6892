"""Who the client is behind proxies (streamapp/addresses.py): never the client's own first entry."""

from __future__ import annotations

import ipaddress

import pytest

from streamapp.addresses import limit_key, parse_trust, resolve

NETS = parse_trust(["10.0.0.0/8", "192.0.2.7"])


@pytest.mark.parametrize("peer, forwarded, trust, client", [
    # No proxy configured: the header is the client's to write, so it is not read.
    ("203.0.113.9", ["198.51.100.1"], None, "203.0.113.9"),
    ("203.0.113.9", ["198.51.100.1"], 0, "203.0.113.9"),
    # One proxy that appends: the last entry is what it saw; the client's own entries come first.
    ("10.0.0.2", ["203.0.113.9"], 1, "203.0.113.9"),
    ("10.0.0.2", ["1.1.1.1", "2.2.2.2", "203.0.113.9"], 1, "203.0.113.9"),
    # Two proxies: the outer appends the client, the inner appends the outer.
    ("10.0.0.3", ["6.6.6.6", "203.0.113.9", "10.0.0.2"], 2, "203.0.113.9"),
    # Fewer hops than configured: the oldest entry there is.
    ("10.0.0.2", [], 1, "10.0.0.2"),
    ("10.0.0.3", ["203.0.113.9"], 2, "203.0.113.9"),
    # An unreadable entry where the client should be: the proxy that wrote it.
    ("10.0.0.2", ["203.0.113.9", "garbage"], 1, "10.0.0.2"),
    # Trusted networks: walk from the right past our proxies.
    ("10.0.0.2", ["6.6.6.6", "203.0.113.9", "192.0.2.7"], NETS, "203.0.113.9"),
    ("10.0.0.2", ["10.1.1.1"], NETS, "10.1.1.1"),
    # A peer that is not one of our proxies wrote its own header: ignored.
    ("203.0.113.9", ["10.0.0.5"], NETS, "203.0.113.9"),
    # A unix socket with a proxy in front.
    (None, ["203.0.113.9"], 1, "203.0.113.9"),
    (None, [], 1, None),
])
def test_the_client_is_the_address_the_last_trusted_proxy_saw(peer, forwarded, trust, client):
    assert resolve(peer, forwarded, trust) == client


def test_a_rotating_first_entry_changes_nothing_behind_an_appending_proxy():
    seen = {resolve("10.0.0.2", [f"198.51.100.{i}", "203.0.113.9"], 1) for i in range(200)}
    assert seen == {"203.0.113.9"}


def test_ipv6_clients_count_by_their_slash_64():
    a, b = limit_key("2001:db8:1:2::1"), limit_key("2001:db8:1:2:ffff::9")
    assert a == b == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") != a
    assert limit_key("192.0.2.1") == "192.0.2.1"
    assert limit_key("not an address") == "not an address"


@pytest.mark.parametrize("value, problem", [
    (True, "got a bool"), (-1, "0 or more"), ("10.0.0.0/8", "expected a list"),
    (["10.0.0.0/8", "nope"], "'nope' is not an address"),
])
def test_trusted_proxies_that_cannot_be_used_say_why(value, problem):
    with pytest.raises(ValueError, match=problem):
        parse_trust(value)


def test_trusted_proxies_take_addresses_and_networks():
    assert parse_trust(["192.0.2.7", "10.0.0.0/8"]) == (
        ipaddress.ip_network("192.0.2.7/32"), ipaddress.ip_network("10.0.0.0/8"))
    assert parse_trust(2) == 2 and parse_trust(None) is None
