"""Handshake limits: token buckets per client, per address and per user, and caps on open sockets.

Two middlewares, on either side of authentication (docs/security.md "Limits"):

- ``ConnectionRateLimitMiddleware``, before any session lookup: one bucket per *client* (its
  address plus a digest of the credential it presents, so signed-in people behind one NAT each
  have their own, and clients that present none share their address's), then one per address
  for everything from it. A client refused by its own bucket spends nothing of its address's: an
  abusive client behind a NAT does not lock the others out.
- ``SocketLimitMiddleware``, after authentication: a signed-in user's handshakes, whatever the
  address or credential, and the user's open sockets; an anonymous client's open sockets per
  address. The socket holds its place until the application returns.

StreamAppMiddlewareStack runs the same two steps inline (``refuse_connection``, ``claim_socket``).
Addresses come from ``streamapp.addresses`` (TRUSTED_PROXIES). Counts live where
``streamapp.asgi.buckets`` keeps them (Redis: shared, one round trip per layer). A cache outage
lets handshakes through and logs why: a limiter must not take the site down with it. ``now`` is
the one clock of this module: tests replace it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from django.conf import settings
from django.http.cookie import parse_cookie

from .. import metrics, protocol
from ..addresses import limit_key, scope_address
from ..conf import app_settings
from ..tokens import token_from_scope
from .buckets import OK, SOCKETS_FULL, Bucket, Slot, new_member, store

logger = logging.getLogger("streamapp.ratelimit")

ADDRESS_KEY = "streamapp.client_address"  # the scope's client address, as the limits saw it
CREDENTIAL_KEY = "streamapp.presented"  # digest of the credential presented, or None


def now() -> float:
    """Wall-clock seconds: counts in a shared store need one clock across processes."""
    return time.time()


def _clock() -> float:
    return now()  # looked up at each call, so a test's replacement is used


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def presented_credential(scope: dict[str, Any]) -> str | None:
    """A digest of the token or session cookie a handshake carries (nothing is looked up)."""
    token = token_from_scope(scope)
    if token is not None:
        return "t" + digest(token)
    cookies = [value.decode("latin-1") for name, value in scope.get("headers", ())
               if name.lower() == b"cookie"]
    if cookies:
        session = parse_cookie("; ".join(cookies)).get(settings.SESSION_COOKIE_NAME)
        if session:
            return "s" + digest(session)
    return None


def bucket(name: str, rate: Any) -> list[Bucket]:
    return [Bucket(name, int(rate[0]), float(rate[1]))] if rate else []


async def take(buckets: list[Bucket], slot: Slot | None = None, member: str = "") -> int:
    """Spend one token of each bucket in order and claim ``slot``; a store outage allows."""
    if not buckets and slot is None:
        return OK
    limits, prefix = store(_clock)
    buckets = [Bucket(prefix + b.key, b.count, b.seconds) for b in buckets]
    if slot is not None:
        slot = Slot(prefix + slot.key, slot.cap)
    try:
        return await limits.take(now(), buckets, slot, member)
    except Exception:  # noqa: BLE001 - a limiter must not take the sockets down with the cache
        logger.warning("rate limit store unavailable; handshake allowed", exc_info=True)
        return OK


async def release(slot: Slot, member: str) -> None:
    limits, prefix = store(_clock)
    try:
        await limits.release(Slot(prefix + slot.key, slot.cap), member)
    except Exception:  # noqa: BLE001 - the claim lapses on its own (buckets.SLOT_SECONDS)
        logger.warning("releasing an open-socket count failed", exc_info=True)


async def refuse_rate_limited(receive: Any, send: Any, message: str) -> None:
    """A one-shot WebSocket app: accept, say ``rate_limited``, close 4429 (DESIGN §3)."""
    event = await receive()
    if event["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send",
                "text": protocol.encode(protocol.error("rate_limited", message))})
    await send({"type": "websocket.close", "code": protocol.CLOSE_RATE_LIMITED})


async def refuse_connection(address: str | None, credential: str | None) -> str | None:
    """Before authentication: why the handshake is refused (its client's or its address's
    budget is spent), or None."""
    if address is None:
        return None
    where = limit_key(address)
    refused = await take([
        *bucket(f"client:{where}:{credential or '-'}", app_settings.CONNECTION_RATE),
        *bucket(f"address:{where}", app_settings.ADDRESS_CONNECTION_RATE),
    ])
    if refused == OK:
        return None
    logger.info("handshake rate limited address=%s by=%s", address,
                "client" if refused == 1 else "address")
    metrics.rate_limited("connections")
    return "too many connections from your address; try later"


def plan(scope: dict[str, Any]) -> tuple[list[Bucket], Slot | None, str]:
    """What an authenticated handshake spends and claims, and how the refusal reads."""
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        cap = app_settings.USER_SOCKETS
        return (bucket(f"user:{user.pk}", app_settings.USER_CONNECTION_RATE),
                Slot(f"sockets:user:{user.pk}", cap) if cap else None, "your account")
    address = scope.get(ADDRESS_KEY, scope_address(scope))
    if address is None:
        return [], None, ""
    where = limit_key(address)
    # A credential that did not sign the client in joins its address's anonymous budget:
    # rotating made-up tokens or cookies buys nothing.
    spent = bucket(f"client:{where}:-", app_settings.CONNECTION_RATE) if scope.get(
        CREDENTIAL_KEY) else []
    cap = app_settings.ANONYMOUS_SOCKETS
    return spent, Slot(f"sockets:anonymous:{where}", cap) if cap else None, "your address"


async def claim_socket(scope: dict[str, Any]) -> tuple[str | None, Slot | None, str]:
    """After authentication: ``(refusal, slot, member)``. Without a refusal, the socket holds
    ``slot`` (when there is one) as ``member`` until ``release``."""
    buckets, slot, whose = plan(scope)
    member = new_member()
    refused = await take(buckets, slot, member)
    if refused == OK:
        return None, slot, member
    metrics.rate_limited("sockets" if refused == SOCKETS_FULL else "connections")
    why = "open sockets" if refused == SOCKETS_FULL else "connections"
    logger.info("handshake refused: too many %s for %s", why, whose)
    return f"too many {why} for {whose}; try later", None, member


class ConnectionRateLimitMiddleware:
    """Refuses handshakes over CONNECTION_RATE per client or ADDRESS_CONNECTION_RATE per address.

    Outside the auth stack on purpose: a flood is turned away before any session lookup.
    A scope with no client address (a unix socket and no TRUSTED_PROXIES) is not counted.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        address = scope_address(scope)
        credential = presented_credential(scope)
        scope = {**scope, ADDRESS_KEY: address, CREDENTIAL_KEY: credential}
        refusal = await refuse_connection(address, credential)
        if refusal is not None:
            return await refuse_rate_limited(receive, send, refusal)
        return await self.inner(scope, receive, send)


class SocketLimitMiddleware:
    """Refuses handshakes over USER_CONNECTION_RATE per signed-in user, and sockets over
    USER_SOCKETS per user or ANONYMOUS_SOCKETS per address; holds the socket's place until the
    application returns. Inside the auth stack: it needs the user."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        refusal, slot, member = await claim_socket(scope)
        if refusal is not None:
            return await refuse_rate_limited(receive, send, refusal)
        if slot is None:
            return await self.inner(scope, receive, send)
        try:
            return await self.inner(scope, receive, send)
        finally:
            await release(slot, member)
