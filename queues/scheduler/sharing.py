"""The thread that keeps this process's connections within its share of each service.

Every few hundred milliseconds, and at once when mail is waiting for a
connection its service's share does not allow, it renews the process's grants
(queues.scheduler.connections) with what the pool uses and wants, and applies
the result to the pool (queues.scheduler.pool). If renewals keep failing (the
database is unreachable) until the last grant's ``valid_until``, the pool's
share drops to nothing: idle connections close at once, busy ones as their
sends end, and no new one opens; others may take the share after that.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

from django.db import DatabaseError, connection

from queues.scheduler.connections import ConnectionGrants
from queues.scheduler.pool import ConnectionPools
from queues.scheduler.transports import ServiceConfig

logger = logging.getLogger(__name__)

RENEW_SECONDS = 0.5  # renewal period while nothing asks for more
MIN_RENEW_SECONDS = 0.1  # never more often than this, even when asked: each change may close connections
IDLE_CLOSE_SECONDS = 30.0  # an idle connection is closed (and its share freed) after this


class ShareKeeper:
    def __init__(
        self,
        *,
        worker_id: str,
        pools: ConnectionPools,
        waiting: Callable[[], list[ServiceConfig]],
        on_change: Callable[[], None],
        stop: threading.Event,
    ) -> None:
        self.grants = ConnectionGrants(worker_id)
        self._pools = pools
        self._waiting = waiting  # the services of the mails waiting for a connection, one entry per mail
        self._on_change = on_change
        self._stop = stop
        self._asked = threading.Event()

    def ask(self) -> None:
        """Mail is waiting for a connection its share does not allow: renew soon."""
        self._asked.set()

    def run(self) -> None:
        failing = False
        try:
            while not self._stop.is_set():
                self._asked.wait(RENEW_SECONDS)
                self._asked.clear()
                started = time.monotonic()
                try:
                    self.renew()
                    if failing:
                        logger.info("connection shares renewed again")
                    failing = False
                except DatabaseError as exc:
                    if not failing:
                        logger.warning("cannot renew connection shares", extra={"error": str(exc).strip()})
                    failing = True
                    self._pools.freeze()
                    connection.close()
                if time.monotonic() >= self.grants.valid_until:
                    self._pools.set_allowed({})  # the share lapsed: others may take it now
                    self._on_change()
                self._stop.wait(max(0.0, MIN_RENEW_SECONDS - (time.monotonic() - started)))
        finally:
            connection.close()

    def renew(self) -> None:
        self._pools.close_idle(IDLE_CLOSE_SECONDS)
        waiting: dict[uuid.UUID, tuple[ServiceConfig, int]] = {}
        counts = Counter()
        for service in self._waiting():
            counts[service.id] += 1
            waiting[service.id] = (service, counts[service.id])
        self._pools.set_waiting(waiting)
        wanted, holding = self._pools.demand()
        allowed = self.grants.renew(wanted, holding)
        self._pools.set_allowed(allowed, self.grants.closed)
        self._on_change()

    def release(self) -> None:
        """At shutdown, once every connection is closed."""
        try:
            self.grants.release_all()
        except DatabaseError:
            logger.warning("could not release connection shares: they expire on their own")
        finally:
            connection.close()
