from django.apps import AppConfig


class StreamAppConfig(AppConfig):
    name = "streamapp"
    verbose_name = "Stream tasks"
    default_auto_field = "django.db.models.BigAutoField"
