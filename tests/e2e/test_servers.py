"""Any ASGI server: daphne, uvicorn and hypercorn serve the same asgi.py, stream a task to a real
WebSocket client, and on SIGTERM mid-task close the socket and end the task in a final status."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
import websockets

from tests.support.processes import manage
from tests.support.servers import SERVERS

pytestmark = pytest.mark.slow

# The close each server's clients see when it shuts down: daphne refuses 1012 (DESIGN §3).
SHUTDOWN_CLOSE = {"daphne": 4012, "uvicorn": 1012, "hypercorn": 1012}


def serve(name, env):
    return SERVERS[name]({**env, "STREAMAPP_SHUTDOWN_TIMEOUT": "0.5"})


@pytest.mark.parametrize("name", sorted(SERVERS))
async def test_sigterm_mid_task_closes_the_socket_and_ends_the_task(name, process_db):
    key = manage(process_db.env, "starttask", "demo.SlowTask", "seconds=60",
                 "--pending").splitlines()[-1]
    server = serve(name, process_db.env).start()
    try:
        url = f"{server.ws_url}/ws/tasks/{key.replace('.', '/')}/"
        async with websockets.connect(url, open_timeout=10) as ws:
            frames = []
            while not [f for f in frames if f["type"] == "event"]:
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=10)))
            assert frames[0]["type"] == "state"
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), timeout=10)
            closed_after = time.monotonic() - signalled
        assert ws.close_code == SHUTDOWN_CLOSE[name], server.output
        assert closed_after < 1.0
        output = server.stop(None, timeout=20)
        # uvicorn re-raises the signal it handled once it has shut down cleanly
        assert server.process.returncode in (0, -signal.SIGTERM), output
    finally:
        server.stop()
    status, error = process_db.fetchone(
        "SELECT status, error FROM demo_slowtask WHERE id = %s", int(key.split(".")[-1])
    )
    error = json.loads(error) if isinstance(error, str) else error
    assert (status, error["type"]) == ("cancelled", "WorkerShutdown"), output
