"""List-Unsubscribe headers and {{ unsubscribe_url }} in the mail render_mail builds."""

from __future__ import annotations

import uuid

import pytest

from deliverability.unsubscribe import UnsubscribeLink, unsubscribe_token_read
from queues.models import Task
from queues.scheduler.claim import ClaimedSubTask
from queues.scheduler.messages import compile_task, render_mail
from tests.queues.test_messages import parse

BASE = "https://mail.example.com/edm"


@pytest.fixture(autouse=True)
def public_url(settings):
    settings.EDM_PUBLIC_URL = BASE
    settings.EDM_UNSUBSCRIBE_MAILTO = None


def item(recipient: str = "ann@example.org") -> ClaimedSubTask:
    return ClaimedSubTask(
        id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        owner_id=uuid.uuid4(),
        service_id=uuid.uuid4(),
        recipient_email=recipient,
        message_id="<m@edm.test>",
        attempts=0,
        contact={"email": recipient, "first_name": "Ann", "last_name": "Lee", "attributes": {}},
    )


def build(claimed: ClaimedSubTask, **task_fields):
    task = Task(id=claimed.task_id, subject=task_fields.pop("subject", "Hi"), **task_fields)
    return render_mail(compile_task(task), claimed, "news@sender.example", "<m@edm.test>")


def token_of(url: str) -> str:
    assert url.startswith(f"{BASE}/u/") and url.endswith("/")
    return url[len(f"{BASE}/u/") : -1]


def test_every_mail_carries_a_one_click_list_unsubscribe_naming_its_owner_task_and_recipient():
    claimed = item()
    mail = build(claimed, body_text="b")
    message = parse(mail.data)

    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header = message["List-Unsubscribe"]
    assert header.startswith("<") and header.endswith(">") and "," not in header
    assert unsubscribe_token_read(token_of(header[1:-1])) == UnsubscribeLink(
        owner_id=claimed.owner_id, task_id=claimed.task_id, email="ann@example.org"
    )
    # A backend builds its own message: it gets the same headers.
    assert mail.extra_headers == (
        ("List-Unsubscribe", header),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    )


def test_with_a_mailbox_configured_it_is_the_second_entry_on_a_line_of_its_own(settings):
    settings.EDM_UNSUBSCRIBE_MAILTO = "unsubscribe@sender.example"
    mail = build(item(), body_text="b")

    line = next(h for h in mail.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if h.startswith(b"List-Unsubscribe:"))
    assert line.endswith(b",")  # folded: the mailto follows on a continuation line
    url, mailto = parse(mail.data)["List-Unsubscribe"].split(", ")
    token = token_of(url[1:-1])
    assert mailto == f"<mailto:unsubscribe@sender.example?subject=unsubscribe%20{token}>"
    assert dict(mail.extra_headers)["List-Unsubscribe"] == f"{url}, {mailto}"


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".org", id="254-characters"),
        # Sendable (196 characters IDNA-encoded) and 520 bytes in UTF-8.
        pytest.param("a@" + ".".join(["一" * 57] * 3) + ".cn", id="idn-520-bytes"),
    ],
)
def test_the_longest_addresses_keep_every_header_line_within_998_characters(settings, address):
    settings.EDM_PUBLIC_URL = "https://" + "m" * 180 + ".example.com"  # about the longest allowed
    settings.EDM_UNSUBSCRIBE_MAILTO = "unsubscribe@sender.example"
    message = parse(build(item(address), body_text="b").data)  # parse() checks the line lengths
    url = message["List-Unsubscribe"].split(", ")[0][1:-1]
    token = url[len(settings.EDM_PUBLIC_URL) + len("/u/") : -1]
    assert unsubscribe_token_read(token).email == address


@pytest.mark.parametrize(
    ("body", "greeting"),
    [
        pytest.param("Hi {{ contact.first_name }}, leave: {{ unsubscribe_url }}", "Hi Ann", id="fast-path"),
        pytest.param("Hi {{ contact.first_name|upper }}, leave: {{ unsubscribe_url }}", "Hi ANN", id="django-path"),
    ],
)
def test_unsubscribe_url_in_the_templates_is_the_headers_url(body, greeting):
    mail = build(
        item(),
        subject="News ({{ unsubscribe_url }})",
        body_text=body,
        body_html=f'<a href="{{{{ unsubscribe_url }}}}">{body}</a>',
    )
    message = parse(mail.data)
    url = message["List-Unsubscribe"][1:-1]
    text, html = message.get_payload()
    assert text.get_content() == f"{greeting}, leave: {url}"
    assert html.get_content() == f'<a href="{url}">{greeting}, leave: {url}</a>'

    assert message["Subject"] == f"News ({url})"
