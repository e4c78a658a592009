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

Within a process the spacing is also kept causally (``StartGate``): a send
starts only once the previous send of its service has put its MAIL FROM on
the wire, ``sending_rate`` after that moment, so a thread held up between its
check and its write (the machine busy) delays the next send instead of
crowding it. Consecutive slots of a service mostly belong to one claim, so to
one process; between claims the next claim's first slot keeps
``SLOT_BOUNDARY_SECONDS`` more.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# A send starts within this of its slot, or not at all; slots are spaced
# sending_rate + window apart, so the starts are at least sending_rate apart.
SLOT_WINDOW_SECONDS = 0.003
# Between one claim's last slot of a service and the next claim's first (which
# may be another process's): room for a start held up after its window check.
SLOT_BOUNDARY_SECONDS = 0.05
# After a late start, the next send of the service in this process keeps this
# much more than the rate from it (the slots' own spacing has the window's 3 ms).
GATE_MARGIN_SECONDS = 0.001
# How far ahead one claim takes a service's slots: enough to keep a service
# busy while the next claim runs, little enough that a paused task or a dead
# worker wastes at most this much of the service's time.
SLOT_HORIZON_SECONDS = 2.0
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
    return [first + i * step for i in range(count)], first + count * step + dt.timedelta(seconds=SLOT_BOUNDARY_SECONDS)


class StartGate:
    """One service's starts in this process: each inside its slot's window and ``rate`` after the last one's write.

    ``enter(window, rate)`` returns when the send may put its MAIL FROM on the
    wire, or raises StartMissed; ``written()`` follows the write (also when it
    failed: the bytes may have left).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._changed = threading.Condition()
        self._writing = 0  # sends between enter() and written()
        self._last_write = float("-inf")

    def enter(self, window: tuple[float, float], rate: float) -> None:
        start, end = window
        with self._changed:
            while True:
                now = self._clock()
                earliest = max(start, self._last_write + rate + GATE_MARGIN_SECONDS)
                if earliest > end or now > end:
                    raise StartMissed(f"{max(now, earliest) - end:.4f} s after the window closed")
                if not self._writing and now >= earliest:
                    self._writing += 1
                    return
                self._changed.wait(max(0.0, (end if self._writing else earliest) - now) + 0.0001)

    def written(self) -> None:
        with self._changed:
            self._writing -= 1
            self._last_write = max(self._last_write, self._clock())
            self._changed.notify_all()


class StartMissed(Exception):
    """A rate slot's start window passed before the mail could start: nothing was sent."""


@dataclass
class SlotStart:
    """One send's slot: its window, its service's rate and the service's gate in this process."""

    gate: StartGate
    window: tuple[float, float]
    rate: float
    _open: bool = False  # entered, not yet written

    def enter(self) -> None:
        self.gate.enter(self.window, self.rate)
        self._open = True

    def written(self) -> None:
        """MAIL FROM is on the wire, failed to go, or the send ended before it (its bytes may have left: as written).

        Idempotent: the transport calls it after the write and again whatever ends the envelope.
        """
        if self._open:
            self._open = False
            self.gate.written()


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

    def now(self) -> dt.datetime | None:
        """The database's time now, as estimated here; None without a sample."""
        with self._lock:
            best = self._best
        if best is None:
            return None
        mono, db_time, _ = best
        return db_time + dt.timedelta(seconds=self._clock() - mono)

    def monotonic_at(self, moment: dt.datetime) -> tuple[float, float] | None:
        """(monotonic moment of a database time, its error), or None without a sample."""
        with self._lock:
            best = self._best
        if best is None:
            return None
        mono, db_time, _ = best
        return mono + (moment - db_time).total_seconds(), self._aged_error(best, self._clock())
