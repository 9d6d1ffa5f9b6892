"""Who a WebSocket's user is: a bearer token's user, else the session's, else anonymous.

A client that sends a token (``Authorization: Bearer …`` or ``?token=``) is the token's user,
or anonymous when the token is refused (``scope["token_error"]`` says why): it never falls back
to the session, so its handshake looks no session up. A handshake that carries no session
cookie has no session to look up either: its user is anonymous at once. Only a handshake with
the session cookie goes through Channels' session and auth middlewares (a database read in a
thread). Either way the scope has ``user`` and ``session`` as with ``AuthMiddlewareStack``;
without a cookie the session is an empty one, made only if the application touches it. A
token that signed the user in is recorded in ``scope["streamapp.credential"]``, so that an open
socket can tell when it no longer does (streamapp/credentials.py); a session's is found from
the scope itself.
"""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils.functional import SimpleLazyObject
from django.utils.module_loading import import_string

from ..credentials import SCOPE_KEY, for_token
from ..tokens import aauthenticate, token_from_scope

ANONYMOUS = AnonymousUser()  # holds no state: one serves every anonymous socket


def has_session_cookie(scope: dict[str, Any]) -> bool:
    """Does the handshake carry the session cookie (by name; nothing is parsed or read)?"""
    name = settings.SESSION_COOKIE_NAME.encode("latin-1")
    for header, value in scope.get("headers", ()):
        if header == b"cookie" and name in value:
            return True
    return False


def empty_session() -> Any:
    """A new session, as SessionMiddleware gives a handshake without a cookie; made on first use."""
    return SimpleLazyObject(import_string(settings.SESSION_ENGINE + ".SessionStore"))


async def authenticated(scope: dict[str, Any]) -> dict[str, Any] | None:
    """The keys that name a token client's user, or a client without a session cookie
    (anonymous); None when the session must say who it is."""
    token = token_from_scope(scope)
    if token is not None:
        user, error = await aauthenticate(token)
        credential = None if error else for_token(user, token)
        # A refused token never falls back to the session: the client asked to be someone else.
        return {"user": user, "token_error": error, "session": empty_session(),
                SCOPE_KEY: credential}
    if not has_session_cookie(scope):
        return {"user": ANONYMOUS, "session": empty_session()}
    return None


class TokenAuthMiddleware:
    """``scope["user"]`` (and ``scope["session"]``) for WebSocket handshakes; HTTP and any
    handshake with the session cookie go through Channels' ``AuthMiddlewareStack``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.with_session = AuthMiddlewareStack(inner)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            added = await authenticated(scope)
            if added is not None:
                return await self.inner({**scope, **added}, receive, send)
        return await self.with_session(scope, receive, send)
