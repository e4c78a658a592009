"""Time-ordered UUIDs (version 7, RFC 9562) for rows inserted in bulk.

Subtasks and send attempts are inserted by the hundred thousand; random
(v4) primary keys scatter those inserts across the whole index, v7 keys
append them at its right edge. Python gets uuid.uuid7 only in 3.14.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last = 0


def uuid7_stamps(count: int) -> int:
    """Reserve ``count`` consecutive 60-bit stamps (48 bits of milliseconds, 12 of sub-millisecond
    counter) and return the first; no other id of this process gets one of them.

    For ids built in SQL (queues.expansion): the stamp goes in the UUID's first
    64 bits with the version, the random rest comes from the database.
    """
    global _last
    with _lock:
        # 48 bits of milliseconds, then 12 bits of sub-millisecond counter so
        # that ids from one process sort in creation order.
        now = time.time_ns() // 1000  # microseconds
        candidate = (now // 1000) << 12 | ((now % 1000) * 4096 // 1000)
        first = candidate if candidate > _last else _last + 1
        _last = first + count - 1
    return first


def uuid7() -> uuid.UUID:
    """A version-7 UUID; strictly increasing within this process."""
    stamp = uuid7_stamps(1)
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (stamp >> 12) << 80 | 0x7 << 76 | (stamp & 0xFFF) << 64 | 0b10 << 62 | rand
    return uuid.UUID(int=value)
