"""ASGI entry point: HTTP to Django, WebSockets to streamapp's consumers, lifespan to streamapp.

``DJANGO_SETTINGS_MODULE`` defaults to the demo settings (SQLite, in-memory channel layer).
It uses the public wiring exactly as a project's own ``asgi.py`` does (README, "Install into
your project"): one import line, one wrapper and one ``"lifespan"`` entry beyond the Channels
tutorial.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()  # sets Django up before the consumers import models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from consumers.routing import websocket_urlpatterns as streamapp_routes  # noqa: E402
from streamapp.asgi import StreamAppMiddlewareStack, lifespan  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": StreamAppMiddlewareStack(URLRouter(streamapp_routes)),
        "lifespan": lifespan,
    }
)
