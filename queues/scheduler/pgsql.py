"""The scheduler's hot statements, hand-written for PostgreSQL.

Each claim and each batch of outcomes runs a handful of statements. Through
the ORM, building them (expression trees, one UPDATE per row group) cost more
CPU than sending the mail; here each step is one statement over arrays
(``unnest``), one round trip for a whole batch. The ORM versions in
claim.py/outcomes.py serve SQLite and define the same behaviour; the test
suite runs against both.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Sequence
from decimal import Decimal

import psycopg
from django.db import connection

from queues.scheduler import slots


def array(values: Sequence[object]) -> str:
    """A PostgreSQL array literal ('{...}'), passed as one text parameter and cast in SQL.

    psycopg adapts Python lists element by element in Python; for the few
    types used here building the literal directly is several times cheaper.
    """
    return "{" + ",".join(_element(v) for v in values) + "}"


def _element(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, uuid.UUID | int | float | Decimal):
        return str(value)
    text = value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _execute(sql: str, params: dict) -> list[tuple]:
    """Run one statement with server-side parameter binding.

    Django's cursors bind parameters client-side (quoting every array element
    in Python); these statements pass arrays of a whole batch, and psycopg
    prepares them after a few runs. Errors surface as Django's database
    errors, and the statement runs in Django's current transaction.
    """
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


# A rate-limited service is ready once its next free moment is within a
# claim's lead (its slots then follow on from the last claim's, with no gap).
# Readiness is judged by the database's clock (statement_timestamp(), like
# Django's Now()), so hosts with skewed clocks cannot break a sending_rate.
# The same bound as a parameter (the claim's moment, also read from the
# database) gives the planner a constant to estimate with. A service backed
# off after failures is not ready until its back-off ends, whatever moved
# next_available_at meanwhile.
READY_SERVICES_SQL = """
SELECT id, updated_at, from_email, daily_quota, used_quota, quota_date, sending_rate, consecutive_failures,
       next_available_at
FROM email_services
WHERE is_enabled AND daily_quota > 0
  AND (next_available_at IS NULL
       OR (next_available_at <= %(now)s + %(lead)s * interval '1 second'
           AND next_available_at <= statement_timestamp() + %(lead)s * interval '1 second'))
  AND (backoff_until IS NULL OR backoff_until <= statement_timestamp())
  AND (used_quota < daily_quota OR quota_date IS NULL OR quota_date < %(today)s)
ORDER BY used_quota, last_sent_at NULLS FIRST, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""


def ready_services(*, today: dt.date, limit: int, now: dt.datetime) -> list[tuple]:
    """The plan's ready-service query, in its order, locked; the columns of claim.ReadyService."""
    params = {"today": today, "limit": limit, "now": now, "lead": slots.SLOT_LEAD_SECONDS}
    return _execute(READY_SERVICES_SQL, params)


RESERVE_SQL = """
WITH starting AS (
    -- The claim's tasks that had not started sending yet: sending from now.
    UPDATE tasks SET status = 'sending', updated_at = %(now)s
    WHERE id = ANY(%(starting)s::uuid[]) AND status = 'pending'
), upd AS (
    UPDATE subtasks s
    SET status = 'allocated', service_id = v.service_id, sender_email = v.sender,
        claim_token = %(token)s, claimed_by = %(worker)s, claimed_at = %(now)s, updated_at = %(now)s
    FROM unnest(%(ids)s::uuid[], %(services)s::uuid[], %(senders)s::text[]) AS v(id, service_id, sender)
    WHERE s.id = v.id
    RETURNING s.id, s.task_id, s.owner_id, s.service_id, s.recipient_email, s.message_id, s.attempts, s.contact_id
)
SELECT upd.id, upd.task_id, upd.owner_id, upd.service_id, upd.recipient_email, upd.message_id, upd.attempts,
       upd.contact_id, c.email, c.first_name, c.last_name, c.attributes
FROM upd
-- LATERAL: one primary-key lookup per claimed row (a plain join may hash the whole table).
LEFT JOIN LATERAL (
    SELECT email, first_name, last_name, attributes FROM contacts WHERE contacts.id = upd.contact_id LIMIT 1
) c ON true
"""


def reserve(
    *,
    assignment: Sequence[tuple[uuid.UUID, uuid.UUID, str]],
    token: uuid.UUID,
    worker_id: str,
    now: dt.datetime,
    starting: Collection[uuid.UUID] = (),
) -> list[tuple]:
    """Mark (subtask, service, sender) rows allocated (and ``starting`` tasks sending); returns what a sender
    needs of each."""
    return _execute(
        RESERVE_SQL,
        {
            "ids": array([a[0] for a in assignment]),
            "services": array([a[1] for a in assignment]),
            "senders": array([a[2] for a in assignment]),
            "token": token,
            "worker": worker_id,
            "now": now,
            "starting": array(list(starting)),
        },
    )


# The picked subtasks whose recipient is on the owner's suppression list or
# the platform-wide one -> suppressed, with the list's reason. Two probes per
# row on the list's unique indexes ((owner_id, email), and email where owner_id
# IS NULL); the rows are already locked by the claim's pick.
SUPPRESS_SQL = """
UPDATE subtasks s
SET status = 'suppressed', updated_at = %(now)s,
    error_message = 'suppressed: ' || x.reason || CASE WHEN x.owner_id IS NULL THEN %(platform)s ELSE '' END
FROM unnest(%(ids)s::uuid[], %(owners)s::uuid[], %(emails)s::text[]) AS v(id, owner_id, email)
CROSS JOIN LATERAL (
    (SELECT reason, owner_id FROM suppressions WHERE owner_id = v.owner_id AND email = v.email)
    UNION ALL
    (SELECT reason, owner_id FROM suppressions WHERE owner_id IS NULL AND email = v.email)
    LIMIT 1
) x
WHERE s.id = v.id AND s.status = 'pending'
RETURNING s.id
"""


def suppress_picked(
    *,
    ids: Sequence[uuid.UUID],
    owners: Sequence[uuid.UUID],
    emails: Sequence[str],
    now: dt.datetime,
    platform_note: str,
) -> set[uuid.UUID]:
    """See SUPPRESS_SQL; ``emails`` lowercased as the list stores them. Returns the ids marked."""
    params = {"ids": array(ids), "owners": array(owners), "emails": array(emails), "now": now}
    params["platform"] = platform_note
    return {row[0] for row in _execute(SUPPRESS_SQL, params)}


# A quota day never goes back: a count already kept for a later day (another
# process in a later day of quota_timezone) stays that day's.
CHARGE_SQL = """
UPDATE email_services e
SET used_quota = CASE WHEN e.quota_date >= %(today)s THEN e.used_quota + v.n ELSE v.n END,
    quota_date = GREATEST(e.quota_date, %(today)s),
    next_available_at = COALESCE(v.next_free, e.next_available_at)
FROM unnest(%(ids)s::uuid[], %(ns)s::int[], %(next_free)s::timestamptz[]) AS v(id, n, next_free)
WHERE e.id = v.id
"""


def charge_services(*, charges: Sequence[tuple[uuid.UUID, int, dt.datetime | None]], today: dt.date) -> None:
    """Count claimed mails against the quota day; move rate-limited services past their slots."""
    _execute(
        CHARGE_SQL,
        {
            "ids": array([c[0] for c in charges]),
            "ns": array([c[1] for c in charges]),
            "next_free": array([c[2] for c in charges]),
            "today": today,
        },
    )


# What was claimed goes out only under the service's current settings: not
# through a service disabled since the claim, and not unspaced through one
# that had no sending rate at claim time and has one now.
START_SQL = """
UPDATE subtasks s SET status = 'processing', updated_at = statement_timestamp()
FROM tasks t, email_services e
WHERE s.id = ANY(%(ids)s::uuid[]) AND s.claim_token = %(token)s AND s.status = 'allocated'
  AND t.id = s.task_id AND t.status IN ('pending', 'sending')
  AND e.id = s.service_id AND e.is_enabled
  AND NOT (e.id = ANY(%(unlimited)s::uuid[]) AND COALESCE(e.sending_rate, %(default_rate)s) > 0)
RETURNING s.id
"""


def start(
    *, ids: Sequence[uuid.UUID], token: uuid.UUID, unlimited: Collection[uuid.UUID], default_rate: float
) -> set[uuid.UUID]:
    params = {"ids": array(ids), "token": token, "unlimited": array(list(unlimited)), "default_rate": default_rate}
    return {row[0] for row in _execute(START_SQL, params)}


SENT_SQL = """
UPDATE subtasks s
SET status = 'sent', sent_at = v.at, attempts = s.attempts + 1, error_message = '',
    claim_token = NULL, updated_at = %(now)s
FROM unnest(%(ids)s::uuid[], %(tokens)s::uuid[], %(ats)s::timestamptz[]) AS v(id, token, at)
WHERE s.id = v.id AND s.claim_token = v.token AND s.status IN ('allocated', 'processing')
RETURNING s.id
"""


def record_sent(*, rows: Sequence[tuple[uuid.UUID, uuid.UUID, dt.datetime]], now: dt.datetime) -> set[uuid.UUID]:
    """(subtask, claim token, sent at) -> sent, compare-and-set on the token; returns the ids applied."""
    params = {
        "ids": array([r[0] for r in rows]),
        "tokens": array([r[1] for r in rows]),
        "ats": array([r[2] for r in rows]),
        "now": now,
    }
    return {row[0] for row in _execute(SENT_SQL, params)}


# Written at most once per attempt id (a retried write inserts nothing), and
# never against a subtask deleted meanwhile (its task or owner was deleted
# with the mail in flight): such a row would fail the whole batch on the
# foreign key. A service deleted meanwhile leaves the service empty.
ATTEMPTS_SQL = """
WITH v AS (
    SELECT v.*, EXISTS (SELECT 1 FROM subtasks s WHERE s.id = v.subtask_id) AS subtask_exists
    FROM unnest(%(ids)s::uuid[], %(subtasks)s::uuid[], %(services)s::uuid[], %(started)s::timestamptz[],
                %(finished)s::timestamptz[], %(outcomes)s::text[], %(codes)s::int[], %(replies)s::text[],
                %(bounces)s::text[])
         AS v(id, subtask_id, service_id, started_at, finished_at, outcome, code, reply, bounce)
), inserted AS (
    INSERT INTO send_attempts
        (id, subtask_id, service_id, worker_id, started_at, finished_at, outcome, smtp_code, smtp_reply,
         bounce_class)
    SELECT v.id, v.subtask_id, (SELECT e.id FROM email_services e WHERE e.id = v.service_id), %(worker)s,
           v.started_at, v.finished_at, v.outcome, v.code, v.reply, v.bounce
    FROM v WHERE v.subtask_exists
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT id FROM inserted
UNION ALL
SELECT id FROM v WHERE NOT v.subtask_exists
"""


def insert_attempts(*, rows: Sequence[tuple], worker_id: str) -> set[uuid.UUID]:
    """rows: (id, subtask, service, started, finished, outcome, code, reply, bounce class).

    Returns the ids applied by this statement: rows inserted now, and rows
    of subtasks that no longer exist (nothing to insert, nothing done before).
    """
    columns = list(zip(*rows, strict=True))
    names = ("ids", "subtasks", "services", "started", "finished", "outcomes", "codes", "replies", "bounces")
    params = {name: array(values) for name, values in zip(names, columns, strict=True)}
    params["worker"] = worker_id
    return {row[0] for row in _execute(ATTEMPTS_SQL, params)}


SERVICE_STATS_SQL = """
UPDATE email_services e
SET total_sent = e.total_sent + v.ok,
    total_failed = e.total_failed + v.failed,
    success_rate = LEAST(GREATEST(ROUND(
        CASE WHEN e.total_sent + e.total_failed = 0 THEN v.batch_rate
             ELSE e.success_rate * v.keep + v.batch_rate * (1 - v.keep) END, 2), 0), 100),
    avg_response_time = ROUND(CASE WHEN e.total_sent + e.total_failed = 0 THEN v.mean_ms
                                   ELSE e.avg_response_time * v.keep + v.mean_ms * (1 - v.keep) END),
    last_sent_at = CASE WHEN v.last_ok IS NOT NULL THEN statement_timestamp() ELSE e.last_sent_at END,
    consecutive_failures = CASE WHEN v.last_ok IS NOT NULL THEN v.trail
                                ELSE e.consecutive_failures + v.faults END,
    backoff_level = CASE WHEN v.last_ok IS NOT NULL THEN 0 ELSE e.backoff_level END,
    backoff_until = CASE WHEN v.last_ok IS NOT NULL THEN NULL ELSE e.backoff_until END,
    next_available_at = CASE
        -- Rate slots spaced these sends when they were claimed. Claimed
        -- without a rate; if one was set since, space from this send (never earlier).
        WHEN v.unspaced AND COALESCE(e.sending_rate, %(default_rate)s) > 0 THEN GREATEST(
            e.next_available_at,
            statement_timestamp() + COALESCE(e.sending_rate, %(default_rate)s) * interval '1 second')
        ELSE e.next_available_at END
FROM unnest(%(ids)s::uuid[], %(ok)s::int[], %(failed)s::int[], %(batch_rate)s::numeric[], %(keep)s::numeric[],
            %(mean_ms)s::numeric[], %(last_ok)s::timestamptz[], %(trail)s::int[], %(faults)s::int[],
            %(unspaced)s::bool[])
     AS v(id, ok, failed, batch_rate, keep, mean_ms, last_ok, trail, faults, unspaced)
WHERE e.id = v.id
RETURNING e.id, e.name, e.consecutive_failures
"""


def update_service_stats(*, rows: Sequence[dict], default_rate: float) -> list[tuple[uuid.UUID, str, int]]:
    """One statement for every service of a batch; see outcomes.ServiceBatch for the fields."""
    keys = ("ids", "ok", "failed", "batch_rate", "keep", "mean_ms", "last_ok", "trail", "faults", "unspaced")
    params: dict[str, object] = {key: array([row[key] for row in rows]) for key in keys}
    params["default_rate"] = default_rate
    return _execute(SERVICE_STATS_SQL, params)


# Compare-and-set on the status, in one statement for the whole set: a
# concurrent pause, cancel or retry wins, and a task finishes once.
FINISH_TASKS_SQL = """
UPDATE tasks t
SET status = CASE WHEN EXISTS (SELECT 1 FROM subtasks s WHERE s.task_id = t.id AND s.status = 'sent')
                    -- Nothing to deliver (every recipient suppressed) is no failure.
                    OR (EXISTS (SELECT 1 FROM subtasks s WHERE s.task_id = t.id AND s.status = 'suppressed')
                        AND NOT EXISTS (SELECT 1 FROM subtasks s WHERE s.task_id = t.id AND s.status = 'failed'))
                  THEN 'completed' ELSE 'failed' END,
    completed_at = %(now)s, updated_at = %(now)s
WHERE t.id = ANY(%(ids)s::uuid[]) AND t.status IN ('pending', 'sending')
  AND NOT EXISTS (
      SELECT 1 FROM subtasks s
      WHERE s.task_id = t.id AND s.status IN ('pending', 'allocated', 'processing', 'parked')
  )
RETURNING t.id
"""


def finish_tasks(ids: Sequence[uuid.UUID], now: dt.datetime) -> list[uuid.UUID]:
    """Runnable tasks among ``ids`` whose every subtask is terminal -> completed (any sent, or some
    suppressed and none failed) or failed."""
    return [row[0] for row in _execute(FINISH_TASKS_SQL, {"ids": array(list(ids)), "now": now})]


# Of several workers recording the same task's first send, exactly one
# changes the row (compare-and-set on the status) and gets it back.
FIRST_SENDS_SQL = """
UPDATE task_wait_metrics m
SET status = 'processing', first_send_time = v.at,
    wait_duration_seconds = GREATEST(0, floor(extract(epoch FROM v.at - m.queue_entry_time)))::int
FROM unnest(%(tasks)s::uuid[], %(ats)s::timestamptz[]) AS v(task_id, at)
WHERE m.task_id = v.task_id AND m.status = 'waiting'
RETURNING m.task_id, m.wait_duration_seconds, m.user_id
"""


def record_first_sends(sends: Sequence[tuple[uuid.UUID, dt.datetime]]) -> list[tuple[uuid.UUID, int, uuid.UUID]]:
    """(task, first send) -> the waiting metrics recorded; returns (task, wait seconds, user) of each."""
    params = {"tasks": array([s[0] for s in sends]), "ats": array([s[1] for s in sends])}
    return _execute(FIRST_SENDS_SQL, params)


# Users the rotation found without claimable work, all in one statement: each
# waits until its earliest pending subtask falls due (not before its task's
# scheduled start), or leaves the rotation when it has none; and goes to the
# back. One index probe per runnable task (its earliest pending subtask).
DEFER_USERS_SQL = """
UPDATE user_queues q
SET turn = {turn},
    ready_at = (
        SELECT min(GREATEST(f.first, t.scheduled_at))
        FROM tasks t
        CROSS JOIN LATERAL (
            SELECT s.next_attempt_at AS first FROM subtasks s
            WHERE s.task_id = t.id AND s.status = 'pending'
            ORDER BY s.next_attempt_at LIMIT 1
        ) f
        WHERE t.owner_id = q.user_id AND t.status IN ('pending', 'sending')
    )
WHERE q.user_id = ANY(%(ids)s::uuid[])
"""


def defer_users(ids: Sequence[uuid.UUID], turn_sql: str) -> None:
    """See DEFER_USERS_SQL; ``turn_sql`` is rotation.PG_TURN (a constant expression)."""
    _execute(DEFER_USERS_SQL.replace("{turn}", turn_sql), {"ids": array(list(ids))})


DONE_TASKS_SQL = """
SELECT t.id FROM tasks t
WHERE t.id = ANY(%(ids)s::uuid[]) AND t.status IN ('pending', 'sending')
  AND NOT EXISTS (
      SELECT 1 FROM subtasks s
      WHERE s.task_id = t.id AND s.status IN ('pending', 'allocated', 'processing', 'parked')
  )
"""


def done_tasks(ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Runnable tasks among ``ids`` whose every subtask is terminal."""
    return [row[0] for row in _execute(DONE_TASKS_SQL, {"ids": array(list(ids))})]
