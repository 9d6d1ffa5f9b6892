"""System checks (``manage.py check``): misconfigurations found at start-up, not at the first event.

``config`` (settings, layers, migrations), ``security`` (access and limits), ``adapters`` (the
other libraries' internals streamapp reads), ``settings`` (the STREAMAPP dict's keys and types),
``wiring`` (channel layer, ASGI application, server, pip extras). Importing this package
registers them all.
"""

from . import adapters, config, security, settings, wiring
from .config import is_worker_process, mark_worker_process

__all__ = [
    "adapters", "config", "security", "settings", "wiring",
    "is_worker_process", "mark_worker_process",
]
