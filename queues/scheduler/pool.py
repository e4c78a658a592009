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
import time
import uuid
from dataclasses import dataclass, field

from queues.scheduler.slots import StartGate
from queues.scheduler.transports import ServiceConfig, open_transport


@dataclass
class _ServicePool:
    allowed: int  # this process's share of the cap
    cap: int  # the service's max_connections, as last seen
    busy: int = 0  # permits out (a sender is or will be using a connection)
    connected: int = 0  # permits whose sender has taken its connection (the rest will take an idle one, or open one)
    idle: list = field(default_factory=list)  # (open transport nobody uses, since when: time.monotonic())
    waiting: int = 0  # mails waiting for a permit (demand, for the share)


class ConnectionPools:
    """``shared``: other processes may use the same services, so a service's
    share starts at nothing until ``set_allowed`` grants one; otherwise a
    service may use its whole ``max_connections`` at once."""

    def __init__(self, *, shared: bool = False) -> None:
        self.shared = shared
        self._lock = threading.Lock()
        self._pools: dict[uuid.UUID, _ServicePool] = {}
        self._gates: dict[uuid.UUID, StartGate] = {}  # each rate-limited service's starts in this process
        self._closed: frozenset[uuid.UUID] = frozenset()  # services found disabled or deleted

    def _pool(self, service: ServiceConfig) -> _ServicePool:
        pool = self._pools.get(service.id)
        if pool is None:
            pool = self._pools[service.id] = _ServicePool(
                allowed=0 if self.shared else service.max_connections, cap=service.max_connections
            )
        pool.cap = service.max_connections
        return pool

    def gate(self, service_id: uuid.UUID) -> StartGate:
        with self._lock:
            gate = self._gates.get(service_id)
            if gate is None:
                gate = self._gates[service_id] = StartGate()
            return gate

    def try_acquire(self, service: ServiceConfig) -> bool:
        """A permit to send one mail through ``service`` now, if its connections allow."""
        with self._lock:
            pool = self._pool(service)
            if pool.busy < min(pool.allowed, pool.cap):
                pool.busy += 1
                return True
            return False

    def below_cap(self, service: ServiceConfig) -> bool:
        """This process's share is under the service's cap: a renewal might grant more."""
        with self._lock:
            pool = self._pools.get(service.id)
            return pool is None or pool.allowed < pool.cap

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
            pool.connected += 1
            transport = pool.idle.pop()[0] if pool.idle else None
        if transport is not None:
            if transport.config.version == service.version:
                return transport
            transport.close()  # the service was edited: reconnect with its new settings
        return open_transport(service)

    def checkin(self, transport) -> None:
        """The sender is done with ``transport`` and its permit: kept open for the next mail unless over the share.

        A connection over the share is closed before its permit goes back: the
        relay must have seen it end before a sender may open another.
        """
        service_id = transport.config.id
        with self._lock:
            pool = self._pools.get(service_id)
            keep = pool is not None and self._eventually_open(pool) <= pool.allowed
            if keep:
                pool.busy -= 1
                pool.connected -= 1
                pool.idle.append((transport, time.monotonic()))
                return
        transport.close()
        with self._lock:
            pool = self._pools.get(service_id)
            if pool is not None and pool.busy > 0:
                pool.busy -= 1
                pool.connected -= 1

    @staticmethod
    def _eventually_open(pool: _ServicePool) -> int:
        """Connections open once every permit out has its connection: the permits, and the idle ones left over."""
        pending = pool.busy - pool.connected
        return pool.busy + max(0, len(pool.idle) - pending)

    def set_waiting(self, waiting: dict[uuid.UUID, tuple[ServiceConfig, int]]) -> None:
        """Mails waiting for a permit, per service: the demand ``demand()`` reports."""
        with self._lock:
            for service, _ in waiting.values():
                self._pool(service)
            for service_id, pool in self._pools.items():
                pool.waiting = waiting[service_id][1] if service_id in waiting else 0

    def demand(self) -> tuple[dict[uuid.UUID, int], dict[uuid.UUID, int]]:
        """(connections wanted, connections that may be open until the share changes) per service.

        Wanted: what is busy, idle (kept open) or waiting, up to the cap. The
        second figure is an upper bound while a renewal runs: senders may open
        connections up to the current share meanwhile.
        """
        with self._lock:
            wanted = {sid: min(p.cap, p.busy + len(p.idle) + p.waiting) for sid, p in self._pools.items()}
            holding = {sid: max(self._eventually_open(p), p.allowed) for sid, p in self._pools.items()}
            for sid in [sid for sid in wanted if not wanted[sid] and not holding[sid]]:
                del self._pools[sid]  # nothing wanted or held: released at this renewal
        return wanted, holding

    def close_idle(self, older_than: float) -> None:
        """Close connections idle for ``older_than`` seconds (relays drop them anyway; the share is freed)."""
        cutoff = time.monotonic() - older_than
        stale = []
        with self._lock:
            for pool in self._pools.values():
                stale += [t for t, since in pool.idle if since < cutoff]
                pool.idle = [(t, since) for t, since in pool.idle if since >= cutoff]
        for transport in stale:
            transport.close()

    def closed(self, service_id: uuid.UUID) -> bool:
        """The last renewal found the service disabled or deleted: its mail waiting here cannot go out."""
        with self._lock:
            return service_id in self._closed

    def set_allowed(self, allowed: dict[uuid.UUID, int], closed: frozenset[uuid.UUID] = frozenset()) -> None:
        """The process's share changed: idle connections above it are closed now, busy ones on return."""
        surplus = []
        with self._lock:
            self._closed = closed
            for service_id, pool in self._pools.items():
                pool.allowed = allowed.get(service_id, 0)
                # Idle connections that permits already out will take are not surplus.
                while (
                    pool.idle
                    and len(pool.idle) > pool.busy - pool.connected
                    and (self._eventually_open(pool) > pool.allowed)
                ):
                    surplus.append(pool.idle.pop(0)[0])
        for transport in surplus:
            transport.close()

    def freeze(self) -> None:
        """No new connections until the share is known again (a renewal failed): keep only what is open."""
        with self._lock:
            for pool in self._pools.values():
                pool.allowed = min(pool.allowed, self._eventually_open(pool))

    def close_all(self) -> None:
        with self._lock:
            idle = [t for pool in self._pools.values() for t, _ in pool.idle]
            for pool in self._pools.values():
                pool.idle.clear()
        for transport in idle:
            transport.close()
