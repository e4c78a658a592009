"""Internationalised recipients: the domain goes out IDNA-encoded; what cannot be encoded fails at once."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from queues.models import SendAttempt, SubTask
from queues.scheduler.messages import UnsendableAddress, smtp_address
from queues.services import task_create

pytestmark = pytest.mark.django_db(transaction=True)

# 155 characters, a valid address (validation counts them as typed); 263 once the domain is encoded.
_LABEL = "".join(chr(0x4E00 + i * 37) for i in range(22))
LONG_IDN = f"{'a' * 60}@{_LABEL}.{_LABEL}.{_LABEL}.{_LABEL}.cn"


def test_an_idn_domain_is_sent_idna_encoded_in_the_envelope_and_the_to_header(smtp_sink, email_service_factory, user):
    smtp_sink.keep_content = True
    service = email_service_factory(port=smtp_sink.port, sending_rate=0)
    task_create(owner=user, name="idn", subject="s", body_text="b", recipients=["user@bücher.de"])

    call_command("run_scheduler", "--once")

    sub = SubTask.objects.get()
    assert (sub.status, sub.attempts, sub.recipient_email) == ("sent", 1, "user@bücher.de")
    (record,) = smtp_sink.snapshot()
    assert record.recipient == "user@xn--bcher-kva.de"
    assert b"\r\nTo: user@xn--bcher-kva.de\r\n" in record.content
    service.refresh_from_db()
    assert service.used_quota == 1


def test_an_address_that_cannot_be_encoded_fails_at_once_without_a_retry(smtp_sink, email_service_factory, user):
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    task_create(owner=user, name="legacy", subject="s", body_text="b", recipients=["joerg@example.org"])
    # Refused by validation today; rows from before it, or written around it, may still hold one.
    SubTask.objects.update(recipient_email="jörg@example.org")
    sub = SubTask.objects.get()

    call_command("run_scheduler", "--once")

    sub.refresh_from_db()
    assert (sub.status, sub.attempts) == ("failed", 1)
    assert sub.error_message == (
        "recipient 'jörg@example.org' cannot be sent: its local part is not ASCII (SMTPUTF8 is not supported)"
    )
    assert smtp_sink.snapshot() == []
    assert list(SendAttempt.objects.values_list("outcome", flat=True)) == ["permanent"]


@pytest.mark.parametrize(
    ("address", "encoded"),
    [
        pytest.param("ann@example.org", "ann@example.org", id="ascii-unchanged"),
        pytest.param("user@bücher.de", "user@xn--bcher-kva.de", id="idn-domain"),
        pytest.param("a@☃.net", "a@xn--n3h.net", id="symbol-domain"),
    ],
)
def test_smtp_address_encodes_the_domain(address, encoded):
    assert smtp_address(address) == encoded


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        pytest.param("jörg@example.org", "its local part is not ASCII", id="non-ascii-local-part"),
        pytest.param(LONG_IDN, "IDNA-encoded it is 263 characters, over 254", id="too-long-once-encoded"),
    ],
)
def test_an_unsendable_address_says_why(address, reason):
    with pytest.raises(UnsendableAddress, match=reason):
        smtp_address(address)
