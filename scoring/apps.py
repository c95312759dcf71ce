from django.apps import AppConfig


class ScoringConfig(AppConfig):
    name = "scoring"
    verbose_name = "Scoring"

    def ready(self) -> None:
        # The cache module connects the receivers that tell cached leaderboards when a review,
        # vote, adjudication or rubric changes; tasks registers the judge's task (runs.enqueue
        # sends it by name).
        from scoring import launch_choices, tasks  # noqa: F401
        from scoring.leaderboard import cache  # noqa: F401

        # The campaign form (in runs, which may not import scoring) offers the rubric picker.
        launch_choices.register()
