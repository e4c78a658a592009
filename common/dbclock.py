"""The database's clock: the one clock every process and host shares.

Moments compared across processes (claim leases, heartbeats, claim times,
rotation turns, the quota day, retry times) must come from here, never from
the host's own clock: a host whose clock is off by minutes would otherwise
see leases as ended, live workers as dead, or yesterday's quota day. A
process's own waits use ``time.monotonic()``.

SQLite has no server: every process shares the machine's clock, so the host's
clock is the database's clock there.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection
from django.utils import timezone


def db_now() -> dt.datetime:
    """The database server's current time (aware, UTC): one round trip on PostgreSQL."""
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        now = cursor.fetchone()[0]
    return now.astimezone(dt.timezone.utc)
