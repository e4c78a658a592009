"""This process's SMTP connections, pooled per service and capped.

Senders no longer keep a connection per service each: a mail goes to a
sender only once its service has a free *permit* (``try_acquire``), and the
sender takes an idle connection of that service or opens one. A service never
has more permits out than this process's share of its ``max_connections``
(``allowed``, from queues.scheduler.connections when several processes share
the service), so the relay never sees more connections than the cap, however
many senders the process runs. Connections above a lowered share are closed
as they come back.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

from queues.scheduler.transports import ServiceConfig, open_transport


@dataclass
class _ServicePool:
    allowed: int
    busy: int = 0  # permits out (a sender is or will be using a connection)
    idle: list = field(default_factory=list)  # open transports nobody uses
    waiting: int = 0  # mails waiting for a permit (demand, for the share)


class ConnectionPools:
    """``shared``: other processes may use the same services, so a service's
    share starts at nothing until ``set_allowed`` grants one; otherwise a
    service may use its whole ``max_connections`` at once."""

    def __init__(self, *, shared: bool = False) -> None:
        self.shared = shared
        self._lock = threading.Lock()
        self._pools: dict[uuid.UUID, _ServicePool] = {}
        self._caps: dict[uuid.UUID, int] = {}  # each service's max_connections, as last seen

    def _pool(self, service: ServiceConfig) -> _ServicePool:
        self._caps[service.id] = service.max_connections
        pool = self._pools.get(service.id)
        if pool is None:
            pool = self._pools[service.id] = _ServicePool(allowed=0 if self.shared else service.max_connections)
        return pool

    def try_acquire(self, service: ServiceConfig) -> bool:
        """A permit to send one mail through ``service`` now, if its connections allow."""
        with self._lock:
            pool = self._pool(service)
            if pool.busy < min(pool.allowed, service.max_connections):
                pool.busy += 1
                return True
            return False

    def release(self, service_id: uuid.UUID) -> None:
        """Give a permit back unused (the mail was not sent)."""
        with self._lock:
            pool = self._pools.get(service_id)
            if pool is not None and pool.busy > 0:
                pool.busy -= 1

    def checkout(self, service: ServiceConfig):
        """An open transport of the service for a permit's holder (idle one, or a new one)."""
        with self._lock:
            pool = self._pool(service)
            transport = pool.idle.pop() if pool.idle else None
        if transport is not None:
            if transport.config.version == service.version:
                return transport
            transport.close()  # the service was edited: reconnect with its new settings
        return open_transport(service)

    def checkin(self, transport) -> None:
        """The sender is done with ``transport`` and its permit: kept open for the next mail unless over the share."""
        service_id = transport.config.id
        with self._lock:
            pool = self._pools.get(service_id)
            keep = pool is not None and pool.busy + len(pool.idle) <= pool.allowed
            if pool is not None and pool.busy > 0:
                pool.busy -= 1
            if keep:
                pool.idle.append(transport)
        if not keep:
            transport.close()

    def set_waiting(self, waiting: dict[uuid.UUID, int]) -> None:
        with self._lock:
            for service_id, pool in self._pools.items():
                pool.waiting = waiting.get(service_id, 0)

    def demand(self) -> tuple[dict[uuid.UUID, int], dict[uuid.UUID, int]]:
        """(connections wanted, connections open) per service, for the cross-process share."""
        with self._lock:
            wanted = {
                sid: min(self._caps.get(sid, p.allowed), p.busy + p.waiting)
                for sid, p in self._pools.items()
                if p.busy or p.waiting or p.idle
            }
            holding = {sid: p.busy + len(p.idle) for sid, p in self._pools.items() if p.busy or p.idle}
        return wanted, holding

    def set_allowed(self, allowed: dict[uuid.UUID, int]) -> None:
        """The process's share changed: idle connections above it are closed now, busy ones on return."""
        surplus = []
        with self._lock:
            for service_id, pool in self._pools.items():
                pool.allowed = allowed.get(service_id, 0)
                while pool.idle and pool.busy + len(pool.idle) > pool.allowed:
                    surplus.append(pool.idle.pop())
        for transport in surplus:
            transport.close()

    def close_all(self) -> None:
        with self._lock:
            idle = [t for pool in self._pools.values() for t in pool.idle]
            for pool in self._pools.values():
                pool.idle.clear()
        for transport in idle:
            transport.close()
