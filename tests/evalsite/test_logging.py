"""The server log: an ordinary refusal is one line; a real error keeps its traceback."""

from __future__ import annotations

import logging
import sys

from django.core.exceptions import PermissionDenied

from evalsite.log_filters import NoTracebackForRefusals


def _console_handler() -> logging.Handler:
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, NoTracebackForRefusals) for f in handler.filters)
    ]
    assert handlers, "the console handler lost its filter"
    return handlers[0]


def _record(status: int, error: Exception) -> logging.LogRecord:
    try:
        raise error
    except type(error):
        exc_info = sys.exc_info()
    record = logging.getLogger("django.request").makeRecord(
        "django.request", logging.WARNING, __file__, 1, "Forbidden: /x/", (), exc_info
    )
    record.status_code = status
    return record


def test_it_logs_a_403_without_a_traceback():
    handler = _console_handler()
    record = _record(403, PermissionDenied("scorers cannot see campaigns"))
    assert handler.filter(record)
    text = handler.format(record)
    assert "Forbidden: /x/" in text and "Traceback" not in text


def test_it_keeps_the_traceback_of_a_server_error():
    handler = _console_handler()
    record = _record(500, RuntimeError("a real bug"))
    assert handler.filter(record)
    assert "Traceback" in handler.format(record) and "a real bug" in handler.format(record)
