from __future__ import annotations

import email
import email.policy
import uuid

import pytest

from queues.models import Task
from queues.scheduler.claim import ClaimedSubTask
from queues.scheduler.messages import compile_task, render_mail


def item(**contact) -> ClaimedSubTask:
    return ClaimedSubTask(
        id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        owner_id=uuid.uuid4(),
        service_id=uuid.uuid4(),
        recipient_email="ann@example.org",
        message_id="<0123abcd@edm.test>",
        attempts=0,
        contact={"email": "ann@example.org", "first_name": "Ann", "last_name": "Lee", "attributes": {}, **contact},
    )


def build(**task_fields):
    task = Task(id=uuid.uuid4(), subject="Hi {{ contact.first_name }}", **task_fields)
    return render_mail(compile_task(task), item(), "news@sender.example", "<0123abcd@edm.test>")


def parse(data: bytes) -> email.message.EmailMessage:
    """Parse as a receiving MTA would, after it turned CRLF into local line ends."""
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")  # CRLF only, as SMTP wants
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    return email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)


def test_text_and_html_make_a_multipart_alternative_with_stable_headers():
    mail = build(
        body_text="Hello {{ contact.first_name }},\n.\nThis line starts with a dot.",
        body_html="<p>Hello <b>{{ contact.first_name }}</b></p>",
        from_name="ACME News",
        reply_to="help@acme.example",
    )
    message = parse(mail.data)
    assert message["Message-ID"] == "<0123abcd@edm.test>"
    assert message["From"] == "ACME News <news@sender.example>"
    assert message["To"] == "ann@example.org"
    assert message["Reply-To"] == "help@acme.example"
    assert message["Subject"] == "Hi Ann"
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.get_payload()
    assert text.get_content() == "Hello Ann,\n.\nThis line starts with a dot."
    assert html.get_content() == "<p>Hello <b>Ann</b></p>"
    assert (mail.from_email, mail.recipient) == ("news@sender.example", "ann@example.org")


def test_non_ascii_subject_sender_and_body_are_encoded_and_decode_back():
    task = Task(
        id=uuid.uuid4(),
        subject="Grüße, {{ contact.first_name }} — 春のセール",
        body_text="Schöne Grüße, {{ contact.first_name }}! " + "é" * 2000,
        from_name="Müller & Söhne",
    )
    mail = render_mail(compile_task(task), item(first_name="Zoë"), "news@sender.example", "<x@edm.test>")
    message = parse(mail.data)
    assert mail.data.isascii()
    assert message["Subject"] == "Grüße, Zoë — 春のセール"
    assert message["From"].addresses[0].display_name == "Müller & Söhne"
    assert message.get_content() == "Schöne Grüße, Zoë! " + "é" * 2000 + "\n"


@pytest.mark.parametrize(("field", "subtype"), [("body_text", "plain"), ("body_html", "html")])
def test_a_single_body_is_a_single_part(field, subtype):
    mail = build(**{field: "only {{ contact.last_name }}"})
    message = parse(mail.data)
    assert message.get_content_type() == f"text/{subtype}"
    assert message.get_content() == "only Lee\n"


def test_subject_line_breaks_are_folded_into_spaces():
    task = Task(id=uuid.uuid4(), subject="a {{ contact.first_name }}", body_text="b")
    mail = render_mail(compile_task(task), item(first_name="x\r\nBcc: victim@example.org"), "s@x.example", "<m@x>")
    message = parse(mail.data)
    assert message["Subject"] == "a x Bcc: victim@example.org"
    assert message["Bcc"] is None


@pytest.mark.parametrize(
    ("from_name", "reply_to"),
    [
        ("Evil\r\nBcc: x@example.com", ""),
        ("Evil\nBcc: x@example.com", ""),
        ("News", "a@b.example\r\nBcc: x@example.com"),
    ],
    ids=["crlf-name", "lf-name", "crlf-reply-to"],
)
def test_no_header_value_can_start_a_header_line(from_name, reply_to):
    # Validation refuses these; rows written around it (ORM, SQL) must still not inject headers.
    task = Task(id=uuid.uuid4(), subject="Hi", body_text="b", from_name=from_name, reply_to=reply_to)
    mail = render_mail(compile_task(task), item(), "news@sender.example\r\nBcc: y@example.com", "<m@x>")
    head = mail.data.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n")]
    assert names == [
        b"Date",
        b"From",
        b"To",
        b"Subject",
        b"Message-ID",
        b"List-Unsubscribe",
        b"List-Unsubscribe-Post",
        b"MIME-Version",
    ] + ([b"Reply-To"] if reply_to else []) + [b"Content-Type", b"Content-Transfer-Encoding"]
    assert b"\n" not in head.replace(b"\r\n", b"") and b"\r" not in head.replace(b"\r\n", b"")
    assert parse(mail.data)["Bcc"] is None
