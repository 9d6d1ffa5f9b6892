"""The public wiring of a project's ``asgi.py`` (DESIGN §2 "Wiring into a project").

``StreamAppMiddlewareStack`` wraps the project's WebSocket router: foreign Origins refused,
handshake floods turned away before any session lookup, then a bearer token's user when the
client sends one, else the session's (looked up only when the handshake carries the session
cookie), then the user's (or the anonymous address's) handshake and open-socket limits; a path
no route matches refused with 4404; the socket's send backlog put in the scope (it needs the
server's own ``send``). ``lifespan`` is the ASGI lifespan application for uvicorn and hypercorn.
"""

from __future__ import annotations

from typing import Any

from .lifecycle import lifespan
from .stack import StreamAppStack

__all__ = ["StreamAppMiddlewareStack", "StreamAppStack", "lifespan"]


def StreamAppMiddlewareStack(inner: Any) -> StreamAppStack:  # noqa: N802 - named like channels'
    """Origin check, handshake limits, session and token authentication, transport adapter."""
    return StreamAppStack(inner)
