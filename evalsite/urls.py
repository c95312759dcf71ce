from django.contrib.auth import views as auth_views
from django.urls import include, path

from api import endpoints
from evalsite import accounts, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="registration/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("users/", views.user_list, name="users"),
    path("users/new/", views.user_create, name="user_create"),
    path("users/<int:user_id>/", views.user_edit, name="user_edit"),
    path("", include(accounts.urlpatterns)),
    path("", include("runs.urls")),
    path("", include("scoring.urls")),
    path("", include("api.urls")),
    path("api/", endpoints.urls()),
]

handler403 = "evalsite.views.permission_denied"
