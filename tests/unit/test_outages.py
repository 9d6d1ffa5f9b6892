"""An outage is logged once when it starts and once when it ends, with what failed meanwhile
counted by kind, and counted in the metrics (streamapp/outages.py)."""

from __future__ import annotations

import logging

from django.db import OperationalError
from prometheus_client import REGISTRY

from streamapp.outages import Outage, is_unavailable


def sample(name: str, dependency: str) -> float:
    return REGISTRY.get_sample_value(name, {"dependency": dependency}) or 0.0


def test_an_outage_is_two_log_lines_and_counted(caplog):
    caplog.set_level(logging.INFO, logger="streamapp.outages")
    outage = Outage("test dependency")
    before = {name: sample(name, "test dependency") for name in (
        "streamapp_outages_total", "streamapp_outage_failures_total",
        "streamapp_outage_seconds_total",
    )}

    outage.answered()  # nothing under way: nothing to say
    error = OperationalError("connection refused\n\tIs the server running?")
    for what in ("event log", "event log", "heartbeat"):
        outage.failed(what, error)
    assert outage.down
    outage.answered()
    outage.answered()

    started, ended = [r.getMessage() for r in caplog.records]
    assert started == (
        "test dependency unavailable, riding it out what=event log "
        "error=OperationalError: connection refused Is the server running?"
    )
    assert ended.startswith("test dependency back after ")
    assert ended.endswith(" s failed=3 event_log=2 heartbeat=1")
    assert not outage.down and outage.seconds_since_return() < 60
    after = {name: sample(name, "test dependency") for name in before}
    assert after["streamapp_outages_total"] == before["streamapp_outages_total"] + 1
    assert after["streamapp_outage_failures_total"] == before["streamapp_outage_failures_total"] + 3
    assert after["streamapp_outage_seconds_total"] >= before["streamapp_outage_seconds_total"]


def test_the_next_outage_counts_afresh(caplog):
    caplog.set_level(logging.INFO, logger="streamapp.outages")
    outage = Outage("test dependency")
    for _ in range(2):
        outage.failed("sweep", ConnectionRefusedError(111, "Connection refused"))
        outage.answered()
    assert [r.getMessage().split(" s ")[-1] for r in caplog.records][1::2] == [
        "failed=1 sweep=1", "failed=1 sweep=1"
    ]


def test_which_errors_say_the_server_is_away():
    class RedisConnectionError(Exception):  # redis-py's ConnectionError is no builtin one
        pass

    RedisConnectionError.__name__ = "ConnectionError"
    assert is_unavailable(ConnectionRefusedError(111, "refused"))
    assert is_unavailable(TimeoutError())
    assert is_unavailable(RedisConnectionError("Connection closed by server."))
    assert not is_unavailable(TypeError("Channel name must be a valid unicode string"))
    assert not is_unavailable(ValueError("bad message"))
