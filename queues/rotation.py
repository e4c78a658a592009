"""Fair rotation between users, kept in ``user_queues`` so that every process shares it."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable

from django.db import connection, models
from django.db.models.expressions import RawSQL

from queues.models import UserQueue
from queues.wakeup import notify_work

_uuid_field = models.UUIDField()
_datetime_field = models.DateTimeField()

# Upsert that only ever moves ready_at earlier. It takes the user's row lock,
# so it waits for a claim that is deciding the user has no work, and wins
# after it: an activation is never lost to a concurrent deactivation.
_ACTIVATE_SQL = """
INSERT INTO user_queues (user_id, turn, ready_at, updated_at)
VALUES {values}
ON CONFLICT (user_id) DO UPDATE SET
    ready_at = CASE
        WHEN user_queues.ready_at IS NULL OR user_queues.ready_at > excluded.ready_at THEN excluded.ready_at
        ELSE user_queues.ready_at
    END,
    updated_at = excluded.updated_at
"""


# Turns are moments (microseconds since the epoch) read from the database's
# clock, so a host whose clock lags cannot keep its users at the front of the
# rotation, nor one running ahead send them to the back. One value per
# statement: every user a claim serves gets the same turn.
PG_TURN = "(extract(epoch FROM statement_timestamp()) * 1000000)::bigint"


def next_turn() -> int:
    """A turn number later than every turn handed out before (SQLite: the host's clock is the database's)."""
    return time.time_ns() // 1000


def _turn() -> int | RawSQL:
    # A constant expression, no input in it.
    return RawSQL(PG_TURN, ()) if connection.vendor == "postgresql" else next_turn()  # noqa: S611


def user_queue_activate(*, user_ids: Iterable[uuid.UUID], at: dt.datetime) -> None:
    """Users have work claimable from ``at``: put them in the rotation (an earlier ready_at stays).

    Call it in the same transaction that creates the work (new subtasks, a
    retry, a resume), after the work is written. Idle schedulers are woken
    when that transaction commits (queues.wakeup).
    """
    users = sorted(set(user_ids))
    if not users:
        return
    when = _datetime_field.get_db_prep_value(at, connection)
    params: list[object] = []
    for user_id in users:
        params += [_uuid_field.get_db_prep_value(user_id, connection), when, when]
    turn = PG_TURN if connection.vendor == "postgresql" else str(next_turn())
    values = ", ".join([f"(%s, {turn}, %s, %s)"] * len(users))
    with connection.cursor() as cursor:
        cursor.execute(_ACTIVATE_SQL.format(values=values), params)
    notify_work()


def user_queue_defer(*, user_id: uuid.UUID, ready_at: dt.datetime | None) -> None:
    """The user has nothing claimable now: wait until ``ready_at`` (None: out of the rotation).

    A deferred user goes to the back of the rotation, so that claims do not
    keep stepping over it while it waits.
    """
    UserQueue.objects.filter(user_id=user_id).update(ready_at=ready_at, turn=_turn())
