"""Include with ``path("", include("streamapp.urls"))``."""

from django.urls import path

from . import views

app_name = "streamapp"

urlpatterns = [
    path("health", views.health, name="health"),
    path("ready", views.ready, name="ready"),
    path("metrics", views.metrics_view, name="metrics"),
    path("tasks/", views.task_list_view, name="task-list"),
    path("tasks/<str:app_label>/<str:model>/<str:pk>/", views.task_state_view, name="task-state"),
]
