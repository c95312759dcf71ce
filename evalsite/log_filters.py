"""Filters for the site's logs."""

from __future__ import annotations

import logging

EXPECTED_STATUSES = (401, 403, 404, 405, 410)


class NoTracebackForRefusals(logging.Filter):
    """Keep the one-line warning for a refused or missing page, drop its traceback: a scorer
    opening a lead's page is ordinary, and a traceback per refusal buries the real errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) in EXPECTED_STATUSES:
            record.exc_info = None
            record.exc_text = None
        return True
