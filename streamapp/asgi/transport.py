"""Put daphne's transport backlog in the scope, where a socket's outlet finds it.

Frames go out through daphne's own ``send``, past the inner middlewares: channels' session
middleware inspects the session on every message it passes, though it acts on HTTP responses
only, and that was a fifth of a busy server's CPU. Under any other server there is no backlog:
sockets are never seen as congested and frames take the usual way.
"""

from __future__ import annotations

from typing import Any

from ..adapters.daphne import backlog_of

SCOPE_KEY = "streamapp.transport"


class TransportMiddleware:
    """``scope["streamapp.transport"]`` for WebSocket connections daphne serves.

    It must wrap the whole WebSocket stack, where ``send`` is still daphne's own.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            backlog = backlog_of(send)
            if backlog is not None:
                scope = {**scope, SCOPE_KEY: backlog}
        return await self.application(scope, receive, send)
