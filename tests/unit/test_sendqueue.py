"""SendQueue: a socket's frames in order to a server whose send may wait (uvicorn, hypercorn)."""

from __future__ import annotations

import asyncio

import pytest

from streamapp.asgi import sendqueue
from streamapp.asgi.sendqueue import SendQueue


class Server:
    """An ASGI ``send`` that records each message; while ``blocked`` it waits (backpressure)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.open = asyncio.Event()
        self.open.set()
        self.fails: Exception | None = None

    async def send(self, message: dict) -> None:
        await self.open.wait()
        if self.fails is not None:
            raise self.fails
        self.sent.append(message)


def frame(text: str) -> dict:
    return {"type": "websocket.send", "text": text}


async def until(condition, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


async def test_a_send_the_server_takes_at_once_is_handed_over_before_send_returns():
    server = Server()
    queue = SendQueue(server.send)

    await queue.send(frame("a"))

    assert server.sent == [frame("a")]  # no task, no turn of the loop
    assert queue._writer is None and queue.held() == 0


async def test_frames_wait_in_order_while_the_server_waits_and_count_as_the_backlog():
    server = Server()
    server.open.clear()
    queue = SendQueue(server.send)

    for text in ("ab", "cde", "f"):
        await queue.send(frame(text))

    assert server.sent == [] and queue.held() == queue.unsent() == 6
    server.open.set()
    await until(lambda: queue.held() == 0)
    assert [m["text"] for m in server.sent] == ["ab", "cde", "f"]
    assert queue._writer is None
    await queue.send(frame("g"))
    assert server.sent[-1] == frame("g")


async def test_a_close_goes_after_what_is_queued(monkeypatch):
    server = Server()
    server.open.clear()
    queue = SendQueue(server.send)
    await queue.send(frame("last words"))

    closing = asyncio.create_task(queue.send({"type": "websocket.close", "code": 4012}))
    await asyncio.sleep(0)
    assert queue.closed and not closing.done()
    await queue.send(frame("after the close"))  # nothing may follow a close
    server.open.set()
    await asyncio.wait_for(closing, timeout=5)

    assert [m.get("text", m.get("code")) for m in server.sent] == ["last words", 4012]


async def test_a_close_stuck_behind_a_client_that_reads_nothing_goes_alone(monkeypatch):
    monkeypatch.setattr(sendqueue, "CLOSE_FLUSH_SECONDS", 0.05)
    sent = []
    stuck = asyncio.Event()

    async def send(message):
        if message["type"] == "websocket.send":
            await stuck.wait()  # never: the client reads nothing
        sent.append(message)

    queue = SendQueue(send)
    await queue.send(frame("lost"))
    await asyncio.wait_for(queue.send({"type": "websocket.close", "code": 4408}), timeout=5)

    assert sent == [{"type": "websocket.close", "code": 4408}]
    assert queue.held() == 0 and queue._writer is None


async def test_a_failed_send_drops_the_rest_and_closes_the_queue():
    server = Server()
    server.open.clear()
    queue = SendQueue(server.send)
    await queue.send(frame("a"))
    await queue.send(frame("b"))

    server.fails = ConnectionResetError("the client left")
    server.open.set()
    await until(lambda: queue._writer is None)

    assert server.sent == [] and queue.closed and not queue.open() and queue.held() == 0
    await queue.send(frame("c"))
    assert server.sent == []


@pytest.mark.parametrize("first_step", [False, True])
async def test_stop_drops_the_queue_and_ends_a_waiting_writer(first_step):
    server = Server()
    server.open.clear()
    queue = SendQueue(server.send)
    await queue.send(frame("a"))
    writer = queue._writer
    if first_step:
        await asyncio.sleep(0)  # the writer task has run once and waits on the server

    await queue.stop()

    assert writer.done() and queue.held() == 0 and queue._writer is None
    server.open.set()
    await asyncio.sleep(0)
    assert server.sent == []


async def test_a_writer_started_while_a_stop_ends_the_old_one_is_kept():
    server = Server()
    server.open.clear()
    queue = SendQueue(server.send)
    await queue.send(frame("a"))
    stopping = asyncio.create_task(queue.stop())
    await asyncio.sleep(0)  # the stop has cancelled the old writer and waits for it to end

    await queue.send(frame("b"))  # news arriving meanwhile: a writer of its own
    await stopping

    assert queue._writer is not None and queue.held() == 1
    await queue.send(frame("c"))
    server.open.set()
    await until(lambda: queue.held() == 0)
    assert [m["text"] for m in server.sent] == ["b", "c"]
