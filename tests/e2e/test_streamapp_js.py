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
  window.seen = { events: [], states: [], errors: [], connection: [], delays: [], details: [] };
  const onConnectionState = (detail) => {
    seen.connection.push(detail.state);
    seen.details.push(detail);
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


@pytest.mark.parametrize("code", [1012, 4012])
async def test_a_restart_close_resubscribes_at_once_from_the_last_seq(page, code):
    async def first(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.send(state("running", 0), *map(event, [1, 2, 3, 2, 3]))
        await conversation.ws.close(code)

    async def second(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.send(state("running", 3), *map(event, [3, 4, 5]), state("completed", 5))
        await conversation.listen()

    server = ScriptedServer(first, second)
    seen = await server.watch(page, "seen.states.at(-1) === 'completed'", since=0, minDelay=4000,
                              maxDelay=16000)

    assert [frames[0] for frames in server.received] == [subscribe(0), subscribe(3)]
    assert seen["events"] == [1, 2, 3, 4, 5]
    assert seen["states"] == ["running", "running", "completed"]
    assert seen["connection"] == ["connecting", "open", "reconnecting", "connecting", "open"]
    reconnecting = seen["details"][2]
    assert reconnecting["delay"] == 0  # no backoff: another server is ready now
    assert reconnecting["code"] == code and reconnecting["reason"] == "restart"


async def test_restart_closes_in_a_row_back_off(page):
    """A server that keeps answering a reconnect with 1012 is not hammered."""

    async def restarting(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.ws.close(1012)

    async def serving(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.send(state("completed", 0))
        await conversation.listen()

    server = ScriptedServer(restarting, restarting, serving)
    seen = await server.watch(page, "seen.states.at(-1) === 'completed'", since=0, minDelay=100)

    assert seen["delays"][0] == 0
    assert 50 <= seen["delays"][1] <= 100  # the second within a few seconds waits its turn
    assert [detail["reason"] for detail in seen["details"] if detail["state"] == "reconnecting"
            ] == ["restart", "restart"]


async def test_rate_limited_waits_longer_and_is_not_counted_as_a_drop(page):
    async def rate_limited(conversation: Conversation) -> None:
        await conversation.send({"type": "error", "code": "rate_limited",
                                 "message": "too many connections"})
        await conversation.ws.close(4429)

    async def dropped(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.send(state("running", 0))
        await conversation.ws.close(1011)

    async def serving(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.send(state("completed", 0))
        await conversation.listen()

    server = ScriptedServer(rate_limited, rate_limited, dropped, serving)
    seen = await server.watch(page, "seen.states.at(-1) === 'completed'", since=0, minDelay=40,
                              rateLimitDelay=400, maxRateLimitDelay=1600)

    waits = [d for d in seen["details"] if d["state"] == "reconnecting"]
    assert [(d["code"], d["reason"]) for d in waits] == [
        (4429, "rate_limited"), (4429, "rate_limited"), (1011, "lost")]
    assert 200 <= waits[0]["delay"] <= 400 and 400 <= waits[1]["delay"] <= 800  # doubling
    assert [d["attempt"] for d in waits] == [0, 0, 1]  # a 4429 is not a failed attempt
    assert 20 <= waits[2]["delay"] <= 40  # the ordinary backoff starts from its first step
    assert seen["errors"] == []  # the rate_limited frames were about no subscribed task


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
                              pingInterval=150, pongTimeout=150, minDelay=40)

    assert server.received[0] == [subscribe(0), {"action": "ping"}]
    assert server.received[1][0] == subscribe(0)
    assert seen["connection"] == ["connecting", "open", "reconnecting", "connecting", "open"]
    assert seen["details"][2]["reason"] == "unresponsive"


async def test_an_answered_ping_keeps_the_socket(page):
    async def answering(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.send(state("running", 0), event(1))
        assert await conversation.recv() == {"action": "ping"}  # quiet: the client asks
        await conversation.send({"type": "pong"})
        assert await conversation.recv() == {"action": "ping"}  # and asks again, later
        await conversation.send(event(2), state("completed", 2))
        await conversation.listen()

    server = ScriptedServer(answering)
    seen = await server.watch(page, "seen.states.at(-1) === 'completed'", since=0,
                              pingInterval=200, pongTimeout=5000)

    assert server.received[0] == [subscribe(0), {"action": "ping"}, {"action": "ping"}]
    assert seen["connection"] == ["connecting", "open"]
    assert seen["events"] == [1, 2]


async def test_persist_session_survives_a_reload(page):
    async def streaming(conversation: Conversation) -> None:
        await conversation.recv()
        await conversation.send(state("running", 0), *map(event, [1, 2, 3]))
        await conversation.listen()

    server = ScriptedServer(streaming, streaming)
    async with server.serving() as port:
        url = f"ws://127.0.0.1:{port}/ws/tasks/"
        await load_client(page, port, since=0, persist="session")
        await page.wait_for_function("seen.events.length === 3")
        await page.reload()
        persisted = await page.evaluate(
            """async (url) => {
              const { StreamClient } = await import("/streamapp.js");
              const client = new StreamClient(url, { persist: "session" });
              const persisted = client.persisted;
              client.close();
              return persisted;
            }""", url)
    assert persisted == [{"key": KEY, "lastSeq": 3}]
