"""Migration operations that behave per database vendor.

The project runs on PostgreSQL in production and on an embedded SQLite file
by default. Some schema steps only make sense on one of them (GIN indexes,
``CREATE INDEX CONCURRENTLY``); these operations keep one migration history
for both.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState


class RunSQLPerVendor(Operation):
    """Run raw SQL picked by ``connection.vendor``; the model state is untouched.

    Used for database objects that the ORM cannot declare portably (a GIN
    index on PostgreSQL, say). A vendor without an entry runs nothing.
    """

    reduces_to_sql = True
    reversible = True

    def __init__(
        self,
        forwards: dict[str, Sequence[str]],
        backwards: dict[str, Sequence[str]],
        *,
        description: str,
    ) -> None:
        self.forwards = {vendor: list(sql) for vendor, sql in forwards.items()}
        self.backwards = {vendor: list(sql) for vendor, sql in backwards.items()}
        self.description = description

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        for statement in self.forwards.get(schema_editor.connection.vendor, ()):
            schema_editor.execute(statement, params=None)

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        for statement in self.backwards.get(schema_editor.connection.vendor, ()):
            schema_editor.execute(statement, params=None)

    def describe(self) -> str:
        return self.description


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    """``AddIndex`` that builds with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL.

    A live table keeps taking writes while the index builds. The migration
    that uses it must set ``atomic = False``. On SQLite the index is built
    plainly. If an earlier concurrent build was interrupted it left an
    INVALID index of the same name behind; that one is dropped and rebuilt.
    A valid index of that name (created by hand from the plan's SQL before
    adopting the migrations) is kept as it is.
    """

    def __init__(self, model_name: str, index, *, sqlite_sql: str | None = None) -> None:
        # sqlite_sql: the index as SQLite can have it, where the declaration
        # uses something SQLite lacks (NULLS FIRST in an index, say).
        super().__init__(model_name, index)
        self.sqlite_sql = sqlite_sql

    def deconstruct(self):
        name, args, kwargs = super().deconstruct()
        if self.sqlite_sql is not None:
            kwargs["sqlite_sql"] = self.sqlite_sql
        return name, args, kwargs

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        connection = schema_editor.connection
        if connection.vendor == "sqlite" and self.sqlite_sql is not None:
            schema_editor.execute(self.sqlite_sql)
            return
        if connection.vendor != "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        if connection.in_atomic_block:
            raise RuntimeError(f"{self.index.name}: set atomic = False on the migration to build it concurrently")
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        validity = _postgres_index_validity(schema_editor, self.index.name)
        if validity is True:
            return
        if validity is False:
            schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(self.index.name)}")
        schema_editor.add_index(model, self.index, concurrently=True)

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        connection = schema_editor.connection
        if connection.vendor == "sqlite" and self.sqlite_sql is not None:
            schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(self.index.name)}")
            return
        if connection.vendor != "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
            return
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(connection.alias, model):
            schema_editor.remove_index(model, self.index, concurrently=True)

    def describe(self) -> str:
        return f"Create index {self.index.name} on {self.model_name} (concurrently on PostgreSQL)"


def _postgres_index_validity(schema_editor: BaseDatabaseSchemaEditor, name: str) -> bool | None:
    """True/False for a valid/invalid index of that name in the current schema, None if absent."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.indisvalid
              FROM pg_class c
              JOIN pg_index i ON i.indexrelid = c.oid
             WHERE c.relname = %s AND c.relnamespace = current_schema()::regnamespace
            """,
            [name],
        )
        row = cursor.fetchone()
    return None if row is None else bool(row[0])
