"""channels' URLRouter, as streamapp's stack needs it: "no route matched" told apart.

channels raises a bare ``ValueError("No route found for path …")`` from the outermost
URLRouter (``Resolver404`` from a nested one) before any consumer runs; the stack turns that
into a clean refusal (``not_found`` frame, close 4404). ``probe()`` checks that channels still
raises it so.
"""

from __future__ import annotations

from django.urls import Resolver404

NO_ROUTE = "No route found for path"


def is_no_route(exc: BaseException) -> bool:
    """Did a URLRouter find no route (rather than a consumer failing)?"""
    return isinstance(exc, (ValueError, Resolver404)) and str(exc).startswith(NO_ROUTE)


def probe() -> list[str]:
    """What the installed channels does differently from what ``is_no_route`` expects."""
    from channels.routing import URLRouter

    # The router raises before its first await: one step of the coroutine is the whole call.
    call = URLRouter([])({"type": "websocket", "path": "/x/"}, None, None)
    try:
        call.send(None)
    except Exception as exc:  # noqa: BLE001 - whatever it raises is the answer
        if is_no_route(exc):
            return []
        return [f"channels.routing.URLRouter raised {exc!r} for an unmatched path"]
    call.close()
    return ["channels.routing.URLRouter no longer raises for an unmatched path"]
