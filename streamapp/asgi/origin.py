"""Origin checking for WebSocket handshakes.

Cross-site WebSocket hijacking needs a browser, and browsers always send ``Origin``; a handshake
with a foreign Origin is refused. Clients that send no Origin at all (scripts, services, test
communicators) are not browsers and pass on to authentication like any HTTP API client.

The header is read by an explicit ASCII rule (``scheme://host[:port]``) before channels' matching
sees it: ``urlparse`` raises on ``http://[::1`` and ``.port`` on ``http://a:99999``, which would
fail the handshake with a server error. An Origin that does not fit the rule (``null`` from a
sandboxed frame included) is foreign.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import ParseResult, urlparse

from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings

ORIGIN = re.compile(
    r"([a-z][a-z0-9+.-]{0,15})://(\[[0-9a-f:.]{2,45}\]|[a-z0-9_.-]{1,253})(?::([0-9]{1,5}))?",
    re.ASCII,
)


def parse_origin(value: bytes) -> ParseResult | None:
    """An Origin header's value, parsed; None when it is not ``scheme://host[:port]``."""
    text = value.decode("latin-1").strip(" \t").lower()
    match = ORIGIN.fullmatch(text)
    if match is None or (match.group(3) is not None and int(match.group(3)) > 65535):
        return None
    return urlparse(text)


class BrowserOriginValidator(OriginValidator):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if self.admits(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)

    def admits(self, scope: dict[str, Any]) -> bool:
        """Does every Origin the handshake carries (none, for a client that is no browser)
        match?"""
        origins = [value for name, value in scope.get("headers", ()) if name.lower() == b"origin"]
        return all(self.valid_origin(parse_origin(value)) for value in origins)

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return False
        return super().valid_origin(parsed_origin)


def AllowedHostsOriginValidator(application: Any) -> BrowserOriginValidator:  # noqa: N802
    """Like channels' validator of the same name: Origin must match ALLOWED_HOSTS."""
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed_hosts)
