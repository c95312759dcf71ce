"""scoring: URL patterns come from each views module, so each area keeps its routes beside its views."""

from scoring.views import judges, leaderboard, pairwise, review, rubrics

app_name = "scoring"
urlpatterns = (
    review.urlpatterns
    + pairwise.urlpatterns
    + leaderboard.urlpatterns
    + rubrics.urlpatterns
    + judges.urlpatterns
)
