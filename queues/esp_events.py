"""ESP tracking events attributed to the mail they are about, and suppressed there.

django-anymail's ``tracking`` signal (connected in QueuesConfig.ready()) calls
``tracking_event_received``; which events suppress, and for what reason, is
deliverability.webhooks' to say. See that module for the rules.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from anymail.signals import AnymailTrackingEvent
from django.db.models import F

from deliverability.suppressions import email_normalise, suppression_add
from deliverability.webhooks import event_detail, message_ids_in, suppression_reason
from queues.models import SubTask

logger = logging.getLogger(__name__)


def subtask_for_event(event: AnymailTrackingEvent, recipient: str | None) -> SubTask | None:
    """The subtask the event is about: by our Message-ID, else the last one sent to ``recipient``."""
    candidates = {uuid.UUID(message_id[1:33]): message_id for message_id in message_ids_in(event)}
    if candidates:
        for subtask in SubTask.objects.filter(pk__in=candidates).order_by("-created_at"):
            if subtask.message_id.lower() != candidates[subtask.pk]:
                continue
            if recipient is None or email_normalise(subtask.recipient_email) == recipient:
                return subtask
    if recipient is None:
        return None
    return (
        SubTask.objects.filter(recipient_email__iexact=recipient, status=SubTask.Status.SENT)
        .order_by(F("sent_at").desc(nulls_last=True), "-created_at")
        .first()
    )


def tracking_event_received(sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
    """anymail ``tracking`` signal receiver: suppress the recipient for the owner who mailed them."""
    reason = suppression_reason(event, esp_name)
    if reason is None:
        return
    recipient = email_normalise(event.recipient) if event.recipient else None
    subtask = subtask_for_event(event, recipient)
    if subtask is None:
        logger.warning(
            "ESP event matches no sent mail; nothing suppressed",
            extra={"esp": esp_name, "event": event.event_type, "event_id": event.event_id, "recipient": recipient},
        )
        return
    entry, created = suppression_add(
        owner_id=subtask.owner_id,
        email=recipient or subtask.recipient_email,
        reason=reason,
        source=f"webhook:{esp_name.lower().replace(' ', '_')}",
        task_id=subtask.task_id,
        subtask_id=subtask.pk,
        service_id=subtask.service_id,
        detail=event_detail(event, esp_name),
    )
    if created:
        logger.info(
            "address suppressed by an ESP event",
            extra={"esp": esp_name, "reason": reason, "owner": subtask.owner_id, "suppression": str(entry.pk)},
        )
