"""Who is calling the token API, whether they may, and how a refusal reads.

Every request carries ``Authorization: Bearer <token>``. The token acts as its user with the
role the user holds now (evalsite/roles.py): an admin who demotes a user demotes their tokens
too. Each operation names its least role with `@requires`, exactly as the matching page does
with `role_required`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, JsonResponse
from ninja.security import HttpBearer

from api import throttle, tokens
from evalsite.roles import ROLES, has_role


class ApiError(Exception):
    """A refusal: its status, its message, and the field it is about (None: the whole request)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = [{"field": field, "message": message}]

    @classmethod
    def for_fields(cls, status: int, errors: list[dict]) -> ApiError:
        error = cls(status, errors[0]["message"] if errors else "Invalid request")
        error.errors = errors
        return error


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many requests: try again in {retry_after} s.")
        self.retry_after = retry_after


def error_response(status: int, errors: list[dict], headers: dict | None = None) -> JsonResponse:
    """Every error of the API: ``{"errors": [{"field": name or null, "message": text}]}``."""
    return JsonResponse({"errors": errors}, status=status, headers=headers)


class TokenAuth(HttpBearer):
    """A valid token, within its rate, whose user holds at least `role`. Checked before the
    request's parameters are read: a caller without the role learns nothing about them."""

    def __init__(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        super().__init__()
        self.role = role

    def authenticate(self, request: HttpRequest, token: str):
        row = tokens.authenticate(token)
        if row is None:
            return None  # ninja answers 401
        wait = throttle.retry_after(row.pk)
        if wait is not None:
            raise RateLimited(wait)
        request.user = row.user
        if not has_role(row.user, self.role):
            raise ApiError(
                403, f"This needs the {self.role} role; the token's user does not hold it."
            )
        return row


def schema_access(view: Callable) -> Callable:
    """The OpenAPI schema is for anyone with a role: a signed-in user, or a valid token."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            row = tokens.authenticate(header[7:])
            if row is None:
                return error_response(
                    401, [{"field": "Authorization", "message": "Unknown or revoked token."}]
                )
            request.user = row.user
        if not has_role(request.user, ROLES[0]):
            return error_response(
                401 if not request.user.is_authenticated else 403,
                [
                    {
                        "field": "Authorization",
                        "message": "Sign in or send a token to read the schema.",
                    }
                ],
            )
        return view(request, *args, **kwargs)

    return wrapper
