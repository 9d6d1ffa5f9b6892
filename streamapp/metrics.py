"""Every Prometheus metric streamapp exports, and the one-line hooks the rest of the code calls.

The hot paths (events sent, events delivered to sockets) use label children bound once: a
pre-bound child for fixed labels, and children cached per model label for ``{model}``, so no
per-event label lookup happens.

Several processes: each process counts its own. Scrape every process (``/metrics`` on each), or
set ``PROMETHEUS_MULTIPROC_DIR`` before the processes start: prometheus-client then keeps the
values in files there and ``/metrics`` on any process serves the sum over all of them
(docs/operations.md).
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import cache
from typing import Any

from django.utils import timezone

from . import extras
from .exceptions import StreamAppConfigurationError

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
        multiprocess,
    )
except ImportError:  # streamapp[metrics] not installed: every hook below does nothing
    Counter = Gauge = Histogram = None  # type: ignore[assignment,misc]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def multiprocess_dir_problem() -> str | None:
    """What is wrong with PROMETHEUS_MULTIPROC_DIR (a system check reports it), else None."""
    path = multiprocess_dir()
    if path is not None and not os.path.isdir(path):
        return (f"{MULTIPROC_ENV}={path!r} is not a directory: create it before the processes "
                "start (prometheus-client's multiprocess mode keeps its files there), or unset it")
    return None


class _Off:
    """A metric that counts nothing: no prometheus-client, or a multiprocess dir it cannot use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def labels(self, *args: Any, **kwargs: Any) -> _Off:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


ENABLED = Counter is not None and multiprocess_dir_problem() is None
if not ENABLED:
    # prometheus-client would open its files as the metrics below are defined, and fail there.
    Counter = Gauge = Histogram = _Off  # type: ignore[assignment,misc]

TASKS_STARTED = Counter(
    "streamapp_tasks_started", "Task runs this process claimed and started.", ["model"]
)
TASKS_FINISHED = Counter(
    "streamapp_tasks_finished",
    "Task runs whose outcome this process recorded, by status (a lost worker's task counts in "
    "the process whose sweeper ended it; 'pending' means requeued for a retry).",
    ["model", "status"],
)
TASKS_RUNNING = Gauge(
    "streamapp_tasks_running", "Tasks executing right now.", ["model"], multiprocess_mode="livesum"
)
TASK_DURATION = Histogram(
    "streamapp_task_duration_seconds",
    "Wall time from claim to recorded outcome.",
    ["model", "status"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, float("inf")),
)
EVENTS_SENT = Counter(
    "streamapp_events_sent", "Events logged and announced on the channel layer.", ["model"]
)
EVENTS_DELIVERED = Counter(
    "streamapp_events_delivered",
    "Event frames sent to WebSocket clients: live from the layer, or read from the log "
    "(replays and gap repairs).",
    ["source"],
)
EVENTS_DELIVERED_LIVE = EVENTS_DELIVERED.labels(source="live")
EVENTS_DELIVERED_FROM_LOG = EVENTS_DELIVERED.labels(source="log")
SOCKETS_CONNECTED = Gauge(
    "streamapp_sockets_connected", "Open task WebSockets.", multiprocess_mode="livesum"
)
SUBSCRIPTIONS = Gauge(
    "streamapp_subscriptions",
    "Task subscriptions held by open sockets.",
    multiprocess_mode="livesum",
)
GAP_REPAIRS = Counter(
    "streamapp_gap_repairs",
    "Times a socket saw a seq gap in live news (a dropped layer message) and filled it from "
    "the log.",
)
LEASE_EXPIRIES = Counter(
    "streamapp_lease_expiries",
    "Running tasks whose lease ran out (WorkerLost), by what the sweeper did.",
    ["model", "outcome"],
)
OUTAGES = Counter(
    "streamapp_outages",
    "Times this process found the database or the channel layer away (one per outage).",
    ["dependency"],
)
OUTAGE_SECONDS = Counter(
    "streamapp_outage_seconds",
    "Seconds the database or the channel layer was away, counted when each outage ended.",
    ["dependency"],
)
OUTAGE_FAILURES = Counter(
    "streamapp_outage_failures",
    "Operations that failed during an outage: retried writes, dropped layer messages, failed "
    "receives and group changes.",
    ["dependency"],
)
RATE_LIMIT_REJECTIONS = Counter(
    "streamapp_rate_limit_rejections",
    "Client actions or connections refused for going over a limit.",
    ["limit"],
)


def model_label(key: str) -> str:
    """``app_label.model`` of a task key: the ``model`` label of every per-model metric."""
    return key.rpartition(".")[0]


@cache
def _events_sent_child(model: str) -> Counter:
    return EVENTS_SENT.labels(model=model)


def events_sent(key: str, count: int) -> None:
    _events_sent_child(model_label(key)).inc(count)


def task_started(key: str) -> None:
    model = model_label(key)
    TASKS_STARTED.labels(model=model).inc()
    TASKS_RUNNING.labels(model=model).inc()


def task_stopped(key: str) -> None:
    """The run left this process, whether or not its outcome was recorded."""
    TASKS_RUNNING.labels(model=model_label(key)).dec()


def task_finished(key: str, status: str, started_at: datetime) -> None:
    model = model_label(key)
    TASKS_FINISHED.labels(model=model, status=status).inc()
    elapsed = (timezone.now() - started_at).total_seconds()
    TASK_DURATION.labels(model=model, status=status).observe(max(elapsed, 0.0))


def lease_expired(key: str, retry: bool) -> None:
    model = model_label(key)
    LEASE_EXPIRIES.labels(model=model, outcome="retry" if retry else "failed").inc()
    if not retry:
        TASKS_FINISHED.labels(model=model, status="failed").inc()


def outage_started(dependency: str) -> None:
    OUTAGES.labels(dependency=dependency).inc()


def outage_failure(dependency: str) -> None:
    OUTAGE_FAILURES.labels(dependency=dependency).inc()


def outage_ended(dependency: str, seconds: float) -> None:
    OUTAGE_SECONDS.labels(dependency=dependency).inc(seconds)


@cache
def _rate_limit_child(limit: str) -> Counter:
    return RATE_LIMIT_REJECTIONS.labels(limit=limit)


def rate_limited(limit: str) -> None:
    """Count one refusal by the limit named ``limit`` (e.g. "subscriptions", "messages")."""
    _rate_limit_child(limit).inc()


# -- exposition -------------------------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """The text ``/metrics`` serves and its content type.

    In multiprocess mode a fresh registry collects every process's files; otherwise this
    process's default registry (with the client's process and platform collectors).
    """
    extras.require("metrics", "/metrics")
    problem = multiprocess_dir_problem()
    if problem is not None:
        raise StreamAppConfigurationError(problem)
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def forget_this_process() -> None:
    """At exit in multiprocess mode: drop this process's live gauges (running, sockets)."""
    path = multiprocess_dir()
    if path is not None and ENABLED:
        multiprocess.mark_process_dead(os.getpid(), path)
