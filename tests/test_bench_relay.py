"""The measuring relay of the throughput benchmark counts what the README quotes from it.

bench/relay.py attributes each connection to the service whose address its
first MAIL FROM names, keeps the peak of open connections per service and
overall, and records each accepted mail's MAIL FROM time and sender.
"""

from __future__ import annotations

import smtplib
import socket
import time
from collections import Counter

import pytest
from django.core.management import call_command

from bench.relay import Relay, request
from queues.models import SendAttempt
from queues.services import task_create

MESSAGE = b"Subject: hi\r\n\r\nHello.\r\n"


@pytest.fixture
def relay():
    relay = Relay().start()
    yield relay
    relay.stop()


def connect(relay: Relay) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", relay.port, timeout=10)


def settled(relay: Relay, open_connections: int) -> dict:
    """The relay's figures once it has seen the connections close down to ``open_connections``."""
    deadline = time.monotonic() + 10
    while True:
        stats = relay.stats()
        if stats["connections"]["open"] == open_connections or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


def test_peaks_of_open_connections_per_service_and_overall(relay):
    a_sessions = [connect(relay) for _ in range(3)]
    for session in a_sessions:
        session.sendmail("A@x.example", ["r@y.example"], MESSAGE)
    b_sessions = [connect(relay) for _ in range(2)]
    for session in b_sessions:
        session.sendmail("b@x.example", ["r@y.example"], MESSAGE)
    idle = connect(relay)  # connected, no MAIL FROM yet: counts overall, for no service

    stats = relay.stats()
    assert stats["connections"] == {"opened": 6, "open": 6, "peak": 6}
    a, b = stats["services"]["a@x.example"], stats["services"]["b@x.example"]
    assert (a["open"], a["peak_connections"], a["connections"]) == (3, 3, 3)
    assert (b["open"], b["peak_connections"], b["connections"]) == (2, 2, 2)

    # One of a's connections closes and another opens: a had 3 at most, 4 in all.
    a_sessions.pop().quit()
    settled(relay, 5)
    replacement = connect(relay)
    replacement.sendmail("a@x.example", ["r@y.example"], MESSAGE)
    stats = relay.stats()
    a = stats["services"]["a@x.example"]
    assert (a["open"], a["peak_connections"], a["connections"], a["accepted"]) == (3, 3, 4, 4)
    assert stats["connections"] == {"opened": 7, "open": 6, "peak": 6}

    for session in [*a_sessions, *b_sessions, idle, replacement]:
        session.quit()
    stats = settled(relay, 0)
    assert stats["connections"] == {"opened": 7, "open": 0, "peak": 6}
    assert {s["open"] for s in stats["services"].values()} == {0}
    assert {k: s["peak_connections"] for k, s in stats["services"].items()} == {"a@x.example": 3, "b@x.example": 2}


def test_mails_count_for_their_own_sender_and_connections_for_their_first(relay):
    session = connect(relay)
    before_first = time.perf_counter()
    session.sendmail("<a@x.example>", ["r@y.example"], MESSAGE)
    after_first = time.perf_counter()
    session.sendmail("b@x.example", ["r@y.example"], MESSAGE)
    # A transaction given up with RSET is no accepted mail.
    session.mail("b@x.example")
    session.rset()
    before_last = time.perf_counter()
    session.sendmail("b@x.example", ["r@y.example"], MESSAGE)
    after_last = time.perf_counter()

    stats = relay.stats(times=True)
    a, b = stats["services"]["a@x.example"], stats["services"]["b@x.example"]
    assert (a["accepted"], a["connections"], a["peak_connections"]) == (1, 1, 1)
    assert (b["accepted"], b["connections"], b["peak_connections"]) == (2, 0, 0)
    assert stats["accepted"] == 3
    assert a["bytes"] == len(MESSAGE)
    # The MAIL FROM times are this process's perf_counter, relative to the relay's start.
    start = stats["clock"]["perf_counter"]
    (a_time,) = a["mail_from"]
    assert before_first - 1e-6 <= start + a_time <= after_first + 1e-6
    assert start + b["mail_from"][-1] >= before_last - 1e-6
    assert start + b["mail_from"][-1] <= after_last + 1e-6
    assert b["mail_from"][0] < b["mail_from"][1]
    assert b["min_gap_ms"] == pytest.approx((b["mail_from"][1] - b["mail_from"][0]) * 1000, abs=0.01)
    assert stats["first_mail_from"] == a_time
    assert stats["last_reply"] >= b["mail_from"][-1]
    session.quit()


def test_pipelined_commands_get_their_replies_in_order_when_replies_are_late():
    relay = Relay(latency=0.02, command_latency=0.005).start()
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"220")
            sock.sendall(b"EHLO me\r\n")
            assert [reader.readline()[:4] for _ in range(3)] == [b"250-", b"250-", b"250 "]
            sock.sendall(b"MAIL FROM:<p@x.example> BODY=8BITMIME\r\nRCPT TO:<r@y.example>\r\nDATA\r\n")
            assert [reader.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
            sock.sendall(b"Subject: x\r\n\r\n..dot\r\n.\r\nMAIL FROM:<q@x.example>\r\nRSET\r\nQUIT\r\n")
            assert [reader.readline()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"221"]
        stats = relay.stats()
        # q's transaction was given up: no mail of q's, and the connection stays p's.
        assert {k: (v["accepted"], v["connections"]) for k, v in stats["services"].items()} == {"p@x.example": (1, 1)}
        assert stats["latency_ms"] == 20
    finally:
        relay.stop()


def test_the_control_port_answers_stats_and_resets_them(relay):
    session = connect(relay)
    session.sendmail("a@x.example", ["r@y.example"], MESSAGE)
    assert request(relay.control_port, "stats")["accepted"] == 1
    assert "mail_from" in request(relay.control_port, "stats times")["services"]["a@x.example"]
    assert request(relay.control_port, "reset") == {"reset": True}
    stats = request(relay.control_port, "stats")
    # The open connection still counts after the reset; its mail does not.
    assert (stats["accepted"], stats["connections"]["open"], stats["connections"]["peak"]) == (0, 1, 1)
    assert stats["services"]["a@x.example"]["peak_connections"] == 1
    assert "error" in request(relay.control_port, "nonsense")
    session.quit()


@pytest.mark.django_db(transaction=True)
def test_the_schedulers_mails_are_attributed_to_the_services_that_sent_them(relay, email_service_factory, user):
    services = [email_service_factory(port=relay.port, sending_rate=0) for _ in range(2)]
    task_create(
        owner=user, name="n", subject="Hi", body_text="Hello", recipients=[f"r{i}@x.example" for i in range(30)]
    )

    call_command("run_scheduler", "--until-empty", "--maintenance", "off")

    sent = Counter(SendAttempt.objects.filter(outcome="sent").values_list("service__from_email", flat=True).iterator())
    assert sum(sent.values()) == 30
    stats = settled(relay, 0)
    assert {k: v["accepted"] for k, v in stats["services"].items()} == {
        s.from_email.lower(): sent[s.from_email] for s in services if sent[s.from_email]
    }
    for service in services:
        if sent[service.from_email]:
            assert stats["services"][service.from_email.lower()]["peak_connections"] >= 1
