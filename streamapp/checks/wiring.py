"""How the project wires streamapp in: channel layer, ASGI application, server, pip extras.

Each of these, wrong, used to fail silently: no live events, tokens ignored, 404s with no hint,
an ImportError deep in a first request. An error where it cannot work, a warning where it works
worse.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.management import get_commands
from django.utils.module_loading import import_string

from .. import extras, metrics
from ..asgi.wiring import NO_STACK, NO_STACK_HINT, passes_through_stack

IN_MEMORY = '{"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}'


@checks.register()
def check_channel_layer_configured(app_configs: Any = None, **kwargs: Any) -> list:
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    backend = layers.get("default", {}).get("BACKEND") if isinstance(layers, dict) else None
    if not backend:
        return [checks.Error(
            "CHANNEL_LAYERS has no 'default' layer: a task's events never reach its sockets "
            "live (a subscriber sees 'pending', then nothing until it converges with the "
            "database), and cancels and signals cannot reach a running task.",
            hint=f"One process: CHANNEL_LAYERS = {IN_MEMORY}. Several: channels_redis "
            "(pip install 'streamapp[redis]').",
            id="streamapp.E010",
        )]
    if backend.startswith("channels_redis.") and not extras.installed("redis"):
        return [checks.Error(
            extras.missing("redis", f"CHANNEL_LAYERS backend {backend}"), id="streamapp.E011",
        )]
    return []


@checks.register()
def check_extras_for_services(app_configs: Any = None, **kwargs: Any) -> list:
    """A database, cache or metrics mode that needs an extra streamapp does not require."""
    problems = []
    for alias, database in settings.DATABASES.items():
        if "postgresql" in database.get("ENGINE", "") and not extras.installed("postgres"):
            problems.append(checks.Error(
                extras.missing("postgres", f"DATABASES[{alias!r}] (PostgreSQL)"),
                id="streamapp.E012",
            ))
    for alias, cache in settings.CACHES.items():
        if cache.get("BACKEND", "").endswith("redis.RedisCache") and not extras.installed("redis"):
            problems.append(checks.Error(
                extras.missing("redis", f"CACHES[{alias!r}] (Django's RedisCache)"),
                id="streamapp.E013",
            ))
    problem = metrics.multiprocess_dir_problem()
    if problem is not None:
        problems.append(checks.Error(problem, id="streamapp.E014"))
    elif metrics.multiprocess_dir() is not None and not extras.installed("metrics"):
        problems.append(checks.Warning(
            extras.missing("metrics", f"{metrics.MULTIPROC_ENV} (Prometheus metrics)"),
            id="streamapp.W015",
        ))
    return problems


@checks.register()
def check_asgi_application(app_configs: Any = None, **kwargs: Any) -> list:
    """ASGI_APPLICATION imports, routes WebSockets through the stack, and routes lifespan."""
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        return []  # daphne and uvicorn are given the application on their command line
    try:
        application = import_string(path)
    except ImportError as exc:
        settings_module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
        module = settings_module.rpartition(".")[0]
        guess = f"{module}.asgi.application" if module else "<project>.asgi.application"
        return [checks.Error(
            f"ASGI_APPLICATION = {path!r} cannot be imported: {exc}",
            hint=f"In a startproject layout it is {guess!r}.",
            id="streamapp.E040",
        )]
    problems = []
    if passes_through_stack(application) is False:
        problems.append(checks.Warning(f"{path}: {NO_STACK}.", hint=NO_STACK_HINT,
                                       id="streamapp.W041"))
    mapping = getattr(application, "application_mapping", None)
    if isinstance(mapping, dict) and "lifespan" not in mapping:
        problems.append(checks.Warning(
            f"{path} routes no 'lifespan': under uvicorn or hypercorn nothing closes the "
            "sockets or drains running tasks at shutdown, and slow clients are not bounded.",
            hint='Add "lifespan": streamapp.asgi.lifespan to its ProtocolTypeRouter.',
            id="streamapp.W042",
        ))
    return problems


@checks.register()
def check_runserver_serves_websockets(app_configs: Any = None, **kwargs: Any) -> list:
    """Django's own runserver speaks no WebSocket: daphne's must come first."""
    if sys.argv[1:2] != ["runserver"] or get_commands().get("runserver") == "daphne":
        return []
    return [checks.Warning(
        "runserver is Django's own, which serves no WebSocket: every ws/ request gets 404.",
        hint="Put 'daphne' first in INSTALLED_APPS (before django.contrib.staticfiles), or "
        "serve asgi.py with daphne or uvicorn.",
        id="streamapp.W043",
    )]

