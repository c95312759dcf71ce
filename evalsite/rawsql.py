"""Helpers for the few statements written as SQL rather than built by the ORM."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from django.db import connection, models


class Loader:
    """How a written-out SELECT reads one model: `columns`, its select list, and `load`, the
    instance the ORM would make of a row's values.

    Columns are named (PostgreSQL keeps a prepared statement's plan for the connection, and a
    `*` in it would fail once a migration adds a column). Each field's database converters are
    applied as the ORM applies them (JSON decoded; SQLite's dates, decimals and booleans), and
    the fields not in `names` (all, by default) are deferred, as `only()` leaves them. Made once
    per statement, not per query: Django's raw() works out the same column mapping and
    converters again on every call, at more CPU than a small query costs to run.
    """

    def __init__(self, model: type[models.Model], alias: str = "", names: Sequence[str] = ()):
        chosen = [model._meta.get_field(name) for name in names] or model._meta.concrete_fields
        # In the model's order of fields, which `from_db` expects.
        fields = [field for field in model._meta.concrete_fields if field in chosen]
        prefix = f"{alias}." if alias else ""
        self.model = model
        self.columns = ", ".join(prefix + connection.ops.quote_name(f.column) for f in fields)
        self.width = len(fields)
        self._attnames = [field.attname for field in fields]
        self._converting = []
        for index, field in enumerate(fields):
            column = field.get_col(alias or model._meta.db_table)
            found = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
            if found:
                self._converting.append((index, column, found))

    def load(self, values: Sequence) -> models.Model:
        values = list(values)
        for index, column, converters in self._converting:
            for convert in converters:
                values[index] = convert(values[index], column, connection)
        return self.model.from_db(connection.alias, self._attnames, values)

    def all(self, statement: str, params: Sequence, extra: Sequence[str] = ()) -> list:
        """The instances of the statement's rows, whose first values are `columns`; the values
        after them are set on each instance as the attributes `extra`."""
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            rows = cursor.fetchall()
        loaded = []
        for row in rows:
            instance = self.load(row[: self.width])
            for name, value in zip(extra, row[self.width :], strict=True):
                setattr(instance, name, value)
            loaded.append(instance)
        return loaded

    def first(self, statement: str, params: Sequence, extra: Sequence[str] = ()):
        """The instance of the statement's first row (`all`), or None: for a statement of one
        row at most, such as a lookup by key (it reads every row)."""
        found = self.all(statement, params, extra)
        return found[0] if found else None


@functools.cache
def loader(model: type[models.Model], alias: str = "") -> Loader:
    """The Loader of every field of `model` read from table `alias`, made once."""
    return Loader(model, alias)
