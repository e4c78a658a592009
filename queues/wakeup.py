"""Telling idle schedulers that work has become claimable (PostgreSQL LISTEN/NOTIFY).

Whatever makes work claimable (a task created, resumed or retried, subtasks
given back, a service enabled) calls ``notify_work`` in its own transaction.
PostgreSQL delivers the notification when that transaction commits, never
before, so a scheduler woken by it always finds the work. An idle scheduler
waits on ``WorkListener`` instead of sleeping out its poll: a new task's
first mail leaves at once, not up to ``no_work_sleep_seconds`` later.

The poll stays the fallback: notifications are a hint, never the only way
work is found. A listener whose connection is lost (a database restart)
says so in the log, polls, and listens again as soon as it can connect.
SQLite has no notifications: there, schedulers poll.
"""

from __future__ import annotations

import logging
import select
import time

from django.db import connection

logger = logging.getLogger("queues.scheduler")

CHANNEL = "edm_work"
LISTENER_APPLICATION_NAME = "edm-scheduler-listener"
RECONNECT_SECONDS = 2.0  # between attempts to listen again after the connection was lost


def notify_work() -> None:
    """Wake idle schedulers when the current transaction commits (no-op without PostgreSQL).

    Notifications of one transaction on one channel with one payload are
    folded into one by PostgreSQL, so calling this more than once costs nothing more.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])


class WorkListener:
    """A dedicated connection that LISTENs for ``notify_work``; ``wait`` returns early when notified."""

    def __init__(self) -> None:
        self._conn = None
        self._next_attempt = 0.0
        self._lost = False

    @property
    def listening(self) -> bool:
        return self._conn is not None

    def wait(self, timeout: float, sleep) -> bool:
        """Wait up to ``timeout`` seconds for a notification; True when one came (or may have been missed).

        ``sleep(seconds)`` waits when there is nothing to listen on (not
        connected yet, or the connection was lost): the caller's poll.
        """
        if self._conn is None:
            if not self._connect():
                sleep(timeout)
                return False
            # Anything committed while nobody listened was missed: look for work once.
            return True
        if self._drain():
            return True
        try:
            readable, _, _ = select.select([self._conn.fileno()], [], [], max(0.0, timeout))
        except (OSError, ValueError) as exc:
            self._lose(exc)
            return False
        return bool(readable) and self._drain()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection is best effort
                logger.debug("closing the listener's connection failed")
            self._conn = None

    def _drain(self) -> bool:
        """Consume the notifications received so far; True if there was any. Loses the connection on error."""
        import psycopg

        try:
            # A zero timeout reads what the socket holds and returns: it never blocks.
            return any(True for _ in self._conn.notifies(timeout=0))
        except psycopg.Error as exc:
            self._lose(exc)
            return False

    def _connect(self) -> bool:
        import psycopg

        now = time.monotonic()
        if now < self._next_attempt:
            return False
        self._next_attempt = now + RECONNECT_SECONDS
        try:
            connection.ensure_connection()  # settings (and their errors) exactly as Django connects
            params = connection.get_connection_params()
            params.pop("cursor_factory", None)
            params.pop("context", None)
            params["application_name"] = LISTENER_APPLICATION_NAME
            conn = psycopg.connect(**params, autocommit=True)
            conn.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:  # the poll goes on; retried after RECONNECT_SECONDS
            if not self._lost:
                logger.warning("cannot listen for new work, polling", extra={"error": str(exc).strip()})
                self._lost = True
            return False
        self._conn = conn
        if self._lost:
            logger.warning("listening for new work again")
        else:
            logger.info("listening for new work", extra={"channel": CHANNEL})
        self._lost = False
        return True

    def _lose(self, exc: Exception) -> None:
        logger.warning(
            "lost the connection listening for new work: polling until it is back",
            extra={"error": str(exc).strip()},
        )
        self.close()
        self._lost = True
        self._next_attempt = time.monotonic() + RECONNECT_SECONDS
