"""Accounts a team runs itself: changing one's password, invite links, an admin's password reset."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, login, update_session_auth_hash
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from evalsite.models import Invite
from evalsite.roles import ADMIN, ROLES, SCORER, role_required, set_role

INVITE_DAYS = (1, 3, 7, 14)


class InviteCreateForm(forms.Form):
    role = forms.ChoiceField(choices=[(r, r) for r in ROLES], initial=ROLES[0])
    days = forms.TypedChoiceField(
        label="Valid for",
        choices=[(d, f"{d} day{'s' if d != 1 else ''}") for d in INVITE_DAYS],
        coerce=int,
        initial=7,
    )
    note = forms.CharField(
        max_length=200, required=False, help_text="Who it is for, to recognise it in the list"
    )


class InviteAcceptForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    password = forms.CharField(widget=forms.PasswordInput, strip=False)
    password_again = forms.CharField(widget=forms.PasswordInput, strip=False)

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("That username is taken: choose another.")
        return username

    def clean(self):
        data = super().clean()
        password = data.get("password")
        if password and password != data.get("password_again"):
            self.add_error("password_again", "The two passwords differ.")
        elif password:
            try:
                validate_password(password, get_user_model()(username=data.get("username", "")))
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return data


def create_invite(role: str, days: int, created_by, note: str = "") -> tuple[Invite, str]:
    """A new invite and its token (shown once: only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    invite = Invite.objects.create(
        token_hash=Invite.hash_token(token),
        role=role,
        note=note,
        created_by=created_by,
        expires_at=timezone.now() + timedelta(days=days),
    )
    return invite, token


def accept_invite(invite: Invite, username: str, email: str, password: str):
    """Create the invited account, or None if the invite was used or expired meanwhile."""
    with transaction.atomic():
        # Conditional: of two people opening the same link at once, one gets the account.
        claimed = Invite.objects.usable().filter(pk=invite.pk).update(used_at=timezone.now())
        if not claimed:
            return None
        user = get_user_model().objects.create_user(
            username=username, email=email, password=password
        )
        set_role(user, invite.role)
        Invite.objects.filter(pk=invite.pk).update(used_by=user)
    return user


@role_required(SCORER)  # every role; a user without one uses no page
@require_http_methods(["GET", "POST"])
def password_change(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        update_session_auth_hash(request, user)  # stay signed in here; other sessions end
        messages.success(request, "Your password is changed.")
        return redirect("dashboard")
    return render(request, "evalsite/password_change.html", {"form": form})


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def invite_list(request: HttpRequest) -> HttpResponse:
    form = InviteCreateForm(request.POST or None)
    link = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        invite, token = create_invite(data["role"], data["days"], request.user, data["note"])
        link = request.build_absolute_uri(reverse("invite_accept", args=[token]))
        messages.success(request, "Invite created: copy the link now, it is not shown again.")
        form = InviteCreateForm()
    invites = Invite.objects.select_related("created_by", "used_by")[:50]
    return render(
        request, "evalsite/invites.html", {"form": form, "link": link, "invites": invites}
    )


@login_not_required  # the invited person has no account yet
@require_http_methods(["GET", "POST"])
def invite_accept(request: HttpRequest, invite_token: str) -> HttpResponse:
    invite = Invite.objects.filter(token_hash=Invite.hash_token(invite_token)).first()
    if invite is None or not invite.is_usable:
        reason = "has been used" if invite and invite.used_at else "has expired or is not valid"
        return render(request, "evalsite/invite_accept.html", {"reason": reason}, status=410)
    form = InviteAcceptForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user = accept_invite(invite, data["username"], data["email"], data["password"])
        if user is None:
            return render(
                request, "evalsite/invite_accept.html", {"reason": "has been used"}, status=410
            )
        login(request, user, backend="evalsite.roles.RoleBackend")
        messages.success(request, f"Welcome, {user.username}: you are signed in as {invite.role}.")
        return redirect("dashboard")
    return render(request, "evalsite/invite_accept.html", {"form": form, "invite": invite})


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def user_password_reset(request: HttpRequest, user_id: int) -> HttpResponse:
    """An admin sets a new password for someone who lost theirs, and tells them out of band."""
    user = get_object_or_404(get_user_model(), pk=user_id)
    form = SetPasswordForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Set a new password for {user.username}.")
        return redirect("users")
    return render(request, "evalsite/user_password.html", {"form": form, "editing": user})


urlpatterns = [
    path("account/password/", password_change, name="password_change"),
    path("users/invites/", invite_list, name="invites"),
    path("invite/<str:invite_token>/", invite_accept, name="invite_accept"),
    path("users/<int:user_id>/password/", user_password_reset, name="user_password_reset"),
]
