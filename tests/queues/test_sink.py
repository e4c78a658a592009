"""The test SMTP sink's own measures: when each MAIL FROM arrived."""

from __future__ import annotations

import smtplib
import threading
import time

import pytest

# Arrival stamps are the kernel's; the clients' clocks are read just after their writes.
STAMP_TOLERANCE = 0.005


def open_session(port: int) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
    smtp.ehlo()
    return smtp


def hold_the_sink(sink, seconds: float) -> None:
    """Keep the sink's thread busy for ``seconds`` from now, as a full garbage collection of the
    test process (150 ms seen on a loaded machine) or a thread the kernel puts off would."""
    holding = threading.Event()

    def hold() -> None:
        holding.set()
        time.sleep(seconds)

    sink._loop.call_soon_threadsafe(hold)
    assert holding.wait(timeout=5)


def finish(smtp: smtplib.SMTP, recipient: str) -> None:
    assert smtp.getreply()[0] == 250  # to MAIL FROM
    assert smtp.rcpt(recipient)[0] == 250
    assert smtp.data(f"Message-ID: <{recipient}>\r\n\r\nhello\r\n")[0] == 250
    smtp.quit()


@pytest.mark.parametrize("held", [0.0, 0.15], ids=["sink free", "sink held up"])
def test_mail_from_is_stamped_when_it_arrived_not_when_the_sink_got_to_it(smtp_sink, held):
    first, second = open_session(smtp_sink.port), open_session(smtp_sink.port)
    if held:
        hold_the_sink(smtp_sink, held)
    # Two services' worth of starts, 50 ms apart, on two sessions; the replies are read afterwards.
    first.putcmd("mail", "FROM:<one@sender.example>")
    first_sent = time.time()
    time.sleep(0.05)
    second.putcmd("mail", "FROM:<two@sender.example>")
    second_sent = time.time()
    finish(first, "a@example.org")
    finish(second, "b@example.org")

    stamps = {r.mail_from: r.started_at for r in smtp_sink.snapshot()}
    assert sorted(stamps) == ["one@sender.example", "two@sender.example"]
    assert abs(stamps["one@sender.example"] - first_sent) < STAMP_TOLERANCE
    assert abs(stamps["two@sender.example"] - second_sent) < STAMP_TOLERANCE
    assert stamps["two@sender.example"] - stamps["one@sender.example"] >= 0.05 - STAMP_TOLERANCE
