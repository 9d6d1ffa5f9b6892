"""Who may read ``/metrics`` and ``/ready``'s reasons: allowed addresses, or a bearer token.

``STREAMAPP["METRICS_ALLOWED_ADDRESSES"]`` (addresses and networks, the client's address found as
the handshake limits find it, through TRUSTED_PROXIES) and ``STREAMAPP["METRICS_TOKEN"]`` (a
secret a scraper sends as ``Authorization: Bearer …``): either one admits. With neither set,
``/metrics`` is public (restrict it at the proxy) and nobody is told ``/ready``'s reasons.
"""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.crypto import constant_time_compare

from .addresses import allowed, networks_of, request_address
from .conf import app_settings
from .tokens import bearer_from_header


def restricted() -> bool:
    """Is reading metrics limited by a setting?"""
    return (app_settings.METRICS_ALLOWED_ADDRESSES is not None
            or app_settings.METRICS_TOKEN is not None)


def may_read(request: HttpRequest) -> bool:
    """May ``request`` read what only operators should? Nobody may when nothing is restricted."""
    token = app_settings.METRICS_TOKEN
    if token is not None:
        sent = bearer_from_header(request.headers.get("Authorization"))
        if sent is not None and constant_time_compare(sent, str(token)):
            return True
    addresses = app_settings.METRICS_ALLOWED_ADDRESSES
    if addresses is not None:
        return allowed(request_address(request.META), networks_of(tuple(addresses)))
    return False
