"""The handshake limits (streamapp/asgi/handshakes.py) on the in-process store, driven through
plain ASGI calls: who is counted in which budget, what a refusal looks like, and when a socket's
place is freed. Time stands still (``handshakes.now``): no sleeping (scripts/mutation runs
these; tests/e2e/test_limits.py runs them over real sockets)."""

from __future__ import annotations

import hashlib
import logging
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import AnonymousUser

from streamapp import protocol
from streamapp.asgi import buckets, handshakes
from streamapp.asgi.buckets import OK, Bucket, LocalLimits, Slot
from streamapp.asgi.handshakes import (
    ADDRESS_KEY,
    CREDENTIAL_KEY,
    ConnectionRateLimitMiddleware,
    SocketLimitMiddleware,
    claim_socket,
    digest,
    presented_credential,
    refuse_connection,
    refuse_rate_limited,
    release,
    take,
)

T0 = 1_700_000_000.0
HOME = "198.51.100.7"
NO_LIMITS = {
    "CONNECTION_RATE": None, "ADDRESS_CONNECTION_RATE": None, "USER_CONNECTION_RATE": None,
    "USER_SOCKETS": None, "ANONYMOUS_SOCKETS": None, "TRUSTED_PROXIES": None,
}
REFUSED_ADDRESS = "too many connections from your address; try later"


@pytest.fixture(autouse=True)
def fresh_limits(settings, monkeypatch):
    """A store of the test's own in this process, every limit off until the test sets it."""
    settings.CACHES = {
        **settings.CACHES,
        "limits": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    settings.STREAMAPP = {**settings.STREAMAPP, **NO_LIMITS, "RATE_LIMIT_CACHE": "limits"}
    monkeypatch.setattr(buckets, "_stores", {})
    monkeypatch.setattr(handshakes, "now", lambda: T0)


@pytest.fixture
def limit(settings):
    def set_limits(**values):
        settings.STREAMAPP = {**settings.STREAMAPP, **values}

    return set_limits


def counts() -> LocalLimits:
    limits, _ = buckets.store(handshakes._clock)
    return limits


def ws(address=HOME, headers=(), query=b"", **extra):
    scope = {"type": "websocket", "client": (address, 50000) if address else None,
             "headers": list(headers), "query_string": query, "path": "/ws/"}
    scope.update(extra)
    return scope


def signed_in(pk):
    return SimpleNamespace(pk=pk, is_authenticated=True)


def token(value):
    return (b"authorization", f"Bearer {value}".encode())


class Peer:
    """The client side of one ASGI connection: it opens with ``first``; what it was sent."""

    def __init__(self, first="websocket.connect") -> None:
        self.first = first
        self.sent: list[dict] = []

    async def receive(self):
        return {"type": self.first}

    async def send(self, message):
        self.sent.append(message)


def rate_limited(message):
    return [
        {"type": "websocket.accept"},
        {"type": "websocket.send",
         "text": protocol.encode(protocol.error("rate_limited", message))},
        {"type": "websocket.close", "code": 4429},
    ]


class App:
    """The application behind a middleware: records each call; ``during`` runs inside it."""

    def __init__(self, during=None, fail=False) -> None:
        self.calls: list[tuple] = []
        self.during = during
        self.fail = fail

    async def __call__(self, scope, receive, send):
        self.calls.append((scope, receive, send))
        if self.during is not None:
            self.during()
        if self.fail:
            raise RuntimeError("the consumer crashed")
        return "done"


# -- what a handshake presents ---------------------------------------------------------------


def test_a_digest_is_twelve_bytes_of_blake2b_of_the_utf8_text():
    assert digest("abc") == hashlib.blake2b(b"abc", digest_size=12).hexdigest()
    assert digest("é") == hashlib.blake2b("é".encode(), digest_size=12).hexdigest()


def test_a_digest_takes_any_string_even_a_lone_surrogate():
    assert digest("\ud800") == hashlib.blake2b(b"\xed\xa0\x80", digest_size=12).hexdigest()


def test_a_token_is_presented_by_header_or_query_and_a_session_by_cookie(settings):
    assert presented_credential(ws(headers=[token("abc")])) == "t" + digest("abc")
    assert presented_credential(ws(query=b"token=abc")) == "t" + digest("abc")
    cookie = f"theme=dark; {settings.SESSION_COOKIE_NAME}=s3ss".encode()
    assert presented_credential(ws(headers=[(b"Cookie", cookie)])) == "s" + digest("s3ss")


def test_a_session_cookie_may_come_in_a_later_cookie_header(settings):
    session = f"{settings.SESSION_COOKIE_NAME}=s3ss".encode()
    headers = [(b"cookie", b"theme=dark"), (b"cookie", session)]
    assert presented_credential(ws(headers=headers)) == "s" + digest("s3ss")


def test_nothing_presented_without_a_token_or_a_session_cookie(settings):
    assert presented_credential(ws()) is None
    assert presented_credential({"type": "websocket"}) is None  # no headers at all
    assert presented_credential(ws(headers=[(b"cookie", b"theme=dark")])) is None
    session = f"{settings.SESSION_COOKIE_NAME}=s3ss".encode()
    assert presented_credential(ws(headers=[(b"x-cookie", session)])) is None
    empty = f"{settings.SESSION_COOKIE_NAME}=".encode()
    assert presented_credential(ws(headers=[(b"cookie", empty)])) is None


def test_a_token_counts_before_a_session(settings):
    session = (b"cookie", f"{settings.SESSION_COOKIE_NAME}=s3ss".encode())
    assert presented_credential(ws(headers=[session, token("abc")])) == "t" + digest("abc")


def test_a_rate_is_one_bucket_and_none_is_none():
    assert handshakes.bucket("k", (3, 60)) == [Bucket("k", 3, 60.0)]
    assert handshakes.bucket("k", None) == []


# -- spending ----------------------------------------------------------------------------------


async def test_nothing_to_count_asks_no_store(monkeypatch):
    def no_store(clock):
        raise AssertionError("the store was asked")

    monkeypatch.setattr(handshakes, "store", no_store)
    assert await take([]) == OK


async def test_the_store_is_asked_on_the_module_clock_and_keys_take_its_prefix(monkeypatch):
    clocks, local = [], LocalLimits()

    def store(clock):
        clocks.append(clock())
        return local, "site:"

    monkeypatch.setattr(handshakes, "store", store)
    assert await take([Bucket("k", 1, 60.0)], Slot("s", 1), "m") == OK
    assert list(local.buckets) == ["site:k"] and local.slots == {"site:s": {"m"}}
    await release(Slot("s", 1), "m")
    assert local.slots == {} and clocks == [T0, T0]


async def test_a_store_that_fails_lets_the_handshake_through_and_says_so(monkeypatch, caplog):
    class Broken:
        async def take(self, *args):
            raise ConnectionError("cache down")

        async def release(self, *args):
            raise ConnectionError("cache down")

    monkeypatch.setattr(handshakes, "store", lambda clock: (Broken(), ""))
    with caplog.at_level(logging.WARNING, logger="streamapp.ratelimit"):
        assert await take([Bucket("k", 1, 60.0)]) == OK
        await release(Slot("s", 1), "m")
    assert "rate limit store unavailable; handshake allowed" in caplog.text
    assert "releasing an open-socket count failed" in caplog.text


async def test_the_rate_limited_answer_accepts_says_why_and_closes_4429():
    peer = Peer()
    await refuse_rate_limited(peer.receive, peer.send, "slow down")
    assert peer.sent == rate_limited("slow down")


async def test_a_client_gone_before_the_answer_is_sent_nothing():
    peer = Peer(first="websocket.disconnect")
    await refuse_rate_limited(peer.receive, peer.send, "slow down")
    assert peer.sent == []


# -- before authentication: per client and per address -----------------------------------------


async def test_a_client_is_refused_past_its_connection_rate(limit):
    limit(CONNECTION_RATE=(2, 60.0))
    verdicts = [await refuse_connection(HOME, "tabc") for _ in range(3)]
    assert verdicts == [None, None, REFUSED_ADDRESS]


async def test_each_credential_behind_one_address_has_its_own_budget(limit):
    limit(CONNECTION_RATE=(1, 60.0))
    assert await refuse_connection(HOME, "talice") is None
    assert await refuse_connection(HOME, "talice") == REFUSED_ADDRESS
    assert await refuse_connection(HOME, "tbob") is None
    assert await refuse_connection(HOME, None) is None  # the clients presenting nothing
    assert await refuse_connection(HOME, None) == REFUSED_ADDRESS  # share one budget
    assert await refuse_connection("203.0.113.1", None) is None  # per address


async def test_an_address_is_refused_past_its_rate_whoever_asks(limit):
    limit(CONNECTION_RATE=(5, 60.0), ADDRESS_CONNECTION_RATE=(3, 60.0))
    verdicts = [await refuse_connection(HOME, f"t{n}") for n in range(4)]
    assert verdicts == [None, None, None, REFUSED_ADDRESS]
    assert await refuse_connection("203.0.113.1", "t0") is None


async def test_a_client_refused_by_its_own_budget_spends_nothing_of_its_address(limit):
    limit(CONNECTION_RATE=(1, 60.0), ADDRESS_CONNECTION_RATE=(3, 60.0))
    assert await refuse_connection(HOME, "tflood") is None
    for _ in range(5):
        assert await refuse_connection(HOME, "tflood") == REFUSED_ADDRESS
    assert [await refuse_connection(HOME, f"t{n}") for n in range(3)] == [None, None,
                                                                          REFUSED_ADDRESS]


async def test_one_ipv6_subscriber_network_is_one_address(limit):
    limit(ADDRESS_CONNECTION_RATE=(1, 60.0))
    assert await refuse_connection("2001:db8:1:2::1", None) is None
    assert await refuse_connection("2001:db8:1:2::ffff", None) == REFUSED_ADDRESS
    assert await refuse_connection("2001:db8:1:3::1", None) is None


async def test_a_handshake_with_no_address_is_not_counted(limit):
    limit(CONNECTION_RATE=(1, 60.0), ADDRESS_CONNECTION_RATE=(1, 60.0))
    assert [await refuse_connection(None, None) for _ in range(3)] == [None, None, None]


# -- after authentication: per user, per anonymous address, open sockets ----------------------


async def test_a_signed_in_user_is_refused_past_the_user_rate_from_any_address(limit):
    limit(USER_CONNECTION_RATE=(2, 60.0))
    verdicts = [(await claim_socket(ws(address=f"203.0.113.{n}", user=signed_in(7))))[0]
                for n in range(3)]
    assert verdicts == [None, None, "too many connections for your account; try later"]
    assert (await claim_socket(ws(user=signed_in(8))))[0] is None  # another user


async def test_a_signed_in_user_holds_at_most_user_sockets(limit):
    limit(USER_SOCKETS=2)
    claims = [await claim_socket(ws(user=signed_in(7))) for _ in range(3)]
    assert [refusal for refusal, _, _ in claims] == [
        None, None, "too many open sockets for your account; try later",
    ]
    assert claims[2][1] is None  # a refused socket holds nothing
    assert (await claim_socket(ws(user=signed_in(8))))[0] is None  # counted per user
    _, slot, member = claims[0]
    await release(slot, member)
    assert (await claim_socket(ws(user=signed_in(7))))[0] is None


async def test_every_socket_claims_a_place_of_its_own(limit):
    limit(ANONYMOUS_SOCKETS=3)
    members = [(await claim_socket(ws(**{ADDRESS_KEY: HOME})))[2] for _ in range(3)]
    assert len(set(members)) == 3
    (held,) = counts().slots.values()
    assert held == set(members)


async def test_an_anonymous_address_holds_at_most_anonymous_sockets(limit):
    limit(ANONYMOUS_SOCKETS=1, USER_SOCKETS=1)
    assert (await claim_socket(ws(user=AnonymousUser())))[0] is None
    refusal, slot, _ = await claim_socket(ws(user=AnonymousUser()))
    assert refusal == "too many open sockets for your address; try later" and slot is None
    assert (await claim_socket(ws(address="203.0.113.1")))[0] is None  # per address
    assert (await claim_socket(ws(user=signed_in(7))))[0] is None  # users are counted apart


async def test_the_address_the_first_middleware_saw_is_the_one_counted(limit):
    limit(ANONYMOUS_SOCKETS=1)
    assert (await claim_socket(ws(address="10.0.0.1", **{ADDRESS_KEY: HOME})))[0] is None
    assert (await claim_socket(ws(address=HOME)))[0] is not None
    assert (await claim_socket(ws(address="10.0.0.1")))[0] is None


async def test_an_anonymous_handshake_with_no_address_is_not_counted(limit):
    limit(ANONYMOUS_SOCKETS=1, CONNECTION_RATE=(1, 60.0))
    for _ in range(3):
        refusal, slot, _ = await claim_socket(ws(address=None, **{CREDENTIAL_KEY: "tmadeup"}))
        assert (refusal, slot) == (None, None)
    assert counts().slots == {} and counts().buckets == {}


async def test_anonymous_users_are_not_counted_as_one_user(limit):
    limit(USER_CONNECTION_RATE=(1, 60.0), USER_SOCKETS=1)
    assert [(await claim_socket(ws(user=AnonymousUser())))[0] for _ in range(3)] == [None] * 3
    assert [(await claim_socket(ws(user=object())))[0] for _ in range(3)] == [None] * 3


async def test_without_caps_no_socket_is_counted_and_nothing_is_logged(limit, caplog):
    limit(USER_CONNECTION_RATE=(5, 60.0))
    with caplog.at_level(logging.INFO, logger="streamapp.ratelimit"):
        refusal, slot, _ = await claim_socket(ws(user=signed_in(7)))
        assert (refusal, slot) == (None, None)
        refusal, slot, _ = await claim_socket(ws(**{ADDRESS_KEY: HOME}))
        assert (refusal, slot) == (None, None)
    assert counts().slots == {} and caplog.text == ""


async def test_made_up_credentials_spend_their_address_anonymous_budget(limit):
    """A token or cookie that signed nobody in joins the anonymous clients of its address:
    rotating made-up ones buys nothing."""
    limit(CONNECTION_RATE=(2, 60.0))
    verdicts = []
    for n in range(3):  # each made-up token has a client budget of its own before authentication
        scope = ws(**{ADDRESS_KEY: HOME, CREDENTIAL_KEY: "t" + digest(f"made-up {n}")})
        assert await refuse_connection(HOME, scope[CREDENTIAL_KEY]) is None
        verdicts.append((await claim_socket(scope))[0])
    assert verdicts == [None, None, "too many connections for your address; try later"]
    assert await refuse_connection(HOME, None) == REFUSED_ADDRESS  # the anonymous budget


async def test_an_anonymous_client_spends_its_budget_once_per_handshake(limit):
    limit(CONNECTION_RATE=(2, 60.0))
    for _ in range(2):
        assert await refuse_connection(HOME, None) is None
        assert (await claim_socket(ws(**{ADDRESS_KEY: HOME, CREDENTIAL_KEY: None})))[0] is None
    assert await refuse_connection(HOME, None) == REFUSED_ADDRESS


# -- the middlewares ---------------------------------------------------------------------------


@pytest.mark.parametrize("middleware", [ConnectionRateLimitMiddleware, SocketLimitMiddleware])
async def test_other_scopes_pass_straight_through(middleware, limit):
    limit(CONNECTION_RATE=(1, 60.0), ANONYMOUS_SOCKETS=1, ADDRESS_CONNECTION_RATE=(1, 60.0))
    app = App()
    guarded, peer = middleware(app), Peer()
    for _ in range(3):
        scope = {"type": "http", "client": (HOME, 1), "headers": []}
        assert await guarded(scope, peer.receive, peer.send) == "done"
        assert app.calls[-1] == (scope, peer.receive, peer.send)
    assert counts().buckets == {} and counts().slots == {}


async def test_the_connection_middleware_passes_on_what_it_saw_and_refuses_past_the_rate(limit):
    limit(CONNECTION_RATE=(1, 60.0))
    app = App()
    guarded = ConnectionRateLimitMiddleware(app)
    peer = Peer()
    scope = ws(headers=[token("abc")])
    assert await guarded(scope, peer.receive, peer.send) == "done"
    (seen, receive, send), = app.calls
    assert seen == {**scope, ADDRESS_KEY: HOME, CREDENTIAL_KEY: "t" + digest("abc")}
    assert (receive, send) == (peer.receive, peer.send)
    assert await guarded(ws(headers=[token("xyz")]), peer.receive, peer.send) == "done"
    assert await guarded(ws(address="203.0.113.1"), peer.receive, peer.send) == "done"
    assert peer.sent == []
    assert await guarded(ws(headers=[token("abc")]), peer.receive, peer.send) is None
    assert len(app.calls) == 3 and peer.sent == rate_limited(REFUSED_ADDRESS)


async def test_the_socket_middleware_holds_a_place_while_the_app_runs(limit):
    limit(USER_SOCKETS=1)
    places = []
    app = App(during=lambda: places.append(sum(map(len, counts().slots.values()))))
    guarded, peer = SocketLimitMiddleware(app), Peer()
    scope = ws(user=signed_in(7))
    assert await guarded(scope, peer.receive, peer.send) == "done"
    assert app.calls == [(scope, peer.receive, peer.send)] and places == [1]
    assert counts().slots == {}  # freed when the app returned
    assert await guarded(ws(user=signed_in(7)), peer.receive, peer.send) == "done"
    assert peer.sent == []


async def test_a_crashed_app_frees_its_place_too(limit):
    limit(USER_SOCKETS=1)
    guarded, peer = SocketLimitMiddleware(App(fail=True)), Peer()
    with pytest.raises(RuntimeError, match="the consumer crashed"):
        await guarded(ws(user=signed_in(7)), peer.receive, peer.send)
    assert counts().slots == {}


async def test_the_socket_middleware_refuses_a_socket_over_the_cap(limit):
    limit(USER_SOCKETS=1)
    inner_peer = Peer()
    guarded = SocketLimitMiddleware(App())
    held = await claim_socket(ws(user=signed_in(7)))  # another socket of the user, open
    assert held[0] is None
    assert await guarded(ws(user=signed_in(7)), inner_peer.receive, inner_peer.send) is None
    assert inner_peer.sent == rate_limited("too many open sockets for your account; try later")


async def test_the_socket_middleware_without_a_cap_claims_and_frees_nothing(limit, caplog):
    app = App()
    guarded, peer = SocketLimitMiddleware(app), Peer()
    scope = ws(user=signed_in(7))
    with caplog.at_level(logging.WARNING, logger="streamapp.ratelimit"):
        assert await guarded(scope, peer.receive, peer.send) == "done"
    assert app.calls == [(scope, peer.receive, peer.send)] and caplog.text == ""
