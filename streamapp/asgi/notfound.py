"""A WebSocket path no route matches: refused cleanly, never a server error (DESIGN §3).

streamapp's routes carry no catch-all, so a project's own routes can sit beside them in one
URLRouter; this middleware, right around that router, answers what none of them matches.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import protocol
from ..adapters.routing import is_no_route

logger = logging.getLogger("streamapp.asgi")


async def refuse_not_found(path: str, receive: Any, send: Any) -> None:
    """Accept, send the ``not_found`` frame that says why, close 4404."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    shown = path[:200].encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate
    error = protocol.error("not_found", f"no WebSocket endpoint at {shown}")
    await send({"type": "websocket.send", "text": protocol.encode(error)})
    await send({"type": "websocket.close", "code": protocol.CLOSE_NOT_FOUND})


class RouteNotFoundMiddleware:
    """Turns the router's "no route found" into ``not_found`` and close 4404."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        started = False

        async def watched_receive() -> Any:
            nonlocal started
            started = True
            return await receive()

        try:
            return await self.inner(scope, watched_receive, send)
        except Exception as exc:
            if started or not is_no_route(exc):
                raise
        logger.info("no WebSocket route path=%s", scope.get("path", "")[:200])
        return await refuse_not_found(scope.get("path", ""), receive, send)
