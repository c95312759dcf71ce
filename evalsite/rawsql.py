"""Helpers for the few statements written as SQL rather than built by the ORM."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.db import connection, models


def columns(model: type[models.Model], alias: str = "") -> str:
    """The model's columns for a raw SELECT, by name: PostgreSQL keeps a prepared statement's
    plan for the connection, and a `*` in it would fail once a migration adds a column."""
    return _column_list(model._meta.concrete_fields, alias)


def _column_list(fields: Sequence[models.Field], alias: str) -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + connection.ops.quote_name(field.column) for field in fields)


def loader(
    model: type[models.Model], alias: str, names: Sequence[str] = ()
) -> tuple[str, int, Callable[[Sequence], models.Model]]:
    """For a written-out SELECT that reads the model's fields `names` (every field by default)
    from table `alias`: their columns, how many, and `load(values)`, the instance the ORM would
    make of those values (each field's database converters applied: JSON decoded, SQLite's
    dates and booleans); fields not read are deferred, as `only()` leaves them."""
    fields = [model._meta.get_field(name) for name in names] or model._meta.concrete_fields
    # In the model's order of fields, which `from_db` expects.
    fields = [f for f in model._meta.concrete_fields if f in fields]
    attnames = [field.attname for field in fields]
    converting = []
    for index, field in enumerate(fields):
        column = field.get_col(alias)
        found = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
        if found:
            converting.append((index, column, found))

    def load(values: Sequence) -> models.Model:
        values = list(values)
        for index, column, converters in converting:
            for convert in converters:
                values[index] = convert(values[index], column, connection)
        return model.from_db(connection.alias, attnames, values)

    return _column_list(fields, alias), len(fields), load
