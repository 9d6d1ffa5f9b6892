"""System checks (``manage.py check``): misconfigurations found at start-up, not at the first event.

``config`` (settings, layers, migrations), ``security`` (access and limits), ``adapters`` (the
other libraries' internals streamapp reads). Importing this package registers them all.
"""

from . import adapters, config, security
from .config import is_worker_process, mark_worker_process

__all__ = ["adapters", "config", "security", "is_worker_process", "mark_worker_process"]
