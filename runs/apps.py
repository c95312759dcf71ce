from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        # Connects the worker_ready handler, whatever imports the tasks first (or nothing does).
        from runs import tasks  # noqa: F401
