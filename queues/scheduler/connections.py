"""Each scheduler process's share of a service's max_connections, held in the database.

Every ``run_scheduler`` process keeps a pool of open SMTP connections per
service; ``EmailService.max_connections`` caps them all together. A process
records in ``service_connection_grants`` how many connections it may have open
to each service (its *bound*) and how many it could use; it renews that record
every few seconds, and each renewal of a service sees every other process's
record, so that:

- the bounds of the live processes never add up to more than the service's
  ``max_connections`` (until that is lowered: then no bound grows until the
  processes have closed down below it);
- a grant grows only from free capacity, never by counting on another
  process to close connections;
- when another process wants more than it holds, a process above its fair
  share (an even split of ``max_connections`` between the processes that want
  connections, one more for some when it does not divide) is allowed only its
  fair share: it closes connections as they come back idle, renews, and the
  capacity it freed goes to the others at their next renewals.

A process that cannot renew (database unreachable, process stalled) must have
closed all its connections by ``valid_until``; its record expires a little
later (by the database's clock), and only then do others count on its share.

Renewals of one service are serialised: on PostgreSQL by a transaction-level
advisory lock per service (not the ``email_services`` row, which the claim
locks with SKIP LOCKED and must not find busy); on SQLite by the write lock
every transaction takes (IMMEDIATE).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction

from common.dbclock import db_now
from config.services import get_config_by_category
from queues.models import EmailService, ServiceConnectionGrant

# The part of a grant's lifetime the process keeps for itself: it stops
# using its connections that long before others may count on its share.
# It covers a lifetime setting lowered meanwhile, and closing the sockets.
SAFETY_FRACTION = 0.25


@dataclass(frozen=True)
class Share:
    """One process's record for a service, as a renewal sees it."""

    worker_id: str
    connections: int  # its recorded bound
    wanted: int


def fair_shares(capacity: int, shares: Sequence[Share]) -> dict[str, int]:
    """Max-min fair split of ``capacity`` between the processes that want connections.

    A process wanting less than an even split gets what it wants; the rest is
    split evenly among the others, the remainder one each to those holding
    most (then by worker id), so that a split that does not divide stays put
    instead of moving between processes at each renewal.
    """
    wanting = sorted((s for s in shares if s.wanted > 0), key=lambda s: s.wanted)
    fair: dict[str, int] = {}
    left = capacity
    while wanting and wanting[0].wanted <= left // len(wanting):
        share = wanting.pop(0)
        fair[share.worker_id] = share.wanted
        left -= share.wanted
    if wanting:
        even, remainder = divmod(left, len(wanting))
        for rank, share in enumerate(sorted(wanting, key=lambda s: (-s.connections, s.worker_id))):
            fair[share.worker_id] = even + (1 if rank < remainder else 0)
    return fair


def allowed_connections(capacity: int, me: Share, others: Sequence[Share]) -> int:
    """How many connections ``me`` may have open, given the live records of ``others``.

    Never more than what the others' bounds leave free; no more than the fair
    share either while another process is below its own.
    """
    if capacity <= 0 or me.wanted <= 0:
        return 0
    free = capacity - sum(o.connections for o in others)
    allowed = max(0, min(me.wanted, free))
    fair = fair_shares(capacity, [me, *others])
    if any(o.connections < fair.get(o.worker_id, 0) for o in others):
        allowed = min(allowed, fair[me.worker_id])
    return allowed


def lock_key(service_id: uuid.UUID) -> int:
    """The advisory lock key (a signed 64-bit integer) that serialises the renewals of one service."""
    digest = hashlib.blake2b(f"edm:connections:{service_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_services(service_ids: Iterable[uuid.UUID]) -> None:
    if connection.vendor != "postgresql":
        return  # SQLite: the transaction already holds the database's write lock
    # Always in key order, so two renewals over overlapping services cannot deadlock.
    keys = sorted({lock_key(s) for s in service_ids})
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", [keys])


def grant_lifetime() -> float:
    """Seconds a renewal counts for: a process silent that long is dead (recovery.worker_dead_seconds)."""
    return float(get_config_by_category("recovery")["worker_dead_seconds"])


class ConnectionGrants:
    """This process's share of each service's max_connections, held in the database."""

    def __init__(self, worker_id: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.worker_id = worker_id
        self.clock = clock  # the process's own clock, for valid_until
        self._valid_until = float("-inf")
        self._allowed: dict[uuid.UUID, int] = {}
        self._last_closed: set[uuid.UUID] = set()
        self._closed: frozenset[uuid.UUID] = frozenset()

    @property
    def valid_until(self) -> float:
        """The ``clock`` moment (``time.monotonic()``) until which the last successful renewal holds.

        By then the process must have closed every connection unless a renewal
        has succeeded meanwhile: after it others may take its share.
        """
        return self._valid_until

    @property
    def allowed(self) -> dict[uuid.UUID, int]:
        """The last renewal's result (after a failed renewal: no more than the process then held)."""
        return dict(self._allowed)

    @property
    def closed(self) -> frozenset[uuid.UUID]:
        """Services the last successful renewal found disabled or deleted: none of their mail can go out."""
        return self._closed

    def renew(self, wanted: dict[uuid.UUID, int], holding: dict[uuid.UUID, int]) -> dict[uuid.UUID, int]:
        """Record what this process wants and holds; return how many connections it may have open per service.

        One short transaction. ``wanted[s]``: connections the process could use
        for service s now (to keep idle ones open, count them as wanted);
        ``holding[s]``: connections it has open now. Services absent from both
        are released. The result has every service of either dict: disabled or
        deleted services get 0. The process closes connections down to the
        result as they come back idle, and opens new ones only up to it, only
        until ``valid_until``. It opens none while the renewal runs (``holding``
        must stay an upper bound until it returns), and it closes all of them
        when ``valid_until`` passes, even while a renewal is still waiting.

        Must not run inside another transaction (its locks would be held until
        that one ends). On a database error nothing is promised beyond the
        previous renewal: the process opens no new connection and keeps
        ``valid_until`` as it was (the error may have hidden a commit that
        recorded a lower bound).
        """
        lifetime = grant_lifetime()
        started = self.clock()
        try:
            try:
                allowed = self._renew(wanted, holding, lifetime)
            except IntegrityError:
                # A service deleted between the read and the commit: read again.
                allowed = self._renew(wanted, holding, lifetime)
        except Exception:
            self._allowed = {s: min(n, holding.get(s, 0)) for s, n in self._allowed.items()}
            raise
        self._allowed = allowed
        self._closed = frozenset(self._last_closed)
        self._valid_until = started + lifetime * (1 - SAFETY_FRACTION)
        return dict(allowed)

    def release_all(self) -> None:
        """Delete this process's grants (at shutdown, once its connections are closed)."""
        self._valid_until = float("-inf")
        self._allowed = {}
        ServiceConnectionGrant.objects.filter(worker_id=self.worker_id).delete()

    def _renew(
        self, wanted: dict[uuid.UUID, int], holding: dict[uuid.UUID, int], lifetime: float
    ) -> dict[uuid.UUID, int]:
        mine = set(ServiceConnectionGrant.objects.filter(worker_id=self.worker_id).values_list("service_id", flat=True))
        services = set(wanted) | set(holding) | mine
        with transaction.atomic():
            _lock_services(services)
            # Read only now that the locks are held: every earlier renewal of these services has committed.
            now = db_now()
            capacity = dict(
                EmailService.objects.filter(pk__in=services, is_enabled=True).values_list("id", "max_connections")
            )
            self._last_closed = {s for s in services if s not in capacity}
            rows: dict[uuid.UUID, list[ServiceConnectionGrant]] = {s: [] for s in services}
            for row in ServiceConnectionGrant.objects.filter(service_id__in=services):
                rows[row.service_id].append(row)
            allowed: dict[uuid.UUID, int] = {}
            keep: list[ServiceConnectionGrant] = []
            for service_id in sorted(set(wanted) | set(holding)):
                limit = capacity.get(service_id, 0)
                live = [r for r in rows[service_id] if r.expires_at > now]
                previous = next((r.connections for r in live if r.worker_id == self.worker_id), None)
                # Without a live grant the process has closed every connection (by valid_until, before
                # the grant expired), whatever it held when it called: a renewal that waited that long
                # must not record connections that are gone as a bound others have to leave free.
                held = max(0, holding.get(service_id, 0)) if previous is not None else 0
                me = Share(self.worker_id, previous or 0, min(max(0, wanted.get(service_id, 0)), limit))
                others = [Share(r.worker_id, r.connections, r.wanted) for r in live if r.worker_id != self.worker_id]
                allowed[service_id] = allowed_connections(limit, me, others)
                bound = max(allowed[service_id], held)
                if bound or me.wanted:
                    keep.append(self._record(service_id, bound, me.wanted, now, lifetime))
            kept = {g.service_id for g in keep}
            ServiceConnectionGrant.objects.filter(
                pk__in=[
                    r.pk
                    for records in rows.values()
                    for r in records
                    if (r.expires_at <= now and r.worker_id != self.worker_id)
                    or (r.worker_id == self.worker_id and r.service_id not in kept)
                ]
            ).delete()
            # An upsert: a row already there is updated in place (a new row's foreign key check
            # would wait for a claim holding the service's row).
            ServiceConnectionGrant.objects.bulk_create(
                keep,
                update_conflicts=True,
                unique_fields=["service", "worker_id"],
                update_fields=["connections", "wanted", "renewed_at", "expires_at"],
            )
        return allowed

    def _record(
        self, service_id: uuid.UUID, bound: int, wanted: int, now: dt.datetime, lifetime: float
    ) -> ServiceConnectionGrant:
        return ServiceConnectionGrant(
            service_id=service_id,
            worker_id=self.worker_id,
            connections=bound,
            wanted=wanted,
            renewed_at=now,
            expires_at=now + dt.timedelta(seconds=lifetime),
        )
