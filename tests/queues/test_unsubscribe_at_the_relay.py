"""Campaign mail as a relay receives it carries one-click unsubscribe links that work.

A task goes through the scheduler to a real SMTP server (the sink), by an SMTP
service and by a Django e-mail backend service; the received headers are
checked, then the link is used the way a mailbox provider uses it: a POST with
no session and no CSRF token.
"""

from __future__ import annotations

import email
import email.policy

import pytest
from django.core.management import call_command
from django.test import Client

from deliverability.models import Suppression
from deliverability.unsubscribe import UnsubscribeLink, unsubscribe_token_read
from queues.models import EmailService, SubTask
from queues.services import task_create

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "https://mail.example.test/edm"


@pytest.fixture(autouse=True)
def public_url(settings):
    settings.EDM_PUBLIC_URL = BASE
    settings.EDM_UNSUBSCRIBE_MAILTO = None


def send_one(user, recipient: str = "Ann@Example.org"):
    task = task_create(
        owner=user,
        name="news",
        subject="News",
        body_text="Hello {{ contact.first_name }}. Leave: {{ unsubscribe_url }}",
        recipients=[{"email": recipient, "first_name": "Ann"}],
    )
    call_command("run_scheduler", "--once")
    sub = SubTask.objects.get()
    assert (sub.status, sub.recipient_email) == ("sent", "Ann@example.org")  # the domain is stored lowercased
    return task


def received(sink) -> email.message.EmailMessage:
    (record,) = sink.snapshot()
    return email.message_from_bytes(record.content.replace(b"\r\n", b"\n"), policy=email.policy.default)


def path_of(url: str) -> str:
    """The URL's path on this site: the proxy in front serves EDM_PUBLIC_URL's path prefix from /."""
    assert url.startswith(f"{BASE}/u/") and url.endswith("/")
    return url[len(BASE) :]


def one_click(client: Client, path: str):
    """What a mailbox provider sends (RFC 8058): a form POST with the one-click field, nothing else."""
    return client.post(path, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded")


def test_a_sent_mail_carries_a_working_one_click_link(smtp_sink, email_service_factory, user):
    smtp_sink.keep_content = True
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    task = send_one(user)

    message = received(smtp_sink)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header = message["List-Unsubscribe"]
    assert header.startswith("<") and header.endswith(">")
    url = header[1:-1]
    path = path_of(url)
    assert unsubscribe_token_read(path[len("/u/") : -1]) == UnsubscribeLink(
        owner_id=user.pk, task_id=task.pk, email="Ann@example.org"
    )
    assert message.get_content() == f"Hello Ann. Leave: {url}\n"

    client = Client(enforce_csrf_checks=True)
    assert client.get(path).status_code == 200
    assert Suppression.objects.count() == 0  # a GET (a link scanner) unsubscribes nobody
    tampered = path[:10] + ("A" if path[10] != "A" else "B") + path[11:]  # a character of the owner's id
    assert one_click(client, tampered).status_code == 400
    assert Suppression.objects.count() == 0

    first, second = one_click(client, path), one_click(client, path)

    assert (first.status_code, second.status_code) == (200, 200)
    assert list(Suppression.objects.values_list("owner_id", "email", "reason", "source", "task_id")) == [
        (user.pk, "ann@example.org", "unsubscribed", "unsubscribe", task.pk)
    ]


def test_after_a_one_click_unsubscribe_the_owners_next_campaign_skips_the_address_at_the_relay(
    smtp_sink, email_service_factory, user
):
    smtp_sink.keep_content = True
    service = email_service_factory(port=smtp_sink.port, sending_rate=0)
    send_one(user)
    url = received(smtp_sink)["List-Unsubscribe"][1:-1]
    assert one_click(Client(enforce_csrf_checks=True), path_of(url)).status_code == 200
    service.refresh_from_db()
    charged = service.used_quota

    task = task_create(
        owner=user,
        name="next",
        subject="Next",
        body_text="Hello again",
        recipients=[{"email": "ANN@example.org"}, {"email": "bob@example.org"}],
    )
    call_command("run_scheduler", "--until-empty")

    assert sorted(r.recipient for r in smtp_sink.snapshot()) == ["Ann@example.org", "bob@example.org"]
    assert dict(task.subtasks.values_list("recipient_email", "status")) == {
        "ANN@example.org": "suppressed",
        "bob@example.org": "sent",
    }
    service.refresh_from_db()
    assert service.used_quota == charged + 1
    task.refresh_from_db()
    assert task.status == "completed"


def test_a_backend_service_sends_the_same_headers(smtp_sink, email_service_factory, user, settings):
    settings.EDM_UNSUBSCRIBE_MAILTO = "unsubscribe@sender.example"
    smtp_sink.keep_content = True
    email_service_factory(
        transport=EmailService.Transport.BACKEND,
        backend_path="django.core.mail.backends.smtp.EmailBackend",
        backend_options={"host": "127.0.0.1", "port": smtp_sink.port},
        sending_rate=0,
    )
    task = send_one(user)

    message = received(smtp_sink)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url, mailto = (entry.strip() for entry in message["List-Unsubscribe"].split(","))
    token = path_of(url[1:-1])[len("/u/") : -1]
    assert mailto == f"<mailto:unsubscribe@sender.example?subject=unsubscribe%20{token}>"
    assert unsubscribe_token_read(token) == UnsubscribeLink(owner_id=user.pk, task_id=task.pk, email="Ann@example.org")

    assert one_click(Client(enforce_csrf_checks=True), path_of(url[1:-1])).status_code == 200
    assert list(Suppression.objects.values_list("email", flat=True)) == ["ann@example.org"]
