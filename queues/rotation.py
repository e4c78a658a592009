"""Fair rotation between users, kept in ``user_queues`` so that every process shares it."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable

from django.db import connection, models

from queues.models import UserQueue

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


def next_turn() -> int:
    """A turn number later than every turn handed out before (microseconds since the epoch)."""
    return time.time_ns() // 1000


def user_queue_activate(*, user_ids: Iterable[uuid.UUID], at: dt.datetime) -> None:
    """Users have work claimable from ``at``: put them in the rotation (an earlier ready_at stays).

    Call it in the same transaction that creates the work (new subtasks, a
    retry, a resume), after the work is written.
    """
    users = sorted(set(user_ids))
    if not users:
        return
    turn = next_turn()
    when = _datetime_field.get_db_prep_value(at, connection)
    params: list[object] = []
    for user_id in users:
        params += [_uuid_field.get_db_prep_value(user_id, connection), turn, when, when]
    values = ", ".join(["(%s, %s, %s, %s)"] * len(users))
    with connection.cursor() as cursor:
        cursor.execute(_ACTIVATE_SQL.format(values=values), params)


def user_queue_defer(*, user_id: uuid.UUID, ready_at: dt.datetime | None) -> None:
    """The user has nothing claimable now: wait until ``ready_at`` (None: out of the rotation).

    A deferred user goes to the back of the rotation, so that claims do not
    keep stepping over it while it waits.
    """
    UserQueue.objects.filter(user_id=user_id).update(ready_at=ready_at, turn=next_turn())
