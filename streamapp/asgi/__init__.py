"""The public wiring of a project's ``asgi.py`` (DESIGN §2 "Wiring into a project").

``StreamAppMiddlewareStack`` wraps the project's WebSocket router: foreign Origins refused,
handshake floods turned away before any session lookup, then a bearer token's user when the
client sends one, else the session's (looked up only when the handshake carries the session
cookie); outermost, daphne's transport put in the scope (it needs daphne's own ``send``).
"""

from __future__ import annotations

from typing import Any

from .handshakes import ConnectionRateLimitMiddleware
from .origin import AllowedHostsOriginValidator
from .tokenauth import TokenAuthMiddleware
from .transport import TransportMiddleware

__all__ = ["StreamAppMiddlewareStack"]


def StreamAppMiddlewareStack(inner: Any) -> Any:  # noqa: N802 - named like channels' stacks
    """Origin check, handshake limits, session and token authentication, transport adapter."""
    return TransportMiddleware(
        AllowedHostsOriginValidator(
            ConnectionRateLimitMiddleware(TokenAuthMiddleware(inner))
        )
    )
