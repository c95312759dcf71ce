"""The three roles, as Django groups: scorer < lead < admin.

A role includes every role below it. Superusers count as admins. Views check roles with
``role_required``; templates read ``role`` from the context to build navigation only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

SCORER = "scorer"
LEAD = "lead"
ADMIN = "admin"
ROLES = (SCORER, LEAD, ADMIN)
_RANK = {None: 0, SCORER: 1, LEAD: 2, ADMIN: 3}


def role_of(user: AbstractBaseUser | AnonymousUser) -> str | None:
    """The highest role the user holds, or None. Cached on the user object for the request."""
    if not user.is_authenticated or not user.is_active:
        return None
    cached = getattr(user, "_mergeable_role", False)
    if cached is not False:
        return cached
    if user.is_superuser:
        role: str | None = ADMIN
    else:
        # groups.all(), not values_list: a list of users with prefetched groups costs no query.
        names = {group.name for group in user.groups.all()}
        role = max((r for r in ROLES if r in names), key=_RANK.__getitem__, default=None)
    user._mergeable_role = role  # type: ignore[union-attr]
    return role


def has_role(user: AbstractBaseUser | AnonymousUser, role: str) -> bool:
    return _RANK[role_of(user)] >= _RANK[role]


def role_required(role: str) -> Callable:
    """Require login (the middleware redirects anonymous users) and at least ``role``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            if not has_role(request.user, role):
                raise PermissionDenied(f"This page needs the {role} role.")
            return view(request, *args, **kwargs)

        wrapper.required_role = role  # type: ignore[attr-defined]
        return wrapper

    return decorator


def set_role(user, role: str | None) -> None:
    """Make ``role`` the user's only Mergeable role (None removes all). Staff follows admin."""
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    user.groups.remove(*Group.objects.filter(name__in=ROLES))
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    user.is_staff = role == ADMIN
    user.save(update_fields=["is_staff"])
    user.__dict__.pop("_mergeable_role", None)


def role_context(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    role = role_of(user) if user is not None else None
    return {
        "role": role,
        "is_scorer": _RANK[role] >= 1,
        "is_lead": _RANK[role] >= 2,
        "is_admin": _RANK[role] >= 3,
    }
