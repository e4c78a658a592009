"""Rate slots: when each send of a rate-limited service may start.

A claim hands out a rate-limited service's next slots in the database's time:
the service's next free moment, then one ``sending_rate`` plus
``SLOT_WINDOW_SECONDS`` later, and so on, up to ``SLOT_HORIZON_SECONDS`` ahead;
``next_available_at`` moves past the last one. Slots never overlap, whichever
process claimed them, so several sends of one service can be in flight at once
(a relay answering in 50 ms no longer caps a service at 20 mails/s) while no
two of them *start* closer than ``sending_rate``.

A sender starts its mail inside its slot's window (``[slot, slot + window]``,
judged on this process's estimate of the database's clock, its error
included) or gives the mail back: a send that started late could come closer
than ``sending_rate`` to the next slot's. A slot whose mail is given back stays
unused; the spacing only ever grows.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable

# A send starts within this of its slot, or not at all; slots are spaced
# sending_rate + window apart, so the starts are at least sending_rate apart.
SLOT_WINDOW_SECONDS = 0.003
# How far ahead one claim takes a service's slots: enough to keep a service
# busy while the next claim runs, little enough that a paused task or a dead
# worker wastes at most this much of the service's time.
SLOT_HORIZON_SECONDS = 1.0
# A claim's first slot is at least this far ahead: time to hand the mail to a
# sender, mark it processing and open a connection before the window opens.
SLOT_LEAD_SECONDS = 0.15
# Clock samples older than this are not trusted for slot timing (clock drift).
CLOCK_SAMPLE_SECONDS = 10.0


def slot_spacing(rate: float) -> float:
    return rate + SLOT_WINDOW_SECONDS


def slots_per_claim(rate: float) -> int:
    """How many slots of a service spaced for ``rate`` one claim takes (at least one)."""
    return max(1, math.floor(SLOT_HORIZON_SECONDS / slot_spacing(rate)))


def plan(first: dt.datetime, rate: float, count: int) -> tuple[list[dt.datetime], dt.datetime]:
    """``count`` slots from ``first``, and the service's next free moment after them."""
    step = dt.timedelta(seconds=slot_spacing(rate))
    return [first + i * step for i in range(count)], first + count * step


class DbClock:
    """This process's estimate of the database's clock, on ``time.monotonic()``.

    Each claim reads the database's time between two monotonic readings; the
    midpoint maps one onto the other within half the round trip. The estimate
    kept is the recent sample with the smallest error (as NTP keeps its best
    exchange), so one slow round trip under load does not blur the slots.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._best: tuple[float, dt.datetime, float] | None = None  # (monotonic, database time, error)

    def sample(self, before: float, db_time: dt.datetime, after: float) -> None:
        error = max(0.0, (after - before) / 2)
        mid = (before + after) / 2
        with self._lock:
            best = self._best
            if best is None or after - best[0] > CLOCK_SAMPLE_SECONDS or error <= self._aged_error(best, after):
                self._best = (mid, db_time, error)

    @staticmethod
    def _aged_error(sample: tuple[float, dt.datetime, float], now: float) -> float:
        # A sample's error grows with its age: clocks drift (up to 500 ppm under NTP slewing).
        return sample[2] + 0.0005 * max(0.0, now - sample[0])

    def monotonic_at(self, moment: dt.datetime) -> tuple[float, float] | None:
        """(monotonic moment of a database time, its error), or None without a sample."""
        with self._lock:
            best = self._best
        if best is None:
            return None
        mono, db_time, _ = best
        return mono + (moment - db_time).total_seconds(), self._aged_error(best, self._clock())
