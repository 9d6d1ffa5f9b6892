"""Security through a real daphne and a real WebSocket client: tokens in headers and queries,
frame-size limits at both layers (ours, then daphne's), and handshakes counted per address.

Daphne (autobahn) lets an application close only with 1000 or 3000-4999, and drops the TCP
connection of a message over its own --websocket-max-message-size (1 MiB by default). So our
limit (64 KiB) sits below daphne's: the client gets the too_large frame, then 4009 (1009 is
refused by autobahn); beyond daphne's limit the connection is dropped (1006) unread.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
import uuid

import pytest
import websockets

from tests.support.processes import Daphne, ProcessDatabase, manage

pytestmark = pytest.mark.slow

FRAME_LIMIT = 64 * 1024  # STREAMAPP["MAX_CLIENT_FRAME_BYTES"] default
DAPHNE_LIMIT = 1024 * 1024  # daphne's --websocket-max-message-size default


@pytest.fixture
def closed_site(tmp_path):
    """A migrated database with a user and a pending task, and settings with access checks on."""
    tag = os.environ.get("STREAMAPP_TEST_DB", "test_streamapp")
    database = ProcessDatabase(tmp_path, f"{tag}_sec").create()
    prefix = f"{os.environ.get('STREAMAPP_LAYER_PREFIX', 'sa')}_{uuid.uuid4().hex[:8]}"
    env = {**database.env, "DJANGO_SETTINGS_MODULE": "tests.settings_closed",
           "STREAMAPP_LAYER_PREFIX": prefix}  # fresh handshake counts in a shared Redis
    manage(env, "shell", "-c",
           "from django.contrib.auth.models import User; User.objects.create_user('alice')")
    token = manage(env, "minttoken", "alice").strip()
    key = manage(env, "starttask", "demo.ExampleTask", "message=sec", "steps=3", "delay=0",
                 "--pending").strip().splitlines()[-1]
    yield env, token, key
    database.drop()


async def frames_until_closed(ws) -> list[dict]:
    """Every frame up to the close, whatever its code (``async for`` raises on non-1000)."""
    frames = []
    try:
        while True:
            frames.append(json.loads(await ws.recv()))
    except websockets.ConnectionClosed:
        return frames


async def test_tokens_frame_limits_and_handshake_counts_over_daphne(closed_site):
    env, token, key = closed_site
    with Daphne(env) as server:
        task_url = f"{server.ws_url}/ws/tasks/{key.replace('.', '/')}/"
        async with websockets.connect(task_url) as ws:
            assert [f["code"] for f in await frames_until_closed(ws)] == ["forbidden"]
        assert ws.close_code == 4403

        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(task_url, additional_headers=headers) as ws:
            frames = await frames_until_closed(ws)
        assert frames[-1]["status"] == "completed" and ws.close_code == 1000
        async with websockets.connect(f"{task_url}?since=0&token={token}") as ws:
            replayed = await frames_until_closed(ws)
        assert [f["seq"] for f in replayed if f["type"] == "event"] == [1, 2, 3, 4, 5]

        state_url = f"{server.url}/tasks/{key.replace('.', '/')}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(state_url, timeout=5)
        assert refused.value.code == 403
        with urllib.request.urlopen(urllib.request.Request(state_url, headers=headers)) as reply:
            assert json.loads(reply.read())["status"] == "completed"

        async with websockets.connect(f"{server.ws_url}/ws/tasks/") as ws:
            await ws.send('{"action": "subscribe", "task": "x\\ud800"}')  # never echoed raw
            assert json.loads(await ws.recv())["code"] == "bad_request"
            await ws.send("x" * (FRAME_LIMIT + 1))
            assert await frames_until_closed(ws) == [{
                "type": "error", "code": "too_large",
                "message": f"frames are limited to {FRAME_LIMIT} bytes",
            }]
        assert ws.close_code == 4009
        async with websockets.connect(f"{server.ws_url}/ws/tasks/") as ws:
            # daphne resets the connection once it sees the frame's size: the client may
            # still be writing it then
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send("x" * (DAPHNE_LIMIT + 1))
            assert await frames_until_closed(ws) == []
        assert ws.close_code == 1006  # daphne drops it: the reason for our limit to sit below

        # Handshakes from 127.0.0.1: 7 so far, 12 allowed per window (the run may span two).
        for attempt in range(30):  # noqa: B007 - read after the loop
            async with websockets.connect(f"{server.ws_url}/ws/tasks/") as ws:
                with contextlib.suppress(websockets.ConnectionClosed):  # refused: closed at once
                    await ws.send('{"action": "ping"}')
                reply = json.loads(await ws.recv())  # a pong, or why it was refused
                if reply != {"type": "pong"}:
                    assert await frames_until_closed(ws) == []
                    break
        assert reply["code"] == "rate_limited" and ws.close_code == 4429
        assert 5 <= attempt < 25
        output = server.stop()
    assert "Traceback" not in output and "ERROR" not in output
