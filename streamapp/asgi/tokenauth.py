"""Token authentication for WebSocket clients that have no browser session.

Composed inside ``AuthMiddlewareStack`` by StreamAppMiddlewareStack: the session sets
``scope["user"]`` first, and a client that sends a token (``Authorization: Bearer …`` or
``?token=``) is then the token's user, or anonymous when the token is refused;
``scope["token_error"]`` says why. Either way ``scope["streamapp.credential"]`` records what
signed the user in, so that an open socket can tell when it no longer does
(streamapp/credentials.py).
"""

from __future__ import annotations

from typing import Any

from channels.middleware import BaseMiddleware

from ..credentials import SCOPE_KEY, for_session, for_token
from ..tokens import aauthenticate, token_from_scope


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        token = token_from_scope(scope)
        scope = dict(scope)
        if token is not None:
            scope["user"], scope["token_error"] = await aauthenticate(token)
            scope[SCOPE_KEY] = None if scope["token_error"] else for_token(scope["user"], token)
        else:
            scope[SCOPE_KEY] = for_session(scope)
        return await self.inner(scope, receive, send)
