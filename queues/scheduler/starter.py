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
"""

from __future__ import annotations

import logging
import queue
import threading
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
    ) -> None:
        self.ready = ready
        self.depth = max(1, depth)
        self._release = release
        self._stopping = stopping
        self._staged: deque[Any] = deque()
        self._changed = threading.Condition()
        self._closing = False

    def stage(self, work: Any) -> None:
        with self._changed:
            self._staged.append(work)
            self._changed.notify()

    def wake(self) -> None:
        """A sender took work from ``ready``: there may be room for more."""
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
                room = self.depth - self.ready.qsize()
                # Refill by half the depth at a time: fewer, larger updates, and
                # the senders still find work ready.
                if self._staged and (room >= max(1, self.depth // 2) or (room > 0 and self._closing)):
                    return [self._staged.popleft() for _ in range(min(room, len(self._staged)))], []
                self._changed.wait(timeout=0.5)

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
                self._release(work)
