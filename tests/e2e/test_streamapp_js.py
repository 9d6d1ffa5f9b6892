"""streamapp.js in a real Chromium, against a scripted WebSocket server.

The server plays one script per connection and records every frame the client sends, so the
tests can make it do what daphne never does (repeat events, vanish, go silent) and check exactly
what the client resubscribes with.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.support.processes import ROOT

pytestmark = pytest.mark.slow

STREAMAPP_JS = ROOT / "streamapp" / "static" / "streamapp" / "streamapp.js"
KEY = "demo.exampletask.1"

# Loads the module into the page; `window.seen` records everything the client reports.
LOAD_CLIENT = """async ([url, key, since, options]) => {
  const { StreamClient } = await import("/streamapp.js");
  window.seen = { events: [], states: [], errors: [], connection: [], delays: [] };
  const onConnectionState = (detail) => {
    seen.connection.push(detail.state);
    if (detail.delay !== null) seen.delays.push(detail.delay);
  };
  window.client = new StreamClient(url, { ...options, onConnectionState });
  client.subscribe(key, {
    since: since ?? undefined,
    onEvent: (frame) => seen.events.push(frame.seq),
    onState: (frame) => seen.states.push(frame.status),
    onError: (frame) => seen.errors.push(frame.code),
  });
}"""


def state(status: str, seq: int) -> dict[str, Any]:
    return {"type": "state", "task": KEY, "status": status, "seq": seq, "final_value": None,
            "error": None}


def event(seq: int) -> dict[str, Any]:
    return {"type": "event", "task": KEY, "seq": seq, "event": "progress", "data": {"step": seq},
            "ts": "2026-01-01T00:00:00+00:00"}


class Conversation:
    """One client connection as a script sees it; every received frame is recorded."""

    def __init__(self, ws: ServerConnection, received: list[dict[str, Any]]) -> None:
        self.ws = ws
        self.received = received

    async def recv(self) -> dict[str, Any]:
        frame = json.loads(await self.ws.recv())
        self.received.append(frame)
        return frame

    async def send(self, *frames: dict[str, Any]) -> None:
        for frame in frames:
            await self.ws.send(json.dumps(frame))

    async def listen(self) -> None:
        """Record whatever else comes until the connection ends."""
        try:
            while True:
                await self.recv()
        except ConnectionClosed:
            pass


Script = Callable[[Conversation], Awaitable[None]]


class ScriptedServer:
    """Connection n runs scripts[n]; ``received[n]`` is what the client sent on it."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = scripts
        self.received: list[list[dict[str, Any]]] = []

    async def handle(self, ws: ServerConnection) -> None:
        frames: list[dict[str, Any]] = []
        self.received.append(frames)
        await self.scripts[len(self.received) - 1](Conversation(ws, frames))

    @asynccontextmanager
    async def serving(self, port: int = 0) -> AsyncIterator[int]:
        """Listen on ``port`` (0: any free one) while in the block; yields the port."""
        async with serve(self.handle, "127.0.0.1", port, process_request=serve_page) as server:
            yield server.sockets[0].getsockname()[1]

    async def watch(self, page, condition: str, since: int | None, **options: Any) -> dict:
        """Start a client in ``page``, wait for ``condition`` on ``seen``; returns ``seen``."""
        async with self.serving() as port:
            await load_client(page, port, since, **options)
            await page.wait_for_function(condition)
            return await page.evaluate("seen")


def serve_page(connection: ServerConnection, request: Request) -> Response | None:
    """Plain HTTP GETs get the test page and streamapp.js, from loopback like the socket.

    (Chromium refuses loopback sockets to a page it did not load from a loopback address.)
    """
    if request.path == "/streamapp.js":
        body, content_type = STREAMAPP_JS.read_bytes(), "text/javascript"
    elif request.path == "/":
        body, content_type = b"<!doctype html><title>streamapp.js</title>", "text/html"
    elif request.path.startswith("/ws/"):
        return None  # the WebSocket handshake goes on
    else:
        return connection.respond(404, "not here")
    # Connection: close, or the browser keeps the connection alive and the server's shutdown
    # waits out its close timeout for it.
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)),
                       "Connection": "close"})
    return Response(200, "OK", headers, body)


async def load_client(page, port: int, since: int | None, **options: Any) -> None:
    """Open the scripted server's page and start a client in it."""
    await page.goto(f"http://127.0.0.1:{port}/")
    await page.evaluate(LOAD_CLIENT, [f"ws://127.0.0.1:{port}/ws/tasks/", KEY, since, options])


def subscribe(since: int) -> dict[str, Any]:
    return {"action": "subscribe", "task": KEY, "since": since}


async def test_resubscribes_from_the_last_seq_and_drops_repeated_events(page):
    async def first(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.send(state("running", 0), *map(event, [1, 2, 3, 2, 3]))
        await conversation.ws.close(1012)

    async def second(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.send(state("running", 3), *map(event, [3, 4, 5]), state("completed", 5))
        await conversation.listen()

    server = ScriptedServer(first, second)
    seen = await server.watch(page, "seen.states.at(-1) === 'completed'", since=0, minDelay=40,
                              maxDelay=160)

    assert [frames[0] for frames in server.received] == [subscribe(0), subscribe(3)]
    assert seen["events"] == [1, 2, 3, 4, 5]
    assert seen["states"] == ["running", "running", "completed"]
    assert seen["connection"] == ["connecting", "open", "reconnecting", "connecting", "open"]
    assert 20 <= seen["delays"][0] <= 40


async def test_backs_off_while_the_server_is_away_then_resumes_and_sends_the_queued_cancel(page):
    async def first(conversation: Conversation) -> None:
        await conversation.recv()
        # Subscribed without since: the state frame, then only the latest event.
        await conversation.send(state("running", 7), event(7))
        await conversation.listen()

    async def second(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.recv()
        await conversation.send(state("cancelled", 7))
        await conversation.listen()

    server = ScriptedServer(first, second)
    async with server.serving() as port:
        await load_client(page, port, since=None, minDelay=40, maxDelay=160)
        await page.wait_for_function("seen.events.length === 1")
    # The server is gone: every attempt is refused, and each waits longer than the last.
    await page.wait_for_function("seen.delays.length >= 4")
    await page.evaluate("key => client.cancel(key)", KEY)
    async with server.serving(port):
        await page.wait_for_function("seen.states.at(-1) === 'cancelled'")
        seen = await page.evaluate("seen")

    assert server.received[0][0] == {"action": "subscribe", "task": KEY}
    assert server.received[1][:2] == [subscribe(7), {"action": "cancel", "task": KEY}]
    assert seen["events"] == [7]
    for delay, ceiling in zip(seen["delays"], [40, 80, 160, 160], strict=False):
        assert ceiling / 2 <= delay <= ceiling
    assert seen["connection"][-1] == "open"


async def test_a_silent_socket_is_given_up_and_replaced(page):
    async def silent(conversation: Conversation) -> None:
        await conversation.listen()  # answers nothing, not even pings

    async def second(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.send(state("completed", 0))
        await conversation.listen()

    server = ScriptedServer(silent, second)
    seen = await server.watch(page, "seen.states.at(-1) === 'completed'", since=0,
                              pingInterval=150, minDelay=40)

    assert server.received[0] == [subscribe(0), {"action": "ping"}]
    assert server.received[1][0] == subscribe(0)
    assert seen["connection"] == ["connecting", "open", "reconnecting", "connecting", "open"]
