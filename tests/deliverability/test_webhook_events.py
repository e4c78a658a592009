"""Which normalised ESP events call for a suppression (no request, no database)."""

from __future__ import annotations

import pytest
from anymail.signals import AnymailTrackingEvent
from django.http import QueryDict

from deliverability.webhooks import bounce_is_permanent, message_ids_in, suppression_reason


def bounced(esp_event, mta_response=None) -> AnymailTrackingEvent:
    return AnymailTrackingEvent(event_type="bounced", esp_event=esp_event, mta_response=mta_response)


@pytest.mark.parametrize(
    ("esp_name", "esp_event", "mta_response", "permanent"),
    [
        ("Mailgun", {"event-data": {"event": "failed", "severity": "permanent"}}, None, True),
        ("Mailgun", {"event-data": {"event": "failed"}}, "550 no such user", False),
        ("Mailgun", QueryDict("event=bounced&code=550"), None, True),
        ("SendGrid", {"event": "bounce", "type": "bounce", "status": "5.1.1"}, None, True),
        ("SendGrid", {"event": "bounce", "type": "blocked", "status": "5.0.0"}, None, False),
        ("SendGrid", {"event": "bounce", "status": "5.0.0", "reason": "500 unknown recipient"}, None, True),
        ("SendGrid", {"event": "bounce", "status": "4.2.2"}, None, False),
        ("Postmark", {"RecordType": "Bounce", "Type": "HardBounce"}, None, True),
        ("Postmark", {"RecordType": "Bounce", "Type": "SoftBounce"}, None, False),
        ("Postmark", {"RecordType": "SubscriptionChange", "SuppressionReason": "HardBounce"}, None, True),
        ("Amazon SES", {"bounce": {"bounceType": "Permanent", "bounceSubType": "General"}}, None, True),
        ("Amazon SES", {"bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull"}}, None, False),
        ("Brevo", {"event": "hard_bounce"}, None, True),
        ("Brevo", {"event": "soft_bounce"}, None, False),
        ("SendinBlue", {"event": "soft_bounce"}, None, False),
        ("MailerSend", {"data": {"type": "hard_bounced"}}, None, True),
        ("MailerSend", {"data": {"type": "soft_bounced"}}, None, False),
        ("Mailjet", {"event": "bounce", "hard_bounce": True}, None, True),
        ("Mailjet", {"event": "bounce", "hard_bounce": False}, None, False),
        ("Mandrill", {"event": "hard_bounce"}, None, True),
        ("Mandrill", {"event": "soft_bounce"}, None, False),
        ("Resend", {"data": {"bounce": {"type": "Permanent"}}}, None, True),
        ("Resend", {"data": {"bounce": {"type": "Transient"}}}, None, False),
        ("Mailtrap", {"event": "bounce"}, None, True),
        ("Unisender Go", {}, None, True),
        # Any other ESP: the MTA's reply code decides; none found is not permanent.
        ("SparkPost", {}, "550 5.1.1 user unknown", True),
        ("SparkPost", {}, "452 4.2.2 mailbox full", False),
        ("SparkPost", {}, "smtp;5.1.1 RESOLVER.ADR.RecipNotFound", True),
        ("Postal", {}, None, False),
        ("Postal", {}, "bounced at 2024-01-05 12:00:00", False),
    ],
)
def test_a_bounce_is_permanent_only_when_the_esp_says_so(esp_name, esp_event, mta_response, permanent):
    assert bounce_is_permanent(bounced(esp_event, mta_response), esp_name) is permanent


@pytest.mark.parametrize(
    ("event_type", "esp_event", "reason"),
    [
        ("bounced", {"event": "bounce", "type": "bounce"}, "hard_bounce"),
        ("bounced", {"event": "bounce", "type": "blocked"}, None),
        ("deferred", {"event": "deferred"}, None),
        ("complained", {"event": "spamreport"}, "complaint"),
        ("unsubscribed", {"event": "unsubscribe"}, "unsubscribed"),
        ("rejected", {"event": "dropped", "reason": "Bounced Address"}, None),
        ("delivered", {"event": "delivered"}, None),
        ("opened", {"event": "open"}, None),
        ("clicked", {"event": "click"}, None),
        ("unknown", {"event": "group_resubscribe"}, None),
    ],
)
def test_which_events_suppress(event_type, esp_event, reason):
    event = AnymailTrackingEvent(event_type=event_type, esp_event=esp_event)
    assert suppression_reason(event, "SendGrid") == reason


def test_our_message_ids_are_found_wherever_the_event_carries_them():
    ours = "<0190a1b2c3d4e5f60718293a4b5c6d7e@edm.example>"
    other = "<0190A1B2C3D4E5F60718293A4B5C6D7F@mail.example>"
    event = AnymailTrackingEvent(
        event_type="bounced",
        message_id="2706ee8a-737c-4285-b032-ccd317af53ed",
        metadata={"note": f"see {ours}"},
        esp_event={"mail": {"headers": [{"name": "Message-ID", "value": other}, {"name": "X", "value": ours}]}},
    )

    assert list(message_ids_in(event)) == [ours, other.lower()]
    assert list(message_ids_in(AnymailTrackingEvent(event_type="bounced", message_id="<abc@x>"))) == []
