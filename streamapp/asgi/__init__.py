"""The public wiring of a project's ``asgi.py`` (DESIGN §2 "Wiring into a project").

``StreamAppMiddlewareStack`` wraps the project's WebSocket router: foreign Origins refused,
handshake floods turned away before any session lookup, then a bearer token's user when the
client sends one, else the session's (looked up only when the handshake carries the session
cookie); a path no route matches refused with 4404; outermost, the socket's send backlog put in
the scope (it needs the server's own ``send``). ``lifespan`` is the ASGI lifespan application
for uvicorn and hypercorn.
"""

from __future__ import annotations

from typing import Any

from .handshakes import ConnectionRateLimitMiddleware
from .lifecycle import lifespan
from .notfound import RouteNotFoundMiddleware
from .origin import AllowedHostsOriginValidator
from .tokenauth import TokenAuthMiddleware
from .transport import TransportMiddleware
from .wiring import STACK_KEY

__all__ = ["StreamAppMiddlewareStack", "StreamAppStack", "lifespan"]


class StreamAppStack:
    """The whole stack around ``inner``; ``manage.py check`` looks for it in ASGI_APPLICATION."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.application = TransportMiddleware(
            AllowedHostsOriginValidator(
                ConnectionRateLimitMiddleware(TokenAuthMiddleware(RouteNotFoundMiddleware(inner)))
            )
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return await self.application({**scope, STACK_KEY: True}, receive, send)


def StreamAppMiddlewareStack(inner: Any) -> StreamAppStack:  # noqa: N802 - named like channels'
    """Origin check, handshake limits, session and token authentication, transport adapter."""
    return StreamAppStack(inner)
