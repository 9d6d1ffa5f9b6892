"""daphne's transport, as a socket's send backlog: what daphne knows and ASGI does not say.

daphne has no backpressure for WebSocket sends (django/daphne#170): ``send`` hands the frame to
autobahn, which writes it straight into the Twisted TCP transport, and that transport buffers in
memory without limit while the client does not read. daphne gives each application
``functools.partial(Server.handle_reply, protocol)`` as its ``send``; from the protocol we reach
the transport's write buffers (``dataBuffer``, ``offset``, ``_tempDataLen``: Twisted private
names), the kernel's queue (``TIOCOUTQ``) and autobahn's ``state``. ``probe()`` checks that
those names still exist in the installed daphne, Twisted and autobahn.
"""

from __future__ import annotations

import fcntl
import functools
import struct
import termios
from collections.abc import Awaitable, Callable
from typing import Any

from ..protocol import server_close_code

_TRANSPORT_NAMES = ("dataBuffer", "offset", "_tempDataLen", "connected", "fileno")

Send = Callable[[dict[str, Any]], Awaitable[None]]


class TransportBacklog:
    """The outgoing bytes of one Twisted TCP transport that its peer has not taken yet."""

    __slots__ = ("_transport", "_protocol", "send")

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

    def close_now(self, code: int) -> bool:
        """Write the close frame now, with no task switch: daphne's shutdown cancels its
        applications right after. daphne refuses 1012, so 4012 (``server_close_code``)."""
        protocol = self._protocol
        if protocol is None or not self.open():
            return False
        protocol.serverClose(server_close_code(code))
        return True

    def _kernel_queue(self) -> int:
        try:
            raw = fcntl.ioctl(self._transport.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return 0  # not a socket the kernel reports on, or already closed
        return struct.unpack("i", raw)[0]


def backlog_of(send: Any) -> TransportBacklog | None:
    """The backlog behind daphne's ``send`` callable, or None for any other server."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    transport = getattr(protocol, "transport", None)
    if not all(hasattr(transport, name) for name in _TRANSPORT_NAMES):
        return None
    if not hasattr(protocol, "STATE_OPEN"):
        protocol = None
    return TransportBacklog(transport, send, protocol)


def probe() -> list[str]:
    """What the installed daphne, Twisted and autobahn lack of what ``backlog_of`` reads.

    Empty also when daphne is not installed: then nothing is missing, the server is another one.
    """
    try:
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol
        from twisted.internet.abstract import FileDescriptor
    except ImportError:
        return []
    missing = []
    if "partial" not in Server.create_application.__code__.co_names:
        missing.append("daphne.server.Server.create_application no longer sends through partial()")
    if not callable(getattr(Server, "handle_reply", None)):
        missing.append("daphne.server.Server.handle_reply")
    for name in ("dataBuffer", "offset"):
        if not hasattr(FileDescriptor, name):
            missing.append(f"twisted FileDescriptor.{name}")
    if "_tempDataLen" not in FileDescriptor.__init__.__code__.co_names:
        missing.append("twisted FileDescriptor._tempDataLen")
    if not hasattr(WebSocketProtocol, "STATE_OPEN"):
        missing.append("autobahn WebSocketProtocol.STATE_OPEN")
    if not callable(getattr(WebSocketProtocol, "serverClose", None)):
        missing.append("daphne WebSocketProtocol.serverClose")
    return missing
