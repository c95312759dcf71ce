"""The total upload limit: all the files of one request together, MERGEABLE_MAX_UPLOAD_MB.

Checked on the request's Content-Length before anything reads its body. It has to come first:
the CSRF check reads a form's body to find its token, and reading a multipart body writes each
file to memory or a temporary file. A refused upload is never read, so nothing of it is stored.
Django never reads more of a body than its Content-Length, so a request cannot declare a small
body and send a large one.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

_MB = 1024 * 1024


def upload_problem(request: HttpRequest) -> str:
    """Why the request's upload is refused, or "" when it is within the limit."""
    try:
        size = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return ""  # Django refuses the body itself
    limit = settings.MERGEABLE_MAX_UPLOAD_MB
    if size <= limit * _MB:
        return ""
    return (
        f"This upload is {size / _MB:.1f} MB; the files of one request may add up to at most "
        f"{limit} MB (MERGEABLE_MAX_UPLOAD_MB)."
    )


class UploadLimitMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if problem := upload_problem(request):
            return render(request, "413.html", {"problem": problem}, status=413)
        return self.get_response(request)
