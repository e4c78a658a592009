"""Several schedulers, several services: what the relay sees.

Each test runs real ``run_scheduler`` processes against PostgreSQL and a real
SMTP server, and checks the promises where they matter, at the server: no two
mails of a rate-limited service start (MAIL FROM) closer than its
``sending_rate`` (2 ms allowed for the server's own timestamping), sends of one
service overlap when its relay is slower than its rate, and no service ever
has more connections open than its ``max_connections``, counting every
scheduler's together.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter

import psycopg
import pytest
from django.db import connection

from queues.models import SubTask
from queues.services import task_create

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

TOLERANCE = 0.002  # the server's timestamps: one asyncio loop for every connection


def queue_mail(user_factory, total: int, users: int) -> None:
    for u in range(users):
        owner = user_factory()
        task_create(
            owner=owner,
            name=f"t{u}",
            subject="s",
            body_text="b",
            recipients=[f"r{i}@u{u}.example" for i in range(total // users)],
        )


def test_rate_limited_services_keep_their_spacing_at_the_relay_while_sends_overlap(
    smtp_sink, email_service_factory, user_factory, schedulers
):
    # The relay answers in 120 ms and each service may start a mail every
    # 50 ms: reaching the rate takes several sends of one service in flight.
    smtp_sink.latency = 0.12
    services = [
        email_service_factory(port=smtp_sink.port, sending_rate=0.05, max_connections=4, daily_quota=10_000)
        for _ in range(2)
    ]
    queue_mail(user_factory, 160, users=8)

    schedulers.start(3, "--until-empty", "--maintenance", "off")
    assert schedulers.wait(timeout=180) == [0, 0, 0], schedulers.logs()

    records = smtp_sink.snapshot()
    assert Counter(r.message_id for r in records) == Counter(SubTask.objects.values_list("message_id", flat=True)), (
        "every mail exactly once"
    )
    for service in services:
        mine = sorted((r for r in records if r.mail_from == service.from_email), key=lambda r: r.started_at)
        assert len(mine) > 10
        gaps = [b.started_at - a.started_at for a, b in itertools.pairwise(mine)]
        assert min(gaps) >= service.sending_rate - TOLERANCE, sorted(gaps)[:5]
        # Pipelined: some mail started while the one before it was still awaiting its reply.
        assert any(b.started_at < a.replied_at for a, b in itertools.pairwise(mine))
        assert smtp_sink.peak_by_sender[service.from_email] <= service.max_connections


def test_no_service_gets_more_connections_than_its_cap_from_all_schedulers_together(
    smtp_sink, email_service_factory, user_factory, schedulers
):
    smtp_sink.latency = 0.05
    capped = email_service_factory(port=smtp_sink.port, sending_rate=0, max_connections=3, daily_quota=100_000)
    roomy = email_service_factory(port=smtp_sink.port, sending_rate=0, max_connections=10, daily_quota=100_000)
    queue_mail(user_factory, 600, users=6)

    schedulers.start(3, "--until-empty", "--maintenance", "off", "--concurrency", "16")
    assert schedulers.wait(timeout=180) == [0, 0, 0], schedulers.logs()

    assert len(smtp_sink.snapshot()) == 600
    assert 1 <= smtp_sink.peak_by_sender[capped.from_email] <= 3
    assert 1 <= smtp_sink.peak_by_sender[roomy.from_email] <= 10
    # The cap is the bound, not the usual: three schedulers together did use more than one connection each.
    assert smtp_sink.peak_by_sender[roomy.from_email] > 3


class GrantWatcher:
    """Samples the live connection grants from its own connection: the most recorded at once, per service."""

    def __init__(self) -> None:
        self.most: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GrantWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        params = connection.get_connection_params()
        with psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"}, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT service_id, sum(connections) FROM service_connection_grants"
                    " WHERE expires_at > statement_timestamp() GROUP BY service_id"
                ).fetchall()
                for service_id, total in rows:
                    self.most[service_id] = max(self.most.get(service_id, 0), total)
                self._stop.wait(0.002)


def test_schedulers_sharing_busy_services_never_exceed_their_caps_at_the_relay_or_in_the_grants(
    smtp_sink, email_service_factory, user_factory, schedulers
):
    # Every scheduler wants more than its share of every service all the time:
    # the shares move between them as their demand does.
    smtp_sink.latency = 0.005
    services = [
        email_service_factory(port=smtp_sink.port, sending_rate=0, max_connections=5, daily_quota=100_000)
        for _ in range(5)
    ]
    queue_mail(user_factory, 6000, users=20)

    with GrantWatcher() as grants:
        schedulers.start(3, "--until-empty", "--maintenance", "off")
        assert schedulers.wait(timeout=300) == [0, 0, 0], schedulers.logs()

    assert len(smtp_sink.snapshot()) == 6000
    for service in services:
        assert 1 <= smtp_sink.peak_by_sender[service.from_email] <= 5
        assert 1 <= grants.most[service.pk] <= 5
