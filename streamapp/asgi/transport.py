"""Put the socket's send backlog in the scope, where a socket's outlet finds it.

Under daphne, daphne's own transport: frames go out through daphne's own ``send``, past the
inner middlewares (channels' session middleware inspects the session on every message it
passes, though it acts on HTTP responses only, and that was a fifth of a busy server's CPU).
Under a server that ran the ASGI lifespan (uvicorn, hypercorn), a queue of streamapp's own in
front of the server's ``send`` (sendqueue.py). Elsewhere (test communicators) there is no
backlog: sockets are never seen as congested and frames take the usual way.
"""

from __future__ import annotations

from typing import Any

from ..adapters.daphne import backlog_of
from . import servers
from .sendqueue import SendQueue

SCOPE_KEY = "streamapp.transport"


class TransportMiddleware:
    """``scope["streamapp.transport"]``: the backlog of each WebSocket connection.

    It must wrap the whole WebSocket stack, where ``send`` is still the server's own. A scope
    that already has a backlog (a test's) keeps it.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket" or SCOPE_KEY in scope:
            return await self.application(scope, receive, send)
        backlog = backlog_of(send)
        if backlog is not None:
            return await self.application({**scope, SCOPE_KEY: backlog}, receive, send)
        if not servers.served_with_lifespan():
            servers.warn_unbounded_once(scope)
            return await self.application(scope, receive, send)
        queue = SendQueue(send)
        try:
            return await self.application({**scope, SCOPE_KEY: queue}, receive, queue.send)
        finally:
            await queue.stop()
