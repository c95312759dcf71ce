from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        # Registers the tasks (runs.enqueue sends them by name) and connects the worker_ready
        # handler. Deferred to ready(): the tasks import the models, which need the app registry.
        from runs import tasks  # noqa: F401
