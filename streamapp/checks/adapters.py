"""A library upgrade that takes away an internal streamapp reads turns a feature off loudly.

Each adapter in ``streamapp/adapters`` has a ``probe()`` that names what it cannot find; one
warning per probe that finds something missing says which feature is off and why.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

from django.core import checks

from ..adapters import daphne, memorylayer, rediscache, routing, signals

SUPPORTED = "Use a {} version streamapp supports (see pyproject.toml)."


class Probe(NamedTuple):
    check_id: str
    adapter: ModuleType
    feature_off: str  # what the project loses, said before the missing names
    hint: str | None = None
    probe: str = "probe"  # the adapter's function that lists what it cannot find


PROBES = (
    Probe("streamapp.W020", daphne,
          "streamapp cannot read daphne's send backlog, so slow-client protection "
          "(SEND_BUFFER_BYTES, SLOW_CLIENT_SECONDS) is off",
          SUPPORTED.format("daphne/Twisted/autobahn")),
    Probe("streamapp.W021", rediscache,
          "streamapp cannot pipeline the handshake counter on Django's RedisCache; it uses "
          "the slower public cache API instead"),
    Probe("streamapp.W022", routing,
          "streamapp cannot tell channels' \"no route\" from a consumer's error, so unmatched "
          "WebSocket paths end in a server error instead of not_found and 4404",
          SUPPORTED.format("channels")),
    Probe("streamapp.W023", signals,
          "streamapp cannot run before an asyncio server's own SIGTERM handler, so under "
          "hypercorn sockets are closed with 1011 after its grace period instead of 1012 at "
          "once"),
    Probe("streamapp.W024", routing,
          "streamapp's own WebSocket routes go through channels' URLRouter, which keeps about "
          "0.8 KiB more per socket",
          SUPPORTED.format("channels"), probe="probe_direct"),
    Probe("streamapp.W025", memorylayer,
          "streamapp cannot tell that nobody listens in a group of the in-memory channel "
          "layer, so it announces to empty groups too",
          SUPPORTED.format("channels")),
)


@checks.register()
def check_adapters(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    found = []
    for check_id, adapter, feature_off, hint, probe in PROBES:
        missing = getattr(adapter, probe)()
        if missing:
            found.append(checks.Warning(
                f"{feature_off}: {'; '.join(missing)}", hint=hint, id=check_id
            ))
    return found
