"""SendStarter's hand-over rules that need no database: what happens once the process is signalled."""

from __future__ import annotations

import queue
import threading
import time
from types import SimpleNamespace

from queues.scheduler.starter import SendStarter


def test_a_signalled_process_gives_staged_work_back_and_then_waits_quietly():
    checks = 0

    def stopping() -> bool:
        nonlocal checks
        checks += 1
        return True

    released: list = []
    ready: queue.Queue = queue.Queue()
    starter = SendStarter(ready=ready, depth=4, release=released.append, stopping=stopping)
    work = [SimpleNamespace(item=SimpleNamespace(id=i), token="t") for i in range(3)]
    for w in work:
        starter.stage(w)
    thread = threading.Thread(target=starter.run, daemon=True)
    thread.start()

    time.sleep(0.3)
    assert released == work and ready.empty()
    assert checks < 10  # it waits for close(), it does not spin
    starter.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
