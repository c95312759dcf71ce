from django.apps import AppConfig


class ScoringConfig(AppConfig):
    name = "scoring"
    verbose_name = "Scoring"

    def ready(self) -> None:
        # Connects the receivers that refresh cached leaderboards when a review or vote arrives.
        from scoring import leaderboard  # noqa: F401
