"""Helpers for the few statements written as SQL rather than built by the ORM."""

from __future__ import annotations

from django.db import connection, models


def columns(model: type[models.Model], alias: str = "") -> str:
    """The model's columns for a raw SELECT, by name: PostgreSQL keeps a prepared statement's
    plan for the connection, and a `*` in it would fail once a migration adds a column."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(
        prefix + connection.ops.quote_name(f.column) for f in model._meta.concrete_fields
    )
