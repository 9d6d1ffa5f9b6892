"""The consumer's side of flow control, with a transport backlog the test controls.

test_slow_clients.py shows it on daphne's real transport; here each rule on its own.
"""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator

from streamapp.asgi.transport import SCOPE_KEY
from tests.support.helpers import finished_burst, receive_until_closed, task_path

pytestmark = pytest.mark.django_db(transaction=True)


class HeldBacklog:
    """A transport that holds ``held`` bytes and has ``unsent`` bytes not yet acknowledged."""

    def __init__(self, send, held=0, unsent=0):
        self.send = send
        self.held_bytes = held
        self.unsent_bytes = unsent
        self.closed = False

    def held(self):
        return self.held_bytes

    def unsent(self):
        return self.unsent_bytes

    def open(self):
        return not self.closed


def connect_through(application, path, **backlog):
    """A communicator whose socket has a HeldBacklog; the list gets it once the app runs."""
    made = []

    async def with_backlog(scope, receive, send):
        made.append(HeldBacklog(send, **backlog))
        await application({**scope, SCOPE_KEY: made[0]}, receive, send)

    return WebsocketCommunicator(with_backlog, path), made



async def test_the_final_close_waits_until_the_client_has_everything(application):
    task = await finished_burst(3)
    ws, backlog = connect_through(application, task_path(task) + "?since=0", unsent=1000)
    assert (await ws.connect(timeout=5))[0]
    frames = [await ws.receive_json_from(timeout=5) for _ in range(5)]
    assert [f.get("seq") for f in frames] == [3, 1, 2, 3, 3]  # state, events, final state
    assert await ws.receive_nothing(timeout=0.3)  # no close while data waits for the client
    backlog[0].unsent_bytes = 0
    assert (await ws.receive_output(timeout=5)) == {"type": "websocket.close", "code": 1000}
    await ws.disconnect()


async def test_a_congested_socket_pauses_then_catches_up_from_the_log(application, settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "SEND_BUFFER_BYTES": 100}
    task = await finished_burst(50)
    ws, backlog = connect_through(application, task_path(task) + "?since=0", held=1000)
    assert (await ws.connect(timeout=5))[0]
    assert (await ws.receive_json_from(timeout=5))["type"] == "state"  # then no room
    assert await ws.receive_nothing(timeout=0.3)
    backlog[0].held_bytes = 0  # the client read: the socket's upkeep resumes it
    frames, code = await receive_until_closed(ws, timeout=10)
    assert [f["seq"] for f in frames if f["type"] == "event"] == list(range(1, 51))
    assert frames[-1]["status"] == "completed" and code == 1000


async def test_a_socket_congested_too_long_is_closed_4408(application, settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "SEND_BUFFER_BYTES": 100,
                          "SLOW_CLIENT_SECONDS": 0.3}
    task = await finished_burst(5)
    ws, _ = connect_through(application, task_path(task) + "?since=0", held=1000)
    assert (await ws.connect(timeout=5))[0]
    frames, code = await receive_until_closed(ws, timeout=5)
    assert [f["type"] for f in frames] == ["state"] and code == 4408
