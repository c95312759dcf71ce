from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from evalsite import dashboard as dashboard_data
from evalsite.forms import UserCreateForm, UserEditForm
from evalsite.roles import ADMIN, SCORER, role_of, role_required, set_role


@role_required(SCORER)
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "evalsite/dashboard.html", dashboard_data.for_user(request.user))


def permission_denied(request: HttpRequest, exception=None) -> HttpResponse:
    return render(request, "403.html", {"reason": str(exception or "")}, status=403)


@role_required(ADMIN)
def user_list(request: HttpRequest) -> HttpResponse:
    users = get_user_model().objects.prefetch_related("groups").order_by("username")
    # A team's users fit in memory: paging the loaded list spares a COUNT query.
    rows = [(user, role_of(user)) for user in users]
    return render(
        request,
        "evalsite/users.html",
        {"rows": Paginator(rows, 100).get_page(request.GET.get("page"))},
    )


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def user_create(request: HttpRequest) -> HttpResponse:
    form = UserCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = get_user_model().objects.create_user(
                username=form.cleaned_data["username"],
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
            )
            set_role(user, form.cleaned_data["role"] or None)
        messages.success(request, f"Created {user.username}.")
        return redirect("users")
    return render(request, "evalsite/user_form.html", {"form": form, "editing": None})


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def user_edit(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    initial = {"role": role_of(user) or "", "is_active": user.is_active}
    form = UserEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        if user == request.user and form.cleaned_data["role"] != ADMIN:
            form.add_error("role", "You cannot remove your own admin role.")
        else:
            with transaction.atomic():
                user.is_active = form.cleaned_data["is_active"]
                user.save(update_fields=["is_active"])
                set_role(user, form.cleaned_data["role"] or None)
            messages.success(request, f"Updated {user.username}.")
            return redirect("users")
    return render(request, "evalsite/user_form.html", {"form": form, "editing": user})
