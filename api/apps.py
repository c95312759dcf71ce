from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "API and series"

    def ready(self) -> None:
        # Registers the scheduled re-run task, which beat sends by name. Deferred to ready():
        # the task imports the models, which need the app registry.
        from api import tasks  # noqa: F401
