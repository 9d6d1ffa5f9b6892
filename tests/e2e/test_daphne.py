"""End to end: daphne as a subprocess, a real WebSocket client, the embedded default or services."""

from __future__ import annotations

import json

import pytest
import websockets

from tests.support.processes import Daphne, manage

pytestmark = pytest.mark.slow


async def test_a_websocket_client_watches_an_example_task_from_start_to_final_state(process_db):
    key = manage(
        process_db.env, "starttask", "demo.ExampleTask", "message=e2e", "steps=5", "delay=0.01",
        "--pending",
    ).strip().splitlines()[-1]
    assert key.startswith("demo.exampletask.")
    with Daphne(process_db.env) as server:
        url = f"{server.ws_url}/ws/tasks/{key.replace('.', '/')}/"
        frames = []
        async with websockets.connect(url, open_timeout=10) as ws:
            async for message in ws:
                frames.append(json.loads(message))
        assert ws.close_code == 1000
    states = [f["status"] for f in frames if f["type"] == "state"]
    assert states == ["pending", "running", "completed"]
    events = [f for f in frames if f["type"] == "event"]
    assert [e["event"] for e in events] == ["start"] + ["progress"] * 5 + ["complete"]
    assert [e["seq"] for e in events] == list(range(1, 8))
    assert frames[-1]["final_value"] == "Completed processing: e2e"


async def test_http_state_and_health_over_daphne(process_db):
    import urllib.request

    key = manage(process_db.env, "starttask", "demo.ExampleTask", "message=http", "steps=2",
                 "delay=0").strip().splitlines()[-1]
    with Daphne(process_db.env) as server:
        with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
            assert response.read() == b"OK"
        with urllib.request.urlopen(f"{server.url}/tasks/{key.replace('.', '/')}/", timeout=5) as r:
            state = json.loads(r.read())
    assert state["type"] == "state" and state["status"] == "completed" and state["seq"] == 4
    assert state["final_value"] == "Completed processing: http"


async def test_a_foreign_origin_is_refused(process_db):
    started = manage(process_db.env, "starttask", "demo.ExampleTask", "--pending")
    key = started.strip().splitlines()[-1]
    with Daphne(process_db.env) as server:
        url = f"{server.ws_url}/ws/tasks/{key.replace('.', '/')}/"
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, origin="http://evil.example", open_timeout=10):
                pass
        assert refused.value.response.status_code == 403
        async with websockets.connect(url, origin=f"http://127.0.0.1:{server.port}") as ws:
            first = json.loads(await ws.recv())
        assert first["type"] == "state"
