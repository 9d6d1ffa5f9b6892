"""Token authentication for WebSocket clients that have no browser session.

Composed inside ``AuthMiddlewareStack`` by StreamAppMiddlewareStack: the session sets
``scope["user"]`` first, and a client that sends a token (``Authorization: Bearer …`` or
``?token=``) is then the token's user, or anonymous when the token is refused;
``scope["token_error"]`` says why.
"""

from __future__ import annotations

from typing import Any

from channels.middleware import BaseMiddleware

from ..tokens import aauthenticate, token_from_scope


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        token = token_from_scope(scope)
        if token is not None:
            scope = dict(scope)
            scope["user"], scope["token_error"] = await aauthenticate(token)
        return await self.inner(scope, receive, send)
