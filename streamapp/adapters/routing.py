"""channels' URLRouter, as streamapp's stack needs it: "no route matched" told apart, and
streamapp's own routes matched by the stack itself.

channels raises a bare ``ValueError("No route found for path …")`` from the outermost
URLRouter (``Resolver404`` from a nested one) before any consumer runs; the stack turns that
into a clean refusal (``not_found`` frame, close 4404).

A URLRouter keeps a coroutine frame and its own copy of the scope for as long as each socket
lives (about 0.8 KiB a socket). When the stack wraps a URLRouter directly, it matches the
router's routes the way the router does (first match wins, ``root_path``, ``path_remaining``,
``url_route``, default arguments) and, when the first match is one of streamapp's own routes,
calls its consumer itself; anything else goes to the router as usual. ``probe()`` checks that
channels still raises and routes so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.urls import Resolver404

NO_ROUTE = "No route found for path"
# Set on the ASGI applications of streamapp's own consumers (consumers/sockets.py).
DIRECT = "streamapp_direct_route"


def is_no_route(exc: BaseException) -> bool:
    """Did a URLRouter find no route (rather than a consumer failing)?"""
    return isinstance(exc, (ValueError, Resolver404)) and str(exc).startswith(NO_ROUTE)


class DirectRoutes:
    """The routes of a URLRouter up to its last one of streamapp's, matched as it matches."""

    def __init__(self, router: Any) -> None:
        from channels.routing import URLRouter

        usable = type(router) is URLRouter and not probe_direct()
        routes = list(router.routes) if usable else []
        ours = [i for i, route in enumerate(routes) if getattr(route.callback, DIRECT, False)]
        self.routes = routes[: ours[-1] + 1] if ours else []

    def match(self, scope: dict[str, Any]) -> tuple[Callable[..., Any], dict[str, Any]] | None:
        """streamapp's consumer for ``scope`` and the keys the router would add to the scope;
        None when the router must decide (another route comes first, or none matches)."""
        if not self.routes:
            return None
        path = scope.get("path_remaining", scope.get("path"))
        if path is None:
            return None
        if "path_remaining" not in scope:
            root_path = scope.get("root_path", "")
            if root_path and not path.startswith(root_path):
                return None
            path = path[len(root_path):]
        path = path.lstrip("/")
        for route in self.routes:
            try:
                found = route.pattern.match(path)
            except Resolver404:
                continue
            if not found:
                continue
            if not getattr(route.callback, DIRECT, False):
                return None  # one of the project's routes: the router runs it
            new_path, args, kwargs = found
            kwargs.update(route.default_args)
            outer = scope.get("url_route")
            if outer:
                args = outer.get("args", ()) + args
                kwargs = {**outer.get("kwargs", {}), **kwargs}
            return route.callback, {
                "path_remaining": new_path, "url_route": {"args": args, "kwargs": kwargs},
            }
        return None


def probe_direct() -> list[str]:
    """What the installed channels' URLRouter does differently from ``DirectRoutes``."""
    from channels.routing import URLRouter

    code = URLRouter.__call__.__code__
    if not {"routes", "pattern", "match", "default_args"} <= set(code.co_names) or not {
        "path_remaining", "url_route", "root_path"
    } <= set(code.co_consts):
        return ["channels.routing.URLRouter no longer routes as streamapp's stack does"]
    return []


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
