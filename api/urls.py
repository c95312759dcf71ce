"""api's pages; the token API's own URLs come from `api.endpoints.urls()` (evalsite/urls.py)."""

from api import views

app_name = "api"
urlpatterns = views.urlpatterns
