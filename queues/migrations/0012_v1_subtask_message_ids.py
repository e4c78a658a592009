"""Give every subtask that came from V1 its Message-ID.

0003 added ``message_id`` empty on existing rows; V2 creates each subtask
with ``<id hex@EDM_MESSAGE_ID_DOMAIN>`` (queues.services.message_id_for), and
the scheduler sends whatever the row holds. One set-based UPDATE per vendor,
so a large V1 table is not walked row by row. Going back keeps the IDs:
V1 never read the column, which 0003's reverse drops anyway.
"""

from django.conf import settings
from django.db import migrations

SQL = {
    # UUIDs are a native type on PostgreSQL and 32 hex characters on SQLite.
    "postgresql": "UPDATE subtasks SET message_id = '<' || replace(id::text, '-', '') || '@' || %s || '>' "
    "WHERE message_id = ''",
    "sqlite": "UPDATE subtasks SET message_id = '<' || lower(id) || '@' || %s || '>' WHERE message_id = ''",
}


def fill_message_ids(apps, schema_editor) -> None:
    sql = SQL.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql, params=[settings.EDM_MESSAGE_ID_DOMAIN])


class Migration(migrations.Migration):
    dependencies = [("queues", "0011_in_flight_index")]

    operations = [migrations.RunPython(fill_message_ids, migrations.RunPython.noop, elidable=False)]
