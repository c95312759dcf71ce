from django.apps import AppConfig


class ScoringConfig(AppConfig):
    name = "scoring"
    verbose_name = "Scoring"

    def ready(self) -> None:
        # Connects the receivers that tell cached leaderboards when a review, vote,
        # adjudication or rubric changes.
        from scoring.leaderboard import cache  # noqa: F401
