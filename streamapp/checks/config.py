"""System checks (``manage.py check``): misconfigurations found at start-up, not at the first event.

The worker command calls ``mark_worker_process()`` before its checks run, so the channel-layer
check knows tasks run in a process apart from the sockets; ``manage.py runtasks`` is recognised
from the command line as well, so the check holds even if the command forgets to mark itself.
"""

from __future__ import annotations

import sys
from typing import Any

from channels.layers import InMemoryChannelLayer
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.db.migrations.loader import MigrationLoader
from django.utils.module_loading import import_string

from ..conf import app_settings
from ..keys import stream_task_tables

WORKER_COMMAND = "runtasks"

_worker_process = False


def mark_worker_process(value: bool = True) -> None:
    """Declare that this process executes tasks for other processes (the ``runtasks`` worker)."""
    global _worker_process
    _worker_process = value


def is_worker_process() -> bool:
    return _worker_process or sys.argv[1:2] == [WORKER_COMMAND]


def _uses_in_memory_layer() -> bool:
    backend = (getattr(settings, "CHANNEL_LAYERS", None) or {}).get("default", {}).get("BACKEND")
    if not backend:
        return False
    try:
        layer_class = import_string(backend)
    except ImportError:
        return False  # channels reports a wrong BACKEND itself, on first use
    return isinstance(layer_class, type) and issubclass(layer_class, InMemoryChannelLayer)


@checks.register()
def check_channel_layer_spans_processes(app_configs: Any = None, **kwargs: Any) -> list:
    """The in-memory layer reaches one process only: a worker's events would reach no socket."""
    if not _uses_in_memory_layer():
        return []
    if is_worker_process():
        why = f"this process is a `{WORKER_COMMAND}` worker"
    elif not app_settings.RUN_TASKS:
        why = "STREAMAPP['RUN_TASKS'] is False, so tasks run in separate worker processes"
    else:
        return []
    return [checks.Warning(
        f"InMemoryChannelLayer is used but {why}: its events, cancels and signals never leave "
        "the process, so no WebSocket client sees them.",
        hint="Use channels_redis (CHANNEL_LAYERS BACKEND channels_redis.core.RedisChannelLayer) "
        "when tasks and sockets live in different processes.",
        id="streamapp.W001",
    )]


@checks.register()
def check_channels_installed(app_configs: Any = None, **kwargs: Any) -> list:
    if apps.is_installed("channels"):
        return []
    return [checks.Warning(
        "'channels' is not in INSTALLED_APPS: streamapp's consumers need Django Channels.",
        hint="Add 'channels' to INSTALLED_APPS (and set ASGI_APPLICATION).",
        id="streamapp.W002",
    )]


@checks.register(checks.Tags.models)
def check_task_models_migrated(app_configs: Any = None, **kwargs: Any) -> list:
    """A StreamTask model with no migration has no table: the first claim would fail.

    A proxy uses its concrete model's table; an unmanaged model's table is the project's affair.
    """
    loader = MigrationLoader(None, ignore_no_migrations=True)
    state = loader.project_state()
    problems = []
    for model in sorted(stream_task_tables(), key=lambda model: model._meta.label):
        meta = model._meta
        if not meta.managed or (app_configs is not None and meta.app_config not in app_configs):
            continue
        if meta.app_label in loader.migrated_apps and (
            meta.app_label, meta.model_name
        ) in state.models:
            continue
        problems.append(checks.Warning(
            f"StreamTask model {meta.label} has no migration.",
            hint=f"Run `manage.py makemigrations {meta.app_label}`.",
            obj=model,
            id="streamapp.W003",
        ))
    return problems


@checks.register(checks.Tags.models)
def check_proxies_keep_process(app_configs: Any = None, **kwargs: Any) -> list:
    """A worker picks pending rows through their table's concrete model, whose process() runs:
    a proxy with a process() of its own would see it replaced there without a word."""
    problems = []
    for model, readers in stream_task_tables().items():
        for proxy in readers:
            if proxy is model or proxy.process is model.process:
                continue
            problems.append(checks.Warning(
                f"StreamTask proxy {proxy._meta.label} has a process() of its own: a runtasks "
                f"worker runs the pending rows of its table as {model._meta.label}, with "
                f"{model._meta.label}'s process() and task keys.",
                hint="Give it a table of its own: a concrete StreamTask model.",
                obj=proxy,
                id="streamapp.W005",
            ))
    return problems


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@checks.register()
def check_lease_outlives_heartbeat(app_configs: Any = None, **kwargs: Any) -> list:
    lease, heartbeat = app_settings.LEASE_SECONDS, app_settings.HEARTBEAT_SECONDS
    if not is_number(lease) or not is_number(heartbeat) or lease > heartbeat:  # E032: types
        return []
    return [checks.Warning(
        f"STREAMAPP['LEASE_SECONDS'] ({lease}) is not longer than "
        f"STREAMAPP['HEARTBEAT_SECONDS'] ({heartbeat}): leases run out between renewals and "
        "healthy tasks are ended as WorkerLost.",
        hint="Keep the lease at least twice the heartbeat (defaults: 30 and 10 seconds).",
        id="streamapp.W004",
    )]



# Setting name → may it be zero?
POSITIVE_SETTINGS = {
    "HEARTBEAT_SECONDS": False, "SWEEP_SECONDS": False, "WORKER_POLL_SECONDS": False,
    "SHUTDOWN_TIMEOUT": True,
}


@checks.register()
def check_runner_settings(app_configs: Any = None, **kwargs: Any) -> list:
    """Intervals the runner sleeps on must be positive, or its loops would spin or never run."""
    problems = []
    for name, zero_ok in POSITIVE_SETTINGS.items():
        value = getattr(app_settings, name)
        if not is_number(value):
            continue  # a wrong type is streamapp.E032 (checks/settings.py)
        if value < 0 or (value == 0 and not zero_ok):
            problems.append(checks.Error(f"STREAMAPP['{name}'] ({value}) must be positive",
                                         id="streamapp.E002"))
    return problems
