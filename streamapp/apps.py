import atexit

from django.apps import AppConfig, apps


class StreamAppConfig(AppConfig):
    name = "streamapp"
    verbose_name = "Stream tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, metrics  # noqa: F401  (importing the checks registers them)
        from .runner import server_hooks

        server_hooks.install_daphne_hooks()
        if metrics.multiprocess_dir() is not None:
            atexit.register(metrics.forget_this_process)
        if apps.is_installed("django.contrib.admin"):
            from .admin import register_stream_task_models

            register_stream_task_models()
