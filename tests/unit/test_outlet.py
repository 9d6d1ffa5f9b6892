"""One socket's way out (consumers/outlet.py) over daphne's TransportBacklog on a fake transport.

The transport is the few attributes of Twisted's the backlog reads; the test fills and empties
its buffer to make the socket congested or not (scripts/mutation runs these).
"""

from __future__ import annotations

import asyncio

import pytest

from consumers.outlet import SocketOutlet
from streamapp.adapters.daphne import TransportBacklog
from streamapp.asgi.transport import SCOPE_KEY

LIMIT = 100


class Transport:
    """What TransportBacklog reads of a Twisted TCP transport."""

    def __init__(self) -> None:
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0
        self.connected = True

    def fileno(self) -> int:
        raise ValueError("not a real socket")  # the kernel queue then counts as empty

    def hold(self, size: int) -> None:
        self.dataBuffer = b"x" * size

    def empty(self) -> None:
        self.dataBuffer = b""


class SlowTransport(Transport):
    """Its buffer empties only after ``reads`` looks at it: the waiter must poll."""

    def __init__(self, reads: int) -> None:
        super().__init__()
        self.reads = reads

    @property
    def dataBuffer(self):  # noqa: N802 - Twisted's name
        self.reads -= 1
        return b"x" * 10 if self.reads >= 0 else b""

    @dataBuffer.setter
    def dataBuffer(self, value):  # noqa: N802
        pass


class Protocol:
    STATE_OPEN, STATE_CLOSING = 3, 2

    def __init__(self) -> None:
        self.state = self.STATE_OPEN
        self.closed_with: list[int] = []

    def serverClose(self, code: int) -> None:
        self.closed_with.append(code)


@pytest.fixture
def transport():
    return Transport()


@pytest.fixture
def protocol():
    return Protocol()


@pytest.fixture
def daphne_sent():
    return []


@pytest.fixture
def outlet(transport, protocol, daphne_sent):
    async def send(message):
        daphne_sent.append(message)

    backlog = TransportBacklog(transport, send, protocol)
    return SocketOutlet.for_socket({SCOPE_KEY: backlog}, None, LIMIT)


async def test_frames_go_straight_to_daphne_while_the_socket_is_open(outlet, protocol,
                                                                     daphne_sent):
    await outlet.send("one")
    protocol.state = protocol.STATE_CLOSING  # the client has just left
    await outlet.send("two")
    assert daphne_sent == [{"type": "websocket.send", "text": "one"}]


async def test_without_daphne_the_consumer_sends_and_nothing_is_ever_congested():
    sent = []

    class Consumer:
        async def send_text_fallback(self, text):
            sent.append(text)

    outlet = SocketOutlet.for_socket({}, Consumer(), LIMIT)
    await outlet.send("frame")
    assert sent == ["frame"]
    assert not outlet.congested() and await outlet.has_room() and outlet.congested_for() == 0.0
    assert not outlet.close_at_once(1012) and await outlet.drained(timeout=0)


def test_congested_only_over_the_limit(outlet, transport):
    transport.hold(LIMIT)
    assert not outlet.congested()
    transport.hold(LIMIT + 1)
    assert outlet.congested()
    transport.offset = 1  # Twisted has written one byte of it
    assert not outlet.congested()
    transport._tempDataLen = 5
    assert outlet.congested()


def test_congested_for_counts_from_the_start_of_an_unbroken_congestion(outlet, transport):
    assert outlet.congested_for() == 0.0
    transport.hold(LIMIT + 1)
    first = outlet.congested_for()
    assert 0.0 <= first < 1.0
    assert outlet.congested_for() >= first  # the same spell: counted from its start
    transport.empty()
    assert outlet.congested_for() == 0.0
    transport.hold(LIMIT + 1)
    assert outlet.congested_for() < 1.0


async def test_has_room_lets_the_server_write_first(outlet, transport):
    transport.hold(LIMIT + 1)
    asyncio.get_running_loop().call_soon(transport.empty)  # written while has_room waits
    assert await outlet.has_room()
    transport.hold(LIMIT + 1)
    assert not await outlet.has_room()


async def test_drained_waits_until_the_client_has_everything(outlet, transport):
    assert await outlet.drained(timeout=0)
    transport.hold(10)
    assert not await outlet.drained(timeout=0)
    asyncio.get_running_loop().call_soon(transport.empty)
    assert await asyncio.wait_for(outlet.drained(timeout=5), timeout=5)


async def test_drained_polls_until_the_last_byte_is_taken(protocol):
    async def send(message):
        pass

    outlet = SocketOutlet(send, TransportBacklog(SlowTransport(reads=2), send, protocol), LIMIT)
    assert await asyncio.wait_for(outlet.drained(timeout=5), timeout=5)


async def test_one_byte_unsent_is_not_drained(outlet, transport):
    transport.hold(1)
    assert not await outlet.drained(timeout=0)


def test_a_socket_congested_from_the_start_counts_from_then(outlet, transport):
    transport.hold(LIMIT + 1)
    assert 0.0 <= outlet.congested_for() < 1.0


async def test_drained_is_true_once_the_socket_is_gone(outlet, transport):
    transport.hold(10)
    transport.connected = False
    assert await outlet.drained(timeout=0)


def test_close_at_once_writes_the_close_frame_with_the_code_daphne_allows(outlet, protocol):
    assert outlet.close_at_once(1012)
    assert protocol.closed_with == [4012]
    protocol.state = protocol.STATE_CLOSING
    assert not outlet.close_at_once(1000) and protocol.closed_with == [4012]


def test_sent_once_nothing_is_held_in_this_process(outlet, transport):
    transport.hold(1)
    assert not outlet.sent()  # one byte still in Twisted's buffer
    transport.empty()
    assert outlet.sent()
    transport.hold(LIMIT * 10)
    transport.connected = False
    assert outlet.sent()  # gone: nothing more will leave
    assert SocketOutlet(None, None, LIMIT).sent()  # without daphne: the server's own business
