"""ESP tracking events (django-anymail's ``tracking`` signal) that suppress an address.

anymail's webhook views check the request (basic auth, the ESP's signature),
normalise each ESP's payload to an ``AnymailTrackingEvent`` and send the
``tracking`` signal; ``tracking_event_received`` (queues/esp_events.py, which
knows the sent mail) turns three kinds of event into an entry of the suppression
list, with the rules here:

- ``bounced``, when the ESP says the failure is permanent -> hard_bounce;
  a soft bounce or a ``deferred`` event suppresses nothing;
- ``complained`` -> complaint;
- ``unsubscribed`` -> unsubscribed.

Every other event is ignored. The entry belongs to the owner whose mail the
event is about: the subtask whose Message-ID the event carries (anywhere in
it: anymail's message_id, the metadata or the ESP's raw payload), else the
most recent sent subtask to the event's recipient. An event that matches no
subtask records nothing: it may concern mail this platform did not send (an
ESP account shared with another system), and a platform-wide entry would
stop every owner's mail on the word of one unattributed event.

Repeated deliveries of an event change nothing: suppression_add keeps the
first entry for an owner and address.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from anymail.signals import AnymailTrackingEvent, EventType
from django.http import QueryDict

from deliverability.models import Suppression

# Our Message-IDs: "<" + the subtask id's 32 hex digits + "@" + a domain + ">".
_OUR_MESSAGE_ID = re.compile(r"<([0-9a-f]{32})@[^<>@\s\"']+>", re.IGNORECASE)
# The first SMTP reply code (550) or enhanced status (5.1.1) in a text.
_SMTP_CODE = re.compile(r"(?<![\w.])([245])(?:\d\d|\.\d{1,3}\.\d{1,3})(?![\w.])")
# The longest evidence kept in an entry's detail.
DETAIL_MAX = 1000


def _smtp_says_permanent(text: object) -> bool:
    found = _SMTP_CODE.search(str(text or ""))
    return found is not None and found.group(1) == "5"


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _mailgun_permanent(event: AnymailTrackingEvent) -> bool:
    raw = event.esp_event
    if isinstance(raw, QueryDict):
        # Mailgun's legacy webhooks post only hard bounces as "bounced".
        return True
    return _get(raw, "event-data", "severity") == "permanent"


def _sendgrid_permanent(event: AnymailTrackingEvent) -> bool:
    # "type" is "bounce" (a hard bounce) or "blocked" (refused for now, not a bad address).
    bounce_type = _get(event.esp_event, "type")
    if bounce_type:
        return bounce_type == "bounce"
    return _smtp_says_permanent(_get(event.esp_event, "status") or event.mta_response)


# How each ESP says that a bounce is permanent, for those whose anymail
# ``bounced`` event also carries soft bounces (or that say it outright).
# Any other ESP: a 5xx SMTP code in the MTA's response.
_PERMANENT_BOUNCE: dict[str, Callable[[AnymailTrackingEvent], bool]] = {
    "Amazon SES": lambda e: _get(e.esp_event, "bounce", "bounceType") == "Permanent",
    "Brevo": lambda e: _get(e.esp_event, "event") in {"hard_bounce", "invalid_email"},
    "SendinBlue": lambda e: _get(e.esp_event, "event") in {"hard_bounce", "invalid_email"},
    "MailerSend": lambda e: _get(e.esp_event, "data", "type") == "hard_bounced",
    "Mailgun": _mailgun_permanent,
    "Mailjet": lambda e: _get(e.esp_event, "hard_bounce") is True,
    # These two report soft bounces as ``deferred``: a ``bounced`` event is a hard one.
    "Mailtrap": lambda e: True,
    "Unisender Go": lambda e: True,
    "Mandrill": lambda e: _get(e.esp_event, "event") == "hard_bounce",
    "Postmark": lambda e: "HardBounce" in (_get(e.esp_event, "Type"), _get(e.esp_event, "SuppressionReason")),
    "Resend": lambda e: _get(e.esp_event, "data", "bounce", "type") == "Permanent",
    "SendGrid": _sendgrid_permanent,
}


def bounce_is_permanent(event: AnymailTrackingEvent, esp_name: str) -> bool:
    """Whether the ESP says this ``bounced`` event is permanent (an unknown answer is "no")."""
    rule = _PERMANENT_BOUNCE.get(esp_name)
    if rule is not None:
        return bool(rule(event))
    return _smtp_says_permanent(event.mta_response)


def suppression_reason(event: AnymailTrackingEvent, esp_name: str) -> str | None:
    """The suppression reason this event calls for, or None if it calls for none."""
    if event.event_type == EventType.BOUNCED:
        return Suppression.Reason.HARD_BOUNCE if bounce_is_permanent(event, esp_name) else None
    if event.event_type == EventType.COMPLAINED:
        return Suppression.Reason.COMPLAINT
    if event.event_type == EventType.UNSUBSCRIBED:
        return Suppression.Reason.UNSUBSCRIBED
    return None


def _raw_text(raw: Any) -> str:
    if isinstance(raw, QueryDict):
        raw = dict(raw.lists())
    try:
        return json.dumps(raw, default=str)
    except (TypeError, ValueError):
        return str(raw)


def message_ids_in(event: AnymailTrackingEvent) -> Iterator[str]:
    """Every Message-ID of ours the event carries, most telling first, lowercased, once each."""
    seen: set[str] = set()
    for text in (event.message_id, _raw_text(event.metadata), _raw_text(event.esp_event)):
        for found in _OUR_MESSAGE_ID.finditer(str(text or "")):
            message_id = found.group(0).lower()
            if message_id not in seen:
                seen.add(message_id)
                yield message_id


def event_detail(event: AnymailTrackingEvent, esp_name: str) -> str:
    parts = [f"{esp_name} {event.event_type}"]
    parts += [str(text).strip() for text in (event.description, event.mta_response) if text and str(text).strip()]
    if event.event_id:
        parts.append(f"event {event.event_id}")
    return "; ".join(parts)[:DETAIL_MAX]
