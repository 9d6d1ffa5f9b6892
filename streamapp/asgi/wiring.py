"""Does a WebSocket pass through StreamAppMiddlewareStack? Seen at check time when possible,
else logged once at the first connection that missed it.

Without the stack, tokens are not read (the client is anonymous: 4403), foreign Origins are not
refused, handshakes are not limited and slow clients are not bounded: all silently, which is
what this module exists to prevent.
"""

from __future__ import annotations

import logging
from typing import Any

from ..tokens import token_from_scope

logger = logging.getLogger("streamapp.asgi")

# Set in every WebSocket scope that passed through the stack.
STACK_KEY = "streamapp.stack"
# Attributes under which ASGI wrappers keep what they wrap (channels, Django, starlette).
WRAPPED = ("inner", "application", "app")
MAX_DEPTH = 30

NO_STACK = (
    "WebSocket connections do not pass through streamapp.asgi.StreamAppMiddlewareStack: bearer "
    "tokens are not read (their clients are anonymous), foreign Origins are not refused, "
    "handshakes are not limited and slow clients are not bounded"
)
NO_STACK_HINT = (
    'In asgi.py: "websocket": StreamAppMiddlewareStack(URLRouter(streamapp_routes + your_routes)) '
    "(README, \"Install into your project\")."
)

_warned = False


def websocket_branch(application: Any) -> Any:
    """What a ProtocolTypeRouter sends WebSockets to (the application itself otherwise)."""
    mapping = getattr(application, "application_mapping", None)
    if isinstance(mapping, dict):
        return mapping.get("websocket")
    return application


def passes_through_stack(application: Any) -> bool | None:
    """True or False when the wrappers can be followed to the stack or to a router; None when
    something opaque is in the way (then the first connection tells)."""
    from . import StreamAppStack  # the package imports this module

    current = websocket_branch(application)
    for _ in range(MAX_DEPTH):
        if current is None:
            return False
        if isinstance(current, StreamAppStack):
            return True
        if hasattr(current, "routes"):  # a URLRouter, reached with no stack around it
            return False
        current = next((getattr(current, name) for name in WRAPPED if hasattr(current, name)), None)
        if current is None:
            return None
    return None


def note_connection(scope: dict[str, Any]) -> str | None:
    """At a socket's connect: log once if the stack was missed; a token the stack would have
    read is then named in the ``forbidden`` message (returned), never silently ignored."""
    global _warned
    if scope.get(STACK_KEY):
        return None
    if not _warned:
        _warned = True
        logger.warning("%s. %s", NO_STACK, NO_STACK_HINT)
    if token_from_scope(scope) is not None:
        return "a token was sent, but this server's asgi.py does not read tokens " \
               "(wrap the WebSocket router in StreamAppMiddlewareStack)"
    return None
