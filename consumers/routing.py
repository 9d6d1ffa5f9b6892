"""streamapp's WebSocket routes, and only those: no catch-all.

Put them in the project's own URLRouter beside its routes, inside StreamAppMiddlewareStack,
which refuses a path no route matches (``not_found``, close 4404).
"""

from django.urls import path

from .tasks import MultiTaskConsumer, TaskConsumer

websocket_urlpatterns = [
    path("ws/tasks/", MultiTaskConsumer.as_asgi()),
    path("ws/tasks/<str:app_label>/<str:model>/<str:pk>/", TaskConsumer.as_asgi()),
]
