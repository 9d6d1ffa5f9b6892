"""A library upgrade that takes away an internal streamapp reads turns a feature off loudly."""

from __future__ import annotations

from typing import Any

from django.core import checks

from ..adapters import daphne, memorylayer, rediscache, signals


@checks.register()
def check_adapters(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    found = []
    missing = daphne.probe()
    if missing:
        found.append(checks.Warning(
            "streamapp cannot read daphne's send backlog, so slow-client protection "
            "(SEND_BUFFER_BYTES, SLOW_CLIENT_SECONDS) is off: " + "; ".join(missing),
            hint="Use a daphne/Twisted/autobahn version streamapp supports (see pyproject.toml).",
            id="streamapp.W020",
        ))
    missing = rediscache.probe()
    if missing:
        found.append(checks.Warning(
            "streamapp cannot pipeline the handshake counter on Django's RedisCache; it uses "
            "the slower public cache API instead: " + "; ".join(missing),
            id="streamapp.W021",
        ))
    missing = signals.probe()
    if missing:
        found.append(checks.Warning(
            "streamapp cannot run before an asyncio server's own SIGTERM handler, so under "
            "hypercorn sockets are closed with 1011 after its grace period instead of 1012 at "
            "once: " + "; ".join(missing),
            id="streamapp.W023",
        ))
    missing = memorylayer.probe()
    if missing:
        found.append(checks.Warning(
            "streamapp cannot tell that nobody listens in a group of the in-memory channel "
            "layer, so it announces to empty groups too: " + "; ".join(missing),
            hint="Use a channels version streamapp supports (see pyproject.toml).",
            id="streamapp.W025",
        ))
    return found
