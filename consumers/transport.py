"""What daphne's transport tells a socket that ASGI does not, and the shortest way to it.

daphne has no backpressure for WebSocket sends (django/daphne#170): ``send`` hands the frame to
autobahn, which writes it straight into the Twisted TCP transport, and that transport buffers in
memory without limit while the client does not read; nothing comes back through ASGI. daphne
gives each application ``functools.partial(handle_reply, protocol)`` as its ``send``;
``TransportMiddleware`` (outermost in asgi.py) finds the protocol's transport there and puts a
``TransportBacklog`` in the scope, with that ``send``.

Frames go out through daphne's own ``send``, past the inner middlewares: channels' session
middleware inspects the session on every message it passes, though it acts on HTTP responses
only, and that was a fifth of a busy server's CPU. Under any other server, or if daphne changes,
there is no backlog: sockets are never seen as congested and frames take the usual way.
"""

from __future__ import annotations

import fcntl
import functools
import struct
import termios
from collections.abc import Awaitable, Callable
from typing import Any

SCOPE_KEY = "streamapp.transport"
_TRANSPORT_BUFFER = ("dataBuffer", "offset", "_tempDataLen", "connected", "fileno")

Send = Callable[[dict[str, Any]], Awaitable[None]]


class TransportBacklog:
    """The outgoing bytes of one Twisted TCP transport that its peer has not taken yet."""

    def __init__(self, transport: Any, send: Send, protocol: Any = None) -> None:
        self._transport = transport
        self._protocol = protocol
        self.send = send  # the server's own ASGI send for this socket

    def open(self) -> bool:
        """Does the WebSocket still take frames? autobahn raises on a send once it is closing."""
        protocol = self._protocol
        return protocol is None or protocol.state == protocol.STATE_OPEN

    def held(self) -> int:
        """Bytes waiting in this process's memory (Twisted's write buffers)."""
        transport = self._transport
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

    def unsent(self) -> int:
        """``held()`` plus what the kernel has not had acknowledged by the peer (Linux)."""
        return self.held() + self._kernel_queue()

    @property
    def closed(self) -> bool:
        return not self._transport.connected

    def _kernel_queue(self) -> int:
        try:
            raw = fcntl.ioctl(self._transport.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return 0  # not a socket the kernel reports on, or already closed
        return struct.unpack("i", raw)[0]


def daphne_backlog(send: Any) -> TransportBacklog | None:
    """The backlog behind daphne's ``send`` callable, or None for any other server."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    transport = getattr(protocol, "transport", None)
    if not all(hasattr(transport, name) for name in _TRANSPORT_BUFFER):
        return None
    if not hasattr(protocol, "STATE_OPEN"):
        protocol = None
    return TransportBacklog(transport, send, protocol)


class TransportMiddleware:
    """ASGI middleware: ``scope["streamapp.transport"]`` for WebSocket connections daphne serves.

    It must wrap the whole WebSocket stack, where ``send`` is still daphne's own.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            backlog = daphne_backlog(send)
            if backlog is not None:
                scope = {**scope, SCOPE_KEY: backlog}
        return await self.application(scope, receive, send)
