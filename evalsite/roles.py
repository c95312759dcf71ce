"""The three roles, as Django groups: scorer < lead < admin.

A role includes every role below it. Superusers count as admins. Views check roles with
``role_required``; templates read ``role`` from the context to build navigation only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import wraps

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from evalsite.rawsql import Loader, loader

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
    elif hasattr(user, "role_group"):  # loaded by user_with_role
        role = user.role_group
    else:
        # groups.all(), not values_list: a list of users with prefetched groups costs no query.
        names = {group.name for group in user.groups.all()}
        role = max((r for r in ROLES if r in names), key=_RANK.__getitem__, default=None)
    user._mergeable_role = role  # type: ignore[union-attr]
    return role


@functools.cache
def _user_with_role_statement() -> tuple[str, Loader]:
    # By SQL written once: the ORM's subquery and CASE, built again on every page, cost more
    # CPU than the query they would save. With the loader of the users' alias it reads.
    user_model = get_user_model()
    users = loader(user_model, "u")
    groups = user_model.groups.through._meta.db_table
    group = Group._meta.db_table
    rank = " ".join(f"WHEN '{role}' THEN {_RANK[role]}" for role in ROLES)
    names = ", ".join(f"'{role}'" for role in ROLES)
    statement = f"""
        SELECT {users.columns}, (
            SELECT g.name FROM {group} g INNER JOIN {groups} ug ON ug.group_id = g.id
            WHERE ug.user_id = u.id AND g.name IN ({names})
            ORDER BY CASE g.name {rank} END DESC LIMIT 1
        ) AS role_group
        FROM {user_model._meta.db_table} u WHERE u.id = %s"""
    return statement, users


def user_with_role(user_id) -> AbstractBaseUser | None:
    """The user, with the highest of their role groups (as ``role_group``, which role_of reads)
    read in the same query; None if there is no such user."""
    statement, users = _user_with_role_statement()
    return users.first(statement, [user_id], extra=["role_group"])


class RoleBackend(ModelBackend):
    """Django's ModelBackend, but the user a session names is loaded with their role: one query
    on every page rather than two.

    ModelBackend stays listed after this one for the sessions it signed in before (a session
    names its backend). So that it never hashes a wrong password a second time, a password
    checked here and found wrong ends the attempt.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username, password, **kwargs)
        if user is None and username is not None and password is not None:
            raise PermissionDenied  # Django then reports the failed login, as for a None
        return user

    def get_user(self, user_id):
        user = user_with_role(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None


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
    user.__dict__.pop("role_group", None)


def role_context(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    role = role_of(user) if user is not None else None
    return {
        "role": role,
        "is_scorer": _RANK[role] >= 1,
        "is_lead": _RANK[role] >= 2,
        "is_admin": _RANK[role] >= 3,
    }
