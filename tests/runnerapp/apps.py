from django.apps import AppConfig


class RunnerAppConfig(AppConfig):
    name = "tests.runnerapp"
    label = "runnerapp"
    default_auto_field = "django.db.models.BigAutoField"
