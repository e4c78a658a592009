"""SendStarter's hand-over rules that need no database: what happens once the process is signalled."""

from __future__ import annotations

import queue
import threading
from types import SimpleNamespace

from queues.scheduler.starter import SendStarter


class WatchedCondition(threading.Condition):
    """A Condition that says when a thread first blocks in ``wait()``, and what had happened by then."""

    def __init__(self, snapshot) -> None:
        super().__init__()
        self._snapshot = snapshot
        self.first_wait: object = None
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        if not self.waiting.is_set():
            self.first_wait = self._snapshot()
            self.waiting.set()
        return super().wait(timeout)


def test_a_signalled_process_gives_staged_work_back_and_then_waits_quietly():
    checks = 0

    def stopping() -> bool:
        nonlocal checks
        checks += 1
        return True

    released: list = []
    ready: queue.Queue = queue.Queue()
    starter = SendStarter(ready=ready, depth=4, release=released.append, stopping=stopping)
    changed = starter._changed = WatchedCondition(lambda: (checks, list(released), ready.qsize()))
    work = [SimpleNamespace(item=SimpleNamespace(id=i), token="t") for i in range(3)]
    for w in work:
        starter.stage(w)
    thread = threading.Thread(target=starter.run, daemon=True)
    thread.start()

    # A starter that spins (asks stopping() again and again) never blocks: it waits for close().
    assert changed.waiting.wait(timeout=10), "the starter never settled down to wait"
    # One look that gave the work back, one that found nothing left to do.
    assert changed.first_wait == (2, work, 0)
    starter.close()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_staged_work_that_cannot_start_any_more_goes_back_without_a_permit():
    """A mail waiting for a connection its service will not give (disabled, slot passed) is given back,
    and the mail staged behind it still goes to the senders."""
    released: list = []
    admitted: list = []
    ready: queue.Queue = queue.Queue()
    stuck = SimpleNamespace(item=SimpleNamespace(id=1), token="t", service="closed")
    fine = SimpleNamespace(item=SimpleNamespace(id=2), token="t", service="open")

    def admit(work) -> bool:
        admitted.append(work)
        return work.service == "open"

    starter = SendStarter(
        ready=ready,
        depth=2,
        release=released.append,
        stopping=lambda: False,
        admit=admit,
        service_of=lambda work: work.service,
        expired=lambda work: work.service == "closed",
    )
    starter._start = lambda batch: [ready.put(w) for w in batch]  # no database: every admitted mail starts
    starter.stage(stuck)
    starter.stage(fine)
    thread = threading.Thread(target=starter.run, daemon=True)
    thread.start()
    assert ready.get(timeout=10) is fine
    starter.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert released == [stuck]
    assert stuck not in admitted
