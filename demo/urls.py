from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("demo/tasks/", views.tasks, name="create-task"),
    path("admin/", admin.site.urls),
    path("", include("streamapp.urls")),
    # The demo serves its own static files (streamapp.js, the page's script and style) even
    # without DEBUG; a deployment runs collectstatic and lets its web server or CDN serve them.
    path(f"{settings.STATIC_URL.strip('/')}/<path:path>", serve, {"insecure": True}),
]
