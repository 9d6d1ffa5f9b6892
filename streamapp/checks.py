"""System checks: lease and worker settings that cannot work, found at start-up."""

from __future__ import annotations

from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .conf import app_settings

# Setting name → may it be zero?
POSITIVE_SETTINGS = {"SWEEP_SECONDS": False, "WORKER_POLL_SECONDS": False, "SHUTDOWN_TIMEOUT": True}


@register(Tags.compatibility)
def check_runner_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    lease, heartbeat = app_settings.LEASE_SECONDS, app_settings.HEARTBEAT_SECONDS
    if not 0 < heartbeat < lease:
        messages.append(Error(
            f"STREAMAPP HEARTBEAT_SECONDS ({heartbeat}) must be above 0 and below "
            f"LEASE_SECONDS ({lease})",
            hint="renew a lease several times per lease period, e.g. every third of it",
            id="streamapp.E001",
        ))
    for name, zero_ok in POSITIVE_SETTINGS.items():
        value = getattr(app_settings, name)
        if value < 0 or (value == 0 and not zero_ok):
            messages.append(Error(f"STREAMAPP {name} ({value}) must be positive",
                                  id="streamapp.E002"))
    if not app_settings.RUN_TASKS and isinstance(get_channel_layer(), InMemoryChannelLayer):
        messages.append(Warning(
            "STREAMAPP RUN_TASKS is off but the channel layer is in-memory: runtasks workers "
            "cannot wake up on new tasks nor reach this process's subscribers",
            hint="use channels_redis for every process of a split deployment",
            id="streamapp.W001",
        ))
    return messages
