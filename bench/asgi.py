"""The benchmark's one server: floor, baseline and streamapp side by side in one server process.

- ``ws/tasks/…``: streamapp's real consumers (``consumers.routing.websocket_urlpatterns``)
  behind ``StreamAppMiddlewareStack``, as a project wires them (origin, handshake limiter,
  session, token, transport);
- ``bench/baseline/<group>/``: the textbook consumer behind the textbook stack (origin, session
  and user: ``AuthMiddlewareStack``);
- ``bench/floor/<group>/``: the bare ASGI app, no middleware, no layer;
- HTTP ``/bench/…``: the load generator's remote control; any other HTTP goes to Django.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()  # sets Django up before the consumers import models

from typing import Any  # noqa: E402

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from consumers.routing import websocket_urlpatterns  # noqa: E402
from streamapp.asgi import StreamAppMiddlewareStack, lifespan  # noqa: E402
from streamapp.asgi.origin import AllowedHostsOriginValidator  # noqa: E402

from . import control, floor  # noqa: E402
from .baseline import BaselineConsumer  # noqa: E402

FLOOR_PATH = "/bench/floor/"
BASELINE_PATH = "/bench/baseline/"
CONTROL_PATH = "/bench/"

baseline_websockets = AllowedHostsOriginValidator(
    AuthMiddlewareStack(
        URLRouter([path("bench/baseline/<str:group>/", BaselineConsumer.as_asgi())])
    )
)
streamapp_websockets = StreamAppMiddlewareStack(URLRouter(websocket_urlpatterns))


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    where = scope.get("path", "")
    if scope["type"] == "websocket":
        if where.startswith(FLOOR_PATH):
            app = floor.application
        elif where.startswith(BASELINE_PATH):
            app = baseline_websockets
        else:
            app = streamapp_websockets
    elif scope["type"] == "http":
        app = control.application if where.startswith(CONTROL_PATH) else django_asgi_app
    else:
        app = lifespan  # uvicorn's (daphne sends no lifespan events)
    await app(scope, receive, send)
