"""Who a WebSocket's user is: a bearer token's user, else the session's, else anonymous.

A client that sends a token (``Authorization: Bearer …`` or ``?token=``) is the token's user,
or anonymous when the token is refused (``scope["token_error"]`` says why): it never falls back
to the session, so its handshake looks no session up. A handshake that carries no session
cookie has no session to look up either: its user is anonymous at once. Only a handshake with
the session cookie goes through Channels' session and auth middlewares (a database read in a
thread). Either way the scope has ``user`` and ``session`` as with ``AuthMiddlewareStack``;
without a cookie the session is an empty one, made only if the application touches it.
"""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils.functional import SimpleLazyObject
from django.utils.module_loading import import_string

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


class TokenAuthMiddleware:
    """``scope["user"]`` (and ``scope["session"]``) for WebSocket handshakes; HTTP and any
    handshake with the session cookie go through Channels' ``AuthMiddlewareStack``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.with_session = AuthMiddlewareStack(inner)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            token = token_from_scope(scope)
            if token is not None:
                user, error = await aauthenticate(token)
                scope = {**scope, "user": user, "token_error": error, "session": empty_session()}
                return await self.inner(scope, receive, send)
            if not has_session_cookie(scope):
                scope = {**scope, "user": ANONYMOUS, "session": empty_session()}
                return await self.inner(scope, receive, send)
        return await self.with_session(scope, receive, send)
