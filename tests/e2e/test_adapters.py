"""The adapters against the real libraries they read: an upgrade that breaks one fails here.

A daphne subprocess serves tests/support/adapter_app.py, which reports what
``streamapp.adapters.daphne`` finds behind daphne's own ``send``.
"""

from __future__ import annotations

import json

import pytest
import websockets

from streamapp.adapters import daphne, rediscache
from tests.support.processes import Daphne, server_env

pytestmark = pytest.mark.slow


class AdapterDaphne(Daphne):
    application = "tests.support.adapter_app:application"


def test_the_installed_libraries_have_what_the_adapters_read():
    assert daphne.probe() == []
    assert rediscache.probe() == []


async def test_the_daphne_adapter_reads_a_real_daphne_transport():
    with AdapterDaphne(server_env()) as server:
        async with websockets.connect(server.ws_url + "/") as ws:
            first = json.loads(await ws.recv())
            assert first["backlog"] is True and first["missing"] == []
            assert first["open"] is True and first["closed"] is False
            assert isinstance(first["held"], int) and first["held"] >= 0
            assert first["unsent"] >= first["held"]
            await ws.send("again")
            assert json.loads(await ws.recv())["backlog"] is True
        output = server.stop()
    assert "Traceback" not in output


def test_without_the_internals_the_probe_says_what_is_missing(monkeypatch):
    from twisted.internet.abstract import FileDescriptor

    monkeypatch.delattr(FileDescriptor, "dataBuffer")
    assert daphne.probe() == ["twisted FileDescriptor.dataBuffer"]
