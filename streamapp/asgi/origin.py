"""Origin checking for WebSocket handshakes.

Cross-site WebSocket hijacking needs a browser, and browsers always send ``Origin``; a handshake
with a foreign Origin is refused. Clients that send no Origin at all (scripts, services, test
communicators) are not browsers and pass on to authentication like any HTTP API client.
"""

from __future__ import annotations

from typing import Any

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def AllowedHostsOriginValidator(application: Any) -> BrowserOriginValidator:  # noqa: N802
    """Like channels' validator of the same name: Origin must match ALLOWED_HOSTS."""
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed_hosts)
