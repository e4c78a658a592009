"""Building the mail for one recipient, fast.

A task's templates are compiled once per worker; each recipient costs three
template renders and a hand-assembled MIME message (quoted-printable through
binascii, headers encoded only when they are not ASCII). The standard library's
email.message generator is several times slower and would cap a worker far
below what one SMTP connection can take.
"""

from __future__ import annotations

import binascii
import threading
import time
import uuid
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate

from deliverability.unsubscribe import ONE_CLICK, list_unsubscribe_uris, unsubscribe_token, unsubscribe_url
from queues.models import Task
from queues.scheduler.claim import ClaimedSubTask
from queues.templates import MailTemplate, compile_template, contact_context

CRLF = b"\r\n"
MAX_LINE = 998
MAX_ADDRESS = 254  # RFC 5321's path limit, less the angle brackets


@dataclass(frozen=True)
class CompiledTask:
    task_id: uuid.UUID
    subject: MailTemplate
    text: MailTemplate | None
    html: MailTemplate | None
    from_name: str
    reply_to: str


# Compiled templates by their source: many tasks share the same content (a
# transactional mail is one task per recipient), and compiling three
# templates costs more than sending the mail. Bounded; cleared when full.
_COMPILED: dict[tuple[str, str, str], tuple[MailTemplate, MailTemplate | None, MailTemplate | None]] = {}
_COMPILED_MAX = 1000
_compiled_lock = threading.Lock()


def compile_task(task: Task) -> CompiledTask:
    """The task's templates, compiled (or taken from the cache of identical content); raises TemplateError."""
    key = (task.subject, task.body_text, task.body_html)
    with _compiled_lock:
        compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = (
            compile_template(task.subject, html=False, field="subject"),
            compile_template(task.body_text, html=False, field="body_text") if task.body_text.strip() else None,
            compile_template(task.body_html, html=True, field="body_html") if task.body_html.strip() else None,
        )
        with _compiled_lock:
            if len(_COMPILED) >= _COMPILED_MAX:
                _COMPILED.clear()
            _COMPILED[key] = compiled
    subject, text, html = compiled
    return CompiledTask(
        task_id=task.pk, subject=subject, text=text, html=html, from_name=task.from_name, reply_to=task.reply_to
    )


@dataclass(frozen=True)
class RenderedMail:
    """One recipient's mail: the envelope and the message, plus its parts for non-SMTP backends."""

    from_email: str
    recipient: str
    message_id: str
    subject: str
    text: str | None
    html: str | None
    from_header: str
    reply_to: str
    data: bytes
    # Headers a backend must add to the message it builds (the raw ``data`` has them already).
    extra_headers: tuple[tuple[str, str], ...] = ()


_date_cache = threading.local()


def _date_header() -> str:
    # formatdate costs microseconds; one value per second is exact enough.
    second = int(time.time())
    if getattr(_date_cache, "second", None) != second:
        _date_cache.second = second
        _date_cache.value = formatdate(second, usegmt=True)
    return _date_cache.value


def _one_line(value: str) -> str:
    """A header value as one line: a CR or LF in it would start a header of its own (Bcc: ...)."""
    return " ".join(value.split()) if "\r" in value or "\n" in value else value


def _header(value: str) -> str:
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(linesep="\r\n")


def _part(text: str, subtype: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    if body.isascii() and all(len(line) <= MAX_LINE for line in body.split("\n")):
        encoding, payload = "7bit", body.encode("ascii")
    else:
        encoding, payload = "quoted-printable", binascii.b2a_qp(body.encode("utf-8"), istext=True)
    payload = payload.replace(b"\n", CRLF)
    head = f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
    return head.encode("ascii") + payload + CRLF


class UnsendableAddress(ValueError):
    """An address plain SMTP cannot carry: a permanent failure of the subtask, never retried."""


def smtp_address(address: str) -> str:
    """The address as the envelope and the To header carry it: the domain IDNA-encoded (RFC 5890).

    The same encoding validation applies (Django's EmailValidator), so every
    address accepted at creation can be encoded. A non-ASCII local part would
    need SMTPUTF8 (RFC 6531), which the scheduler does not speak.
    """
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    if not at or not local.isascii():
        raise UnsendableAddress(
            f"recipient {address!r} cannot be sent: its local part is not ASCII (SMTPUTF8 is not supported)"
        )
    try:
        encoded = f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError as exc:
        raise UnsendableAddress(f"recipient {address!r} cannot be sent: its domain is not valid IDNA ({exc})") from None
    if len(encoded) > MAX_ADDRESS:
        raise UnsendableAddress(
            f"recipient {address!r} cannot be sent: IDNA-encoded it is {len(encoded)} characters, over {MAX_ADDRESS}"
        )
    return encoded


def render_mail(compiled: CompiledTask, item: ClaimedSubTask, from_email: str, message_id: str) -> RenderedMail:
    recipient = smtp_address(item.recipient_email)
    contact = contact_context(item.recipient_email, item.contact)
    token = unsubscribe_token(owner_id=item.owner_id, task_id=item.task_id, email=item.recipient_email)
    url = unsubscribe_url(token)
    unsubscribe_uris = list_unsubscribe_uris(token, url)
    variables = {"unsubscribe_url": url}
    subject = " ".join(compiled.subject.render(contact, variables).split())
    text = compiled.text.render(contact, variables) if compiled.text else None
    html = compiled.html.render(contact, variables) if compiled.html else None
    # Validation refuses line breaks in these; rows written around it must not inject headers either.
    from_name, from_email, reply_to = _one_line(compiled.from_name), _one_line(from_email), _one_line(compiled.reply_to)
    from_header = formataddr((from_name, from_email), charset="utf-8") if from_name else from_email
    headers = [
        f"Date: {_date_header()}",
        f"From: {from_header}",
        f"To: {_one_line(recipient)}",
        f"Subject: {_header(subject)}",
        f"Message-ID: {_one_line(message_id)}",
        # RFC 2369 and RFC 8058; a second entry goes on a line of its own (a long address makes a long token).
        "List-Unsubscribe: " + ",\r\n ".join(unsubscribe_uris),
        f"List-Unsubscribe-Post: {ONE_CLICK}",
        "MIME-Version: 1.0",
    ]
    if reply_to:
        headers.append(f"Reply-To: {reply_to}")
    if text is not None and html is not None:
        boundary = f"==edm-{uuid.uuid4().hex}"
        headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        sep = f"--{boundary}\r\n".encode("ascii")
        body = CRLF + sep + _part(text, "plain") + sep + _part(html, "html") + f"--{boundary}--\r\n".encode("ascii")
        data = "\r\n".join(headers).encode("ascii") + CRLF + body
    else:
        part = _part(text if text is not None else html or "", "plain" if text is not None else "html")
        data = "\r\n".join(headers).encode("ascii") + CRLF + part
    return RenderedMail(
        from_email=from_email,
        recipient=recipient,
        message_id=message_id,
        subject=subject,
        text=text,
        html=html,
        from_header=from_header,
        reply_to=reply_to,
        data=data,
        extra_headers=(("List-Unsubscribe", ", ".join(unsubscribe_uris)), ("List-Unsubscribe-Post", ONE_CLICK)),
    )
