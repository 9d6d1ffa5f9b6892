"""consumers/transport.py against the shapes daphne hands the application (no sockets here:
the real daphne is in test_slow_clients.py and test_e2e_daphne.py)."""

from __future__ import annotations

import functools

from autobahn.exception import Disconnected
from autobahn.websocket.protocol import WebSocketProtocol

from consumers.outlet import SocketOutlet
from streamapp.adapters.daphne import backlog_of
from streamapp.asgi.transport import SCOPE_KEY


class TwistedTransport:
    def __init__(self) -> None:
        self.dataBuffer, self.offset, self._tempDataLen = b"x" * 10, 4, 3
        self.connected = True

    def fileno(self) -> int:
        return -1


class Protocol:
    """daphne's WebSocket protocol as far as transport.py looks: autobahn's states."""

    STATE_OPEN = WebSocketProtocol.STATE_OPEN

    def __init__(self) -> None:
        self.transport = TwistedTransport()
        self.state = WebSocketProtocol.STATE_OPEN
        self.sent: list[str] = []


async def handle_reply(protocol: Protocol, message: dict) -> None:
    """What daphne's Server.handle_reply ends in: autobahn refuses a send once closing."""
    if protocol.state != WebSocketProtocol.STATE_OPEN:
        raise Disconnected("Attempt to send on a closed protocol")
    protocol.sent.append(message["text"])


async def test_frames_to_a_client_that_has_just_left_are_dropped_without_an_error():
    """A client that closes while its replay is being sent: the rest is skipped, no traceback."""
    protocol = Protocol()
    backlog = backlog_of(functools.partial(handle_reply, protocol))
    assert backlog is not None and backlog.held() == 9 and backlog.open()
    send = SocketOutlet.for_socket({SCOPE_KEY: backlog}, None, 1024).send

    await send("one")
    protocol.state = WebSocketProtocol.STATE_CLOSING
    assert not backlog.open()
    await send("two")
    assert protocol.sent == ["one"]


def test_any_other_server_has_no_backlog():
    assert backlog_of(handle_reply) is None
    assert backlog_of(functools.partial(handle_reply, object())) is None
