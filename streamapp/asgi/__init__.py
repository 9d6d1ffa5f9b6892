"""The public wiring of a project's ``asgi.py`` (DESIGN §2 "Wiring into a project").

``StreamAppMiddlewareStack`` wraps the project's WebSocket router: foreign Origins refused,
handshake floods turned away before any session lookup, then the session user, replaced by a
bearer token's user when the client sends one, then the user's (or the anonymous address's)
handshake and open-socket limits; outermost, daphne's transport put in the scope (it needs
daphne's own ``send``).
"""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack

from .handshakes import ConnectionRateLimitMiddleware, SocketLimitMiddleware
from .origin import AllowedHostsOriginValidator
from .tokenauth import TokenAuthMiddleware
from .transport import TransportMiddleware

__all__ = ["StreamAppMiddlewareStack"]


def StreamAppMiddlewareStack(inner: Any) -> Any:  # noqa: N802 - named like channels' stacks
    """Origin check, handshake limits, session and token authentication, transport adapter."""
    return TransportMiddleware(
        AllowedHostsOriginValidator(
            ConnectionRateLimitMiddleware(
                AuthMiddlewareStack(TokenAuthMiddleware(SocketLimitMiddleware(inner)))
            )
        )
    )
