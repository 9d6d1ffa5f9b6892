"""ASGI entry point: HTTP to Django, WebSockets to streamapp's consumers.

``DJANGO_SETTINGS_MODULE`` defaults to the demo settings (SQLite, in-memory channel layer).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()  # sets Django up before the consumers import models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from consumers.auth import TokenAuthMiddleware  # noqa: E402
from consumers.ratelimit import ConnectionRateLimitMiddleware  # noqa: E402
from consumers.routing import websocket_urlpatterns  # noqa: E402
from consumers.security import AllowedHostsOriginValidator  # noqa: E402
from consumers.transport import TransportMiddleware  # noqa: E402


# Outside in: foreign Origins refused, handshake floods turned away before any session lookup,
# then the session user, replaced by a bearer token's user when the client sends one.
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # TransportMiddleware outermost: it needs daphne's own send (consumers/transport.py).
        "websocket": TransportMiddleware(
            AllowedHostsOriginValidator(
                ConnectionRateLimitMiddleware(
                    AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
                )
            )
        ),
    }
)
