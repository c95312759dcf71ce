"""runs: URL patterns come from each views module, so each area keeps its routes beside its views."""

from runs.views import campaigns, curation, drafts, imports

app_name = "runs"
urlpatterns = (
    curation.urlpatterns + campaigns.urlpatterns + imports.urlpatterns + drafts.urlpatterns
)
