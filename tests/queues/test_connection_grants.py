"""Each scheduler process's share of a service's max_connections (queues.scheduler.connections)."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.db.models import Sum
from django.db.models.functions import Now
from django.urls import reverse

from common.dbclock import db_now
from config.services import ConfigManagerService
from queues.models import EmailService, ServiceConnectionGrant
from queues.scheduler import connections as grants_module
from queues.scheduler.connections import SAFETY_FRACTION, ConnectionGrants, Share, fair_shares, grant_lifetime
from tests.api_helpers import client_for


def bounds(service: EmailService) -> dict[str, int]:
    """The recorded bound of each process for the service."""
    return dict(ServiceConnectionGrant.objects.filter(service=service).values_list("worker_id", "connections"))


def renew(grants: ConnectionGrants, service: EmailService, wanted: int, holding: int) -> int:
    return grants.renew({service.pk: wanted}, {service.pk: holding})[service.pk]


@pytest.mark.parametrize(
    ("capacity", "wanted", "expected"),
    [
        pytest.param(20, {"a": 20, "b": 20}, {"a": 10, "b": 10}, id="even split"),
        pytest.param(21, {"a": 20, "b": 20}, {"a": 11, "b": 10}, id="remainder by worker id"),
        pytest.param(20, {"a": 3, "b": 20, "c": 20}, {"a": 3, "b": 9, "c": 8}, id="a small want is met in full"),
        pytest.param(20, {"a": 0, "b": 20}, {"b": 20}, id="not wanting: no share"),
        pytest.param(2, {"a": 5, "b": 5, "c": 5}, {"a": 1, "b": 1, "c": 0}, id="fewer connections than processes"),
    ],
)
def test_fair_shares(capacity, wanted, expected):
    assert fair_shares(capacity, [Share(w, 0, n) for w, n in wanted.items()]) == expected


def test_the_remainder_goes_to_the_process_holding_more():
    """So that an uneven split stays where it is instead of moving at each renewal."""
    assert fair_shares(21, [Share("a", 10, 20), Share("b", 11, 20)]) == {"a": 10, "b": 11}


@pytest.mark.django_db
def test_a_grant_grows_only_from_free_capacity(email_service_factory):
    service = email_service_factory(max_connections=20)
    a, b = ConnectionGrants("a"), ConnectionGrants("b")

    assert renew(a, service, 15, 0) == 15
    # b's fair share is 10, but a's bound leaves only 5 free.
    assert renew(b, service, 20, 0) == 5
    assert bounds(service) == {"a": 15, "b": 5}
    # b is below its fair share: a is held to its own.
    assert renew(a, service, 15, 15) == 10
    assert bounds(service) == {"a": 15, "b": 5}  # a still holds 15 until they come back idle
    assert renew(b, service, 20, 5) == 5
    assert renew(a, service, 15, 10) == 10
    assert renew(b, service, 20, 5) == 10
    assert bounds(service) == {"a": 10, "b": 10}


@pytest.mark.django_db
def test_fair_sharing_converges(email_service_factory):
    service = email_service_factory(max_connections=20)
    a, b = ConnectionGrants("a"), ConnectionGrants("b")
    assert renew(a, service, 20, 0) == 20
    assert renew(a, service, 20, 20) == 20

    assert renew(b, service, 20, 0) == 0  # nothing free
    assert renew(a, service, 20, 20) == 10  # b wants more than it holds: a drops to its fair share
    assert bounds(service) == {"a": 20, "b": 0}  # ...but still holds 20
    assert renew(b, service, 20, 0) == 0
    assert renew(a, service, 20, 10) == 10  # closed 10 as they came back idle
    assert renew(b, service, 20, 0) == 10

    for _ in range(3):
        assert (renew(a, service, 20, 10), renew(b, service, 20, 10)) == (10, 10)
    assert bounds(service) == {"a": 10, "b": 10}
    assert ServiceConnectionGrant.objects.get(service=service, worker_id="b").wanted == 20


@pytest.mark.django_db
def test_an_uneven_split_stays_put(email_service_factory):
    service = email_service_factory(max_connections=21)
    a, b = ConnectionGrants("a"), ConnectionGrants("b")
    renew(b, service, 21, 0)
    renew(b, service, 21, 21)
    renew(a, service, 21, 0)
    assert renew(b, service, 21, 21) == 11  # b holds more: it keeps the odd one
    assert renew(b, service, 21, 11) == 11
    assert renew(a, service, 21, 0) == 10
    for _ in range(3):
        assert (renew(a, service, 21, 10), renew(b, service, 21, 11)) == (10, 11)


@pytest.mark.django_db
def test_a_process_wanting_less_leaves_the_rest_to_others(email_service_factory):
    service = email_service_factory(max_connections=20)
    a, b = ConnectionGrants("a"), ConnectionGrants("b")
    assert renew(a, service, 4, 0) == 4
    assert renew(b, service, 30, 0) == 16  # wanting more than max_connections counts as wanting all of it
    assert ServiceConnectionGrant.objects.get(service=service, worker_id="b").wanted == 20
    assert renew(a, service, 2, 4) == 2  # fewer wanted: close down to it
    assert bounds(service) == {"a": 4, "b": 16}
    assert renew(a, service, 2, 2) == 2
    assert renew(b, service, 30, 16) == 18


@pytest.mark.django_db
def test_expired_grants_are_ignored_and_deleted(email_service_factory):
    service = email_service_factory(max_connections=20)
    a, b = ConnectionGrants("a"), ConnectionGrants("b")
    renew(a, service, 20, 0)
    renew(a, service, 20, 20)
    assert renew(b, service, 20, 0) == 0

    # a stopped renewing: its grant's lifetime has passed by the database's clock.
    ServiceConnectionGrant.objects.filter(worker_id="a").update(
        renewed_at=Now() - dt.timedelta(seconds=21), expires_at=Now() - dt.timedelta(seconds=1)
    )
    assert renew(b, service, 20, 0) == 20
    assert bounds(service) == {"b": 20}


@pytest.mark.django_db
def test_an_expired_grant_of_its_own_records_nothing_held(email_service_factory):
    """By the time its grant expired the process had closed everything: what it said it held is gone."""
    service = email_service_factory(max_connections=20)
    a, b = ConnectionGrants("a"), ConnectionGrants("b")
    renew(a, service, 10, 0)
    ServiceConnectionGrant.objects.filter(worker_id="a").update(expires_at=Now() - dt.timedelta(seconds=1))
    renew(b, service, 20, 0)  # took what a left: b is alone
    assert renew(a, service, 10, 10) == 0
    assert bounds(service) == {"a": 0, "b": 20}


@pytest.mark.django_db
def test_renewal_times_and_valid_until(email_service_factory):
    ConfigManagerService.set_config("recovery", "worker_dead_seconds", 8)
    service = email_service_factory()
    grants = ConnectionGrants("a", clock=lambda: 1000.0)
    assert grants.valid_until == float("-inf")
    before = db_now()

    renew(grants, service, 5, 0)

    row = ServiceConnectionGrant.objects.get()
    assert before <= row.renewed_at <= db_now()
    assert row.expires_at - row.renewed_at == dt.timedelta(seconds=8)
    assert grants.valid_until == 1000.0 + 8 * 0.75  # closed well before others may count on its share


@pytest.mark.django_db
def test_a_failed_renewal_keeps_valid_until_and_allows_no_new_connection(email_service_factory, monkeypatch):
    service = email_service_factory()
    grants = ConnectionGrants("a")
    renew(grants, service, 5, 0)
    valid_until = grants.valid_until

    def unreachable():
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(grants_module, "db_now", unreachable)
    with pytest.raises(OperationalError):
        renew(grants, service, 5, 3)

    assert grants.valid_until == valid_until
    assert grants.allowed == {service.pk: 3}  # what it holds: nothing more until a renewal succeeds
    assert bounds(service) == {"a": 5}


@pytest.mark.django_db
def test_a_disabled_or_deleted_service_gets_nothing(email_service_factory):
    service = email_service_factory(max_connections=20)
    gone = uuid.uuid4()
    grants = ConnectionGrants("a")
    renew(grants, service, 10, 0)
    assert grants.closed == frozenset()
    EmailService.objects.filter(pk=service.pk).update(is_enabled=False)

    assert grants.renew({service.pk: 10, gone: 3}, {service.pk: 10}) == {service.pk: 0, gone: 0}
    assert grants.closed == {service.pk, gone}  # the process gives back what it holds for them
    # Still recorded while its connections close; nothing recorded for a service that does not exist.
    assert list(ServiceConnectionGrant.objects.values_list("service_id", "connections", "wanted")) == [
        (service.pk, 10, 0)
    ]
    assert grants.renew({service.pk: 10}, {service.pk: 0}) == {service.pk: 0}
    assert not ServiceConnectionGrant.objects.exists()


@pytest.mark.django_db
def test_services_left_out_are_released_and_release_all_deletes_only_its_own(email_service_factory):
    first, second = email_service_factory(), email_service_factory()
    a, b = ConnectionGrants("a"), ConnectionGrants("b")
    a.renew({first.pk: 3, second.pk: 4}, {})
    b.renew({first.pk: 5}, {})

    a.renew({second.pk: 4}, {second.pk: 4})
    assert bounds(first) == {"b": 5}
    assert bounds(second) == {"a": 4}

    a.release_all()
    assert list(ServiceConnectionGrant.objects.values_list("worker_id", "service_id")) == [("b", first.pk)]
    assert a.valid_until == float("-inf")


@pytest.mark.django_db
def test_a_lowered_max_connections_shrinks_the_grants(email_service_factory, user_factory):
    service = email_service_factory(max_connections=20)
    a, b = ConnectionGrants("a"), ConnectionGrants("b")
    renew(a, service, 20, 0)
    renew(a, service, 20, 20)

    api = client_for(user_factory(is_staff=True))
    response = api.patch(f"/api/services/{service.pk}/", {"max_connections": 8}, format="json")
    assert response.status_code == 200

    assert renew(a, service, 20, 20) == 8
    assert renew(b, service, 20, 0) == 0  # nothing grows while the bounds are above the new limit
    assert renew(a, service, 20, 8) == 4  # down to 8, and b wants its share
    assert renew(b, service, 20, 0) == 0
    assert renew(a, service, 20, 4) == 4
    assert renew(b, service, 20, 0) == 4
    assert bounds(service) == {"a": 4, "b": 4}


@pytest.mark.django_db
def test_the_service_page_shows_each_process_grant(client, user_factory, email_service_factory):
    service = email_service_factory(max_connections=20)
    renew(ConnectionGrants("host-1:4242:abc"), service, 30, 0)
    renew(ConnectionGrants("host-2:77:def"), service, 3, 0)
    ServiceConnectionGrant.objects.filter(worker_id="host-2:77:def").update(expires_at=Now() - dt.timedelta(seconds=1))
    client.force_login(user_factory(is_staff=True, is_superuser=True))

    page = client.get(reverse("admin:queues_emailservice_change", args=[service.pk])).content.decode()

    assert "host-1:4242:abc: 20 (wants 20)" in page
    assert "host-2:77:def: 0 (wants 3), expired" in page


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_renewal_waits_for_no_claim(email_service_factory):
    """Claims lock email_services rows (FOR UPDATE SKIP LOCKED); renewals lock other things."""
    service = email_service_factory(max_connections=20)
    grants = ConnectionGrants("a")
    renew(grants, service, 5, 0)  # the grant's row exists: from now on renewals update it
    locked, done = threading.Event(), threading.Event()

    def claim_holding_the_service() -> None:
        try:
            with transaction.atomic():
                EmailService.objects.select_for_update().get(pk=service.pk)
                locked.set()
                done.wait(timeout=60)
        finally:
            connections.close_all()

    claimer = threading.Thread(target=claim_holding_the_service)
    claimer.start()
    try:
        assert locked.wait(timeout=60)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '5s'")  # waiting on the claim would fail, not hang
        assert renew(grants, service, 7, 5) == 7
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    finally:
        done.set()
        claimer.join()


# --- Several real processes renewing at once -------------------------------------------


def live_bounds() -> dict[str, int]:
    """Sum of the live recorded bounds per service, at one moment of the database."""
    with transaction.atomic():
        # PostgreSQL: the statement's own time and snapshot; SQLite: this transaction holds the write lock.
        horizon = Now() if connection.vendor == "postgresql" else db_now()
        rows = (
            ServiceConnectionGrant.objects.filter(expires_at__gt=horizon)
            .values("service_id")
            .annotate(total=Sum("connections"))
            .values_list("service_id", "total")
        )
        return {str(service_id): total for service_id, total in rows}


class SimulatedPool:
    """A process's connections to each service, counted in ``open_now`` shared by every process.

    It follows what a scheduler must: open only up to what the last renewal
    allowed and only before valid_until, never while a renewal runs; close
    idle connections down to the allowance; close everything when valid_until
    passes, even while a renewal is still waiting (the watchdog thread).
    """

    def __init__(self, name: str, capacity: dict[str, int], open_now, shared_lock, violations) -> None:
        self.grants = ConnectionGrants(name)
        self.capacity = capacity
        self.open_now, self.shared_lock, self.violations = open_now, shared_lock, violations
        self.held = dict.fromkeys(capacity, 0)
        self.lock = threading.Lock()
        self.opened = 0

    def open(self, service: str, count: int) -> None:
        with self.lock, self.shared_lock:
            if time.monotonic() >= self.grants.valid_until:
                return
            self.held[service] += count
            self.opened += count
            self.open_now[service] += count
            if self.open_now[service] > self.capacity[service]:
                self.violations.append(f"{self.open_now[service]} open to {service} ({self.capacity[service]} max)")

    def close(self, service: str, count: int) -> None:
        with self.lock, self.shared_lock:
            count = min(count, self.held[service])
            self.held[service] -= count
            self.open_now[service] -= count

    def close_all_when_expired(self, stop: threading.Event) -> None:
        while not stop.wait(0.005):
            if time.monotonic() >= self.grants.valid_until:
                for service in self.capacity:
                    self.close(service, self.held[service])


def renew_at_random(name: str, capacity: dict[str, int], rounds: int, seed: int, shared: tuple) -> dict:
    """One scheduler-like process: random wants, random idle connections closing, one long stall."""
    open_now, shared_lock, violations, finished = shared
    rng = random.Random(seed)
    pool = SimulatedPool(name, capacity, open_now, shared_lock, violations)
    services = {s: uuid.UUID(s) for s in capacity}
    stop = threading.Event()
    watchdog = threading.Thread(target=pool.close_all_when_expired, args=(stop,), daemon=True)
    watchdog.start()
    stall_at, granted = rng.randrange(rounds // 4, rounds // 2), 0
    try:
        for round_ in range(rounds):
            if round_ == stall_at and any(pool.held.values()):
                # Cannot renew for longer than its grant lasts: it must close everything by valid_until,
                # and the others take its share once its grant has expired (a little later).
                expired = pool.grants.valid_until + grant_lifetime() * SAFETY_FRACTION + 1.0
                while time.monotonic() < expired:
                    time.sleep(0.05)
            wanted = {s: rng.choice([0, rng.randint(1, capacity[s] + 2)]) for s in capacity}
            with pool.lock:
                holding = {services[s]: n for s, n in pool.held.items() if n}
            allowed = pool.grants.renew({services[s]: n for s, n in wanted.items() if n}, holding)
            for service in capacity:
                allow = allowed.get(services[service], 0)
                granted = max(granted, allow)
                extra = pool.held[service] - allow
                if extra > 0:
                    pool.close(service, rng.randint(0, extra))  # only those that came back idle
                elif extra < 0:
                    pool.open(service, rng.randint(0, -extra))
            time.sleep(rng.random() * 0.01)
        for service in capacity:
            pool.close(service, pool.held[service])
        pool.grants.release_all()
    finally:
        stop.set()
        watchdog.join()
        finished.append(name)
    return {"opened": pool.opened, "most_allowed": granted}


def sample_bounds(capacity: dict[str, int], workers: int, shared: tuple) -> dict:
    """Reads the recorded bounds until every worker has finished."""
    _open_now, _lock, violations, finished = shared
    samples = 0
    while len(finished) < workers:
        for service, total in live_bounds().items():
            if total > capacity[service]:
                violations.append(f"recorded bounds {total} for {service} ({capacity[service]} max)")
        samples += 1
        time.sleep(0.002)
    return {"samples": samples}


@pytest.mark.django_db(transaction=True)
def test_processes_renewing_at_once_never_share_out_more_than_max_connections(email_service_factory):
    import multiprocessing

    from tests.processes import run_in_processes

    ConfigManagerService.set_config("recovery", "worker_dead_seconds", 6)
    capacity = {str(email_service_factory(max_connections=n).pk): n for n in (3, 7)}
    workers = 4
    with multiprocessing.get_context("spawn").Manager() as manager:
        open_now = manager.dict(dict.fromkeys(capacity, 0))
        shared = (open_now, manager.Lock(), manager.list(), manager.list())
        results = run_in_processes(
            dispatch,
            [("sample", capacity, workers, shared)]
            + [("renew", f"worker-{i}", capacity, 150, i, shared) for i in range(workers)],
            timeout=300,
        )
        violations = list(shared[2])

    assert violations == []
    assert results[0]["samples"] > 0
    for result in results[1:]:
        assert result["opened"] > 0 and result["most_allowed"] > 0
    assert not ServiceConnectionGrant.objects.exists()  # every process released its grants


def dispatch(role: str, *args):
    return sample_bounds(*args) if role == "sample" else renew_at_random(*args)
