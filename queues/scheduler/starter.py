"""allocated -> processing just before the senders take the mails up.

``processing`` means "the SMTP conversation may have started": recovery treats
it as an unknown outcome (retried after three socket timeouts with the same
Message-ID, or parked), while ``allocated`` is always safe to retry at once.
So a claimed batch stays ``allocated`` while it waits in the process; this
thread marks mails ``processing`` a few at a time, keeping just enough ready
for the senders (``depth``, the number of senders) that they never wait for
the database. What a crashed worker leaves ``processing`` is therefore at most
its sends under way, the mails queued right behind them and the outcomes not
yet recorded, whatever the claim batch size.

Two more things hold a mail here: its service's connections (``admit``: a
permit of the connection pool, so no more mails go to the senders than the
service's connections can take) and its rate slot (``not_before``: a mail of
a rate-limited service goes to a sender just before its slot, not a second
early, so it neither occupies a sender nor sits in ``processing`` meanwhile).
A mail that can no longer start (``expired``: its slot passed while it waited
for a connection, its service was disabled) is given back at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connection

from queues.scheduler.claim import claims_start

logger = logging.getLogger(__name__)


class SendStarter:
    """``stage()`` claimed work; ``run()`` (a thread) hands it to ``ready`` once marked processing.

    Work whose task was paused or cancelled since the claim, or whose claim
    recovery took back, goes to ``release`` instead, as does everything still
    staged when ``stopping()`` turns true. ``close()`` lets the thread finish
    what is staged and return.
    """

    def __init__(
        self,
        *,
        ready: queue.Queue,
        depth: int,
        release: Callable[[Any], None],
        stopping: Callable[[], bool],
        admit: Callable[[Any], bool] = lambda work: True,
        unadmit: Callable[[Any], None] = lambda work: None,
        not_before: Callable[[Any], float | None] = lambda work: None,
        service_of: Callable[[Any], Any] = lambda work: None,
        expired: Callable[[Any], bool] = lambda work: False,
    ) -> None:
        self.ready = ready
        self.depth = max(1, depth)
        self._release = release
        self._stopping = stopping
        self._admit = admit
        self._unadmit = unadmit
        self._not_before = not_before
        self._service_of = service_of
        self._expired = expired
        self._staged: deque[Any] = deque()
        self._changed = threading.Condition()
        self._closing = False

    def stage(self, work: Any) -> None:
        with self._changed:
            self._staged.append(work)
            self._changed.notify()

    def staged(self) -> list[Any]:
        with self._changed:
            return list(self._staged)

    def wake(self) -> None:
        """A sender took work from ``ready``, or a connection came free: there may be room for more."""
        with self._changed:
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify()

    def run(self) -> None:
        try:
            while True:
                batch, released = self._next_batch()
                for work in released:
                    self._release(work)
                if batch:
                    self._start(batch)
                elif batch is None:
                    return
        finally:
            connection.close()

    def _next_batch(self) -> tuple[list[Any] | None, list[Any]]:
        """(work to mark now, work to give back); (None, …) once closed and empty."""
        with self._changed:
            while True:
                if self._stopping() and self._staged:
                    released = list(self._staged)
                    self._staged.clear()
                    return [], released
                if self._closing and not self._staged:
                    return None, []
                # What can no longer start (its slot passed, its lease ran out, its service was
                # disabled) goes back now: waiting here for a connection it will never get would
                # hold this process's claims back too.
                expired = [work for work in self._staged if self._expired(work)]
                if expired:
                    gone = {id(work) for work in expired}
                    self._staged = deque(work for work in self._staged if id(work) not in gone)
                    return [], expired
                room = self.depth - self.ready.qsize()
                wait = 0.5
                # Refill by half the depth at a time (fewer, larger updates, and
                # the senders still find work ready), except for a rate slot
                # coming due: that one goes at once.
                if self._staged and (room >= max(1, self.depth // 2) or (room > 0 and self._closing)):
                    batch, wait = self._admissible(room)
                    if batch:
                        return batch, []
                elif self._staged and room > 0:
                    batch, wait = self._admissible(room, slots_only=True)
                    if batch:
                        return batch, []
                self._changed.wait(timeout=wait)

    def _admissible(self, room: int, *, slots_only: bool = False) -> tuple[list[Any], float]:
        """Up to ``room`` staged mails whose slot is near and whose service has a connection free, in
        staged order; and how long until the next slot comes near."""
        now = time.monotonic()
        batch: list[Any] = []
        keep: deque[Any] = deque()
        wait = 0.5
        full: set[Any] = set()  # services that refused a permit in this pass
        for work in self._staged:
            if len(batch) >= room:
                keep.append(work)
                continue
            at = self._not_before(work)
            if at is None and slots_only:
                keep.append(work)
            elif at is not None and at > now:
                wait = min(wait, at - now)
                keep.append(work)
            elif self._service_of(work) in full:
                keep.append(work)
            elif self._admit(work):
                batch.append(work)
            else:
                full.add(self._service_of(work))
                keep.append(work)
        self._staged = keep
        return batch, max(0.001, wait)

    def _start(self, batch: list[Any]) -> None:
        by_token: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for work in batch:
            by_token[work.token].append(work.item.id)
        # Services claimed without a sending rate: their mails were claimed in bulk, unspaced.
        unlimited = {work.item.service_id for work in batch if not work.rate}
        allowed: set[uuid.UUID] = set()
        try:
            for token, ids in by_token.items():
                allowed |= claims_start(token=token, ids=ids, unlimited=unlimited)
        except Exception as exc:  # the database above all: nothing was sent, so give the batch back
            level = logging.WARNING if isinstance(exc, DatabaseError) else logging.ERROR
            logger.log(
                level,
                "could not mark sends as started",
                extra={"error": str(exc).strip()},
                exc_info=level > logging.WARNING,
            )
            try:
                connection.close()
            except DatabaseError:
                logger.debug("closing a broken connection failed")
        for work in batch:
            if work.item.id in allowed:
                self.ready.put(work)
            else:
                self._unadmit(work)
                self._release(work)
