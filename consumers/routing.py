"""WebSocket URL patterns: include ``websocket_urlpatterns`` in the site's URLRouter."""

from django.urls import path, re_path

from .tasks import MultiTaskConsumer, NotFoundConsumer, TaskConsumer

websocket_urlpatterns = [
    path("ws/tasks/", MultiTaskConsumer.as_asgi()),
    path("ws/tasks/<str:app_label>/<str:model>/<str:pk>/", TaskConsumer.as_asgi()),
    re_path(r"", NotFoundConsumer.as_asgi()),
]
