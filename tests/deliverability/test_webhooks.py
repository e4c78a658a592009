"""ESP tracking webhooks: real payloads posted to the mounted anymail URLs become suppressions.

The payloads are the ESPs' documented samples (as anymail's own test suite
carries them), with recipients and Message-IDs made to match the test's mail.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import hmac
import json

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from common.ids import uuid7
from deliverability.models import Suppression
from queues.expansion import message_id_for
from tests.factories import EmailServiceFactory, SubTaskFactory, TaskFactory, UserFactory

pytestmark = [
    pytest.mark.django_db,
    # anymail 15 still handles SendGrid's webhook but says it no longer supports it officially.
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

SECRET = "esp-hooks:s3cret-Pa55"
SIGNING_KEY = "mailgun-signing-key-for-tests"
CONFIGURED = override_settings(ANYMAIL={"WEBHOOK_SECRET": [SECRET], "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY})

MAILGUN_URL = "/webhooks/anymail/mailgun/tracking/"
SENDGRID_URL = "/webhooks/anymail/sendgrid/tracking/"
POSTMARK_URL = "/webhooks/anymail/postmark/tracking/"


def basic_auth(credentials: str = SECRET) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(credentials.encode()).decode()}


def sent_subtask(email: str, *, owner=None, sent_at: dt.datetime | None = None):
    """A subtask the scheduler has sent, with the Message-ID it generates for it."""
    subtask_id = uuid7()
    task = TaskFactory(owner=owner) if owner is not None else TaskFactory()
    return SubTaskFactory(
        id=subtask_id,
        task=task,
        recipient_email=email,
        status="sent",
        service=EmailServiceFactory(),
        message_id=message_id_for(subtask_id),
        sent_at=sent_at or timezone.now(),
        attempts=1,
    )


def assert_entry(entry: Suppression, subtask, reason: str, source: str) -> None:
    assert (entry.owner_id, entry.task_id, entry.subtask_id, entry.service_id) == (
        subtask.owner_id,
        subtask.task_id,
        subtask.pk,
        subtask.service_id,
    )
    assert (entry.reason, entry.source) == (reason, source)


# --- Mailgun (JSON webhooks, signed with the webhook signing key) -------------------------


def mailgun_signed(payload: dict, key: str = SIGNING_KEY) -> str:
    """Mailgun's signature: HMAC-SHA256 of timestamp + token with the webhook signing key."""
    payload = copy.deepcopy(payload)
    signature = payload.setdefault("signature", {})
    signature.setdefault("token", "651869375b9df3c98fc15c4889b102119add1235c38fc92824")
    signature.setdefault("timestamp", str(int(payload["event-data"]["timestamp"])))
    signature["signature"] = hmac.new(
        key.encode(), f"{signature['timestamp']}{signature['token']}".encode(), hashlib.sha256
    ).hexdigest()
    return json.dumps(payload)


def mailgun_failed(recipient: str, message_id: str, severity: str = "permanent") -> dict:
    # Mailgun's "failed" event; a Message-ID header is echoed without its angle brackets.
    return {
        "event-data": {
            "event": "failed",
            "severity": severity,
            "reason": "bounce" if severity == "permanent" else "generic",
            "recipient": recipient,
            "timestamp": 1534110422.389832,
            "log-level": "error",
            "message": {
                "headers": {
                    "to": recipient,
                    "message-id": message_id.strip("<>"),
                    "from": "Test Sender <sender@example.org>",
                },
            },
            "delivery-status": {
                "tls": True,
                "mx-host": "aspmx.l.example.org",
                "attempt-no": 1,
                "description": "",
                "session-seconds": 2.952177047729492,
                "utf8": True,
                "code": 550 if severity == "permanent" else 498,
                "message": "5.1.1 The email account that you tried to reach does not exist. Please try\n"
                "5.1.1 double-checking the recipient's email address for typos"
                if severity == "permanent"
                else "No MX for nomx.example.com",
                "certificate-verified": True,
            },
        },
    }


def mailgun_event(event: str, recipient: str, message_id: str) -> dict:
    return {
        "event-data": {
            "event": event,
            "id": "ncV2XwymRUKbPek_MIM-Gw",
            "timestamp": 1377214260.049634,
            "log-level": "warn",
            "recipient": recipient,
            "message": {
                "headers": {
                    "to": recipient,
                    "message-id": message_id.strip("<>"),
                    "from": "Sender Name <sender@example.org>",
                    "subject": "We are not spammer",
                },
            },
        },
    }


def post_mailgun(client, payload: dict, *, key: str = SIGNING_KEY, auth: dict | None = None):
    headers = basic_auth() if auth is None else auth
    return client.post(MAILGUN_URL, data=mailgun_signed(payload, key), content_type="application/json", **headers)


@CONFIGURED
def test_a_mailgun_permanent_failure_suppresses_the_address_for_the_owner_of_the_message(client):
    ours = sent_subtask("Invalid@Example.com", sent_at=timezone.now() - dt.timedelta(days=2))
    # Someone else mailed the address since: the Message-ID still names the right owner.
    sent_subtask("invalid@example.com")

    response = post_mailgun(client, mailgun_failed("invalid@example.com", ours.message_id))

    assert response.status_code == 200
    entry = Suppression.objects.get()
    assert entry.email == "invalid@example.com"
    assert_entry(entry, ours, "hard_bounce", "webhook:mailgun")
    assert "5.1.1 The email account that you tried to reach does not exist" in entry.detail
    assert "event 651869375b9df3c98fc15c4889b102119add1235c38fc92824" in entry.detail


@CONFIGURED
def test_a_mailgun_temporary_failure_suppresses_nothing(client):
    ours = sent_subtask("undeliverable@nomx.example.com")

    response = post_mailgun(client, mailgun_failed("undeliverable@nomx.example.com", ours.message_id, "temporary"))

    assert response.status_code == 200
    assert not Suppression.objects.exists()


@CONFIGURED
@pytest.mark.parametrize(("event", "reason"), [("complained", "complaint"), ("unsubscribed", "unsubscribed")])
def test_mailgun_complaints_and_unsubscribes(client, event, reason):
    ours = sent_subtask("recipient@example.com")

    response = post_mailgun(client, mailgun_event(event, "recipient@example.com", ours.message_id))

    assert response.status_code == 200
    assert_entry(Suppression.objects.get(email="recipient@example.com"), ours, reason, "webhook:mailgun")


@CONFIGURED
def test_mailgun_opens_clicks_and_deliveries_suppress_nothing(client):
    ours = sent_subtask("recipient@example.com")
    for event in ("delivered", "opened", "clicked"):
        assert post_mailgun(client, mailgun_event(event, "recipient@example.com", ours.message_id)).status_code == 200
    assert not Suppression.objects.exists()


@CONFIGURED
def test_a_repeated_event_leaves_one_entry(client):
    ours = sent_subtask("invalid@example.com")
    payload = mailgun_failed("invalid@example.com", ours.message_id)

    responses = [post_mailgun(client, payload).status_code for _ in range(3)]
    # The same address complained about later keeps the first entry.
    post_mailgun(client, mailgun_event("complained", "invalid@example.com", ours.message_id))

    assert responses == [200, 200, 200]
    entry = Suppression.objects.get()
    assert entry.reason == "hard_bounce"


@CONFIGURED
def test_a_mailgun_legacy_bounce_is_attributed_by_its_message_id(client):
    ours = sent_subtask("noreply@example.com")
    # Mailgun's legacy (form-encoded) "bounced" webhook, signed in the form fields.
    data = {
        "code": "550",
        "error": "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "    5.1.1 double-checking the recipient's email address for typos or     5.1.1 unnecessary spaces.",
        "event": "bounced",
        "recipient": "noreply@example.com",
        "Message-Id": ours.message_id,
        "domain": "example.com",
        "timestamp": "1461261330",
        "token": "06c96bafc3f42a66b9edd546347a2fe18dc23461fe80dc52f0",
    }
    data["signature"] = hmac.new(
        SIGNING_KEY.encode(), f"{data['timestamp']}{data['token']}".encode(), hashlib.sha256
    ).hexdigest()

    response = client.post(MAILGUN_URL, data=data, **basic_auth())

    assert response.status_code == 200
    assert_entry(Suppression.objects.get(), ours, "hard_bounce", "webhook:mailgun")


@CONFIGURED
@pytest.mark.parametrize(
    ("key", "auth"),
    [
        pytest.param("a-wrong-signing-key", basic_auth(), id="bad-signature"),
        pytest.param(SIGNING_KEY, {}, id="no-credentials"),
        pytest.param(SIGNING_KEY, basic_auth("esp-hooks:wrong"), id="wrong-credentials"),
    ],
)
def test_mailgun_posts_without_a_good_signature_and_credentials_are_refused(client, key, auth):
    ours = sent_subtask("invalid@example.com")

    response = post_mailgun(client, mailgun_failed("invalid@example.com", ours.message_id), key=key, auth=auth)

    assert response.status_code == 400
    assert not Suppression.objects.exists()


@override_settings(ANYMAIL={"WEBHOOK_SECRET": [SECRET]})
def test_mailgun_without_its_signing_key_is_refused(client):
    ours = sent_subtask("invalid@example.com")

    response = post_mailgun(client, mailgun_failed("invalid@example.com", ours.message_id))

    assert response.status_code == 403
    assert not Suppression.objects.exists()


# --- SendGrid (a JSON array of events per post) -------------------------------------------


def sendgrid_event(event: str, email: str, smtp_id: str, **fields) -> dict:
    # SendGrid's Event Webhook sample: "smtp-id" echoes the mail's Message-ID header.
    return {
        "email": email,
        "timestamp": 1513299569,
        "smtp-id": smtp_id,
        "event": event,
        "category": "cat facts",
        "sg_event_id": f"sg-{event}-{email}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        **fields,
    }


def post_sendgrid(client, events: list[dict], auth: dict | None = None):
    headers = basic_auth() if auth is None else auth
    return client.post(SENDGRID_URL, data=json.dumps(events), content_type="application/json", **headers)


@CONFIGURED
def test_a_sendgrid_batch_suppresses_hard_bounces_complaints_and_unsubscribes_only(client):
    owner_a, owner_b = UserFactory(), UserFactory()
    hard = sent_subtask("hard@example.com", owner=owner_a)
    blocked = sent_subtask("blocked@example.com", owner=owner_a)
    deferred = sent_subtask("deferred@example.com", owner=owner_a)
    spam = sent_subtask("spam@example.com", owner=owner_b)
    unsub = sent_subtask("unsub@example.com", owner=owner_b)
    events = [
        sendgrid_event("processed", "hard@example.com", hard.message_id),
        sendgrid_event("delivered", "spam@example.com", spam.message_id, response="250 OK"),
        sendgrid_event("open", "spam@example.com", spam.message_id, useragent="Mozilla/4.0", ip="255.255.255.255"),
        sendgrid_event(
            "bounce",
            "hard@example.com",
            hard.message_id,
            reason="550 5.1.1 The email account that you tried to reach does not exist.",
            status="5.1.1",
            type="bounce",
        ),
        sendgrid_event(
            "bounce", "blocked@example.com", blocked.message_id, reason="550 blocked by policy", type="blocked"
        ),
        sendgrid_event("deferred", "deferred@example.com", deferred.message_id, response="400 try again later"),
        sendgrid_event("spamreport", "spam@example.com", spam.message_id),
        sendgrid_event("unsubscribe", "unsub@example.com", unsub.message_id),
    ]

    response = post_sendgrid(client, events)

    assert response.status_code == 200
    entries = {entry.email: entry for entry in Suppression.objects.all()}
    assert set(entries) == {"hard@example.com", "spam@example.com", "unsub@example.com"}
    assert_entry(entries["hard@example.com"], hard, "hard_bounce", "webhook:sendgrid")
    assert "550 5.1.1" in entries["hard@example.com"].detail
    assert_entry(entries["spam@example.com"], spam, "complaint", "webhook:sendgrid")
    assert_entry(entries["unsub@example.com"], unsub, "unsubscribed", "webhook:sendgrid")


@CONFIGURED
def test_an_event_without_our_message_id_goes_to_the_last_mail_sent_to_the_address(client):
    now = timezone.now()
    sent_subtask("reader@example.com", sent_at=now - dt.timedelta(days=3))
    latest = sent_subtask("reader@example.com", sent_at=now - dt.timedelta(hours=1))
    # Pending and failed mail to the address is not "sent mail" and never attributed.
    SubTaskFactory(recipient_email="reader@example.com", status="pending")

    response = post_sendgrid(
        client, [sendgrid_event("spamreport", "READER@example.com", "<14c5d75ce93.dfd.64b469@ismtpd-555>")]
    )

    assert response.status_code == 200
    entry = Suppression.objects.get()
    assert entry.email == "reader@example.com"
    assert_entry(entry, latest, "complaint", "webhook:sendgrid")


@CONFIGURED
def test_an_event_for_an_address_never_mailed_records_nothing(client):
    sent_subtask("someone@example.com")

    response = post_sendgrid(
        client,
        [
            sendgrid_event("spamreport", "stranger@example.com", "<14c5d75ce93.dfd.64b469@ismtpd-555>"),
            sendgrid_event("bounce", "other@example.com", "<x@y>", status="5.0.0", reason="500 unknown recipient"),
        ],
    )

    assert response.status_code == 200
    assert not Suppression.objects.exists()


@CONFIGURED
def test_our_message_id_for_another_address_is_not_trusted(client):
    """A Message-ID of ours on an event about another address falls back to that address's own mail."""
    mailed = sent_subtask("mailed@example.com")

    post_sendgrid(client, [sendgrid_event("spamreport", "stranger@example.com", mailed.message_id)])

    assert not Suppression.objects.exists()


@CONFIGURED
@pytest.mark.parametrize(
    "auth",
    [pytest.param({}, id="no-credentials"), pytest.param(basic_auth("esp-hooks:wrong"), id="wrong-credentials")],
)
def test_sendgrid_posts_without_the_secret_are_refused(client, auth):
    ours = sent_subtask("spam@example.com")

    response = post_sendgrid(client, [sendgrid_event("spamreport", "spam@example.com", ours.message_id)], auth=auth)

    assert response.status_code == 400
    assert not Suppression.objects.exists()


# --- Postmark (one JSON event per post; its MessageID is Postmark's own) ------------------


def postmark_bounce(email: str, bounce_type: str) -> dict:
    return {
        "RecordType": "Bounce",
        "ID": 901542550,
        "Type": bounce_type,
        "TypeCode": 1 if bounce_type == "HardBounce" else 4096,
        "ServerID": 23,
        "Name": "Hard bounce" if bounce_type == "HardBounce" else "Soft bounce",
        "MessageID": "2706ee8a-737c-4285-b032-ccd317af53ed",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": email,
        "From": "sender@example.com",
        "BouncedAt": "2016-04-27T16:28:50.3963933-04:00",
        "DumpAvailable": True,
        "Inactive": bounce_type == "HardBounce",
        "CanActivate": True,
        "Subject": "Postmark event test",
        "Content": "...",
    }


def post_postmark(client, event: dict, auth: dict | None = None):
    headers = basic_auth() if auth is None else auth
    return client.post(POSTMARK_URL, data=json.dumps(event), content_type="application/json", **headers)


@CONFIGURED
def test_postmark_hard_bounces_complaints_and_unsubscribes_by_recipient(client):
    bounced = sent_subtask("bounce@example.com")
    soft = sent_subtask("soft@example.com")
    spam = sent_subtask("spam@example.com")
    unsub = sent_subtask("john@example.com")
    spam_event = {
        "RecordType": "SpamComplaint",
        "ID": 901542551,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Tag": "Test",
        "MessageID": "2706ee8a-737c-4285-b032-ccd317af53ed",
        "ServerID": 1234,
        "Description": "",
        "Details": "Test spam complaint details",
        "Email": "spam@example.com",
        "From": "sender@example.com",
        "BouncedAt": "2016-04-27T16:28:50.3963933-04:00",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": False,
        "Subject": "Postmark event test",
    }
    unsubscribe_event = {
        "RecordType": "SubscriptionChange",
        "MessageID": "a4909a96-73d7-4c49-b148-a54522d3f7ac",
        "ServerID": 23,
        "MessageStream": "outbound",
        "ChangedAt": "2022-06-05T17:17:32Z",
        "Recipient": "john@example.com",
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
        "Tag": "welcome-email",
        "Metadata": {"example": "value"},
    }

    statuses = [
        post_postmark(client, event).status_code
        for event in (
            postmark_bounce("bounce@example.com", "HardBounce"),
            postmark_bounce("soft@example.com", "SoftBounce"),
            spam_event,
            unsubscribe_event,
        )
    ]

    assert statuses == [200, 200, 200, 200]
    entries = {entry.email: entry for entry in Suppression.objects.all()}
    assert set(entries) == {"bounce@example.com", "spam@example.com", "john@example.com"}
    assert_entry(entries["bounce@example.com"], bounced, "hard_bounce", "webhook:postmark")
    assert entries["bounce@example.com"].detail.startswith("Postmark bounced; The server was unable to deliver")
    assert_entry(entries["spam@example.com"], spam, "complaint", "webhook:postmark")
    assert_entry(entries["john@example.com"], unsub, "unsubscribed", "webhook:postmark")
    assert soft.recipient_email not in entries


# --- configuration ----------------------------------------------------------------------


@override_settings(ANYMAIL={"MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY})
@pytest.mark.parametrize("credentials", [pytest.param(SECRET, id="any-credentials"), pytest.param(None, id="none")])
def test_without_a_webhook_secret_every_webhook_is_refused(client, credentials):
    ours = sent_subtask("bounce@example.com")
    auth = basic_auth(credentials) if credentials else {}

    statuses = [
        post_mailgun(client, mailgun_failed("bounce@example.com", ours.message_id), auth=auth).status_code,
        post_sendgrid(client, [sendgrid_event("spamreport", "bounce@example.com", ours.message_id)], auth).status_code,
        post_postmark(client, postmark_bounce("bounce@example.com", "HardBounce"), auth).status_code,
    ]

    assert statuses == [403, 403, 403]
    assert not Suppression.objects.exists()


@CONFIGURED
def test_only_tracking_webhooks_are_mounted(client):
    assert (
        client.post(
            "/webhooks/anymail/postmark/inbound/", data="{}", content_type="application/json", **basic_auth()
        ).status_code
        == 404
    )
    assert client.head(POSTMARK_URL).status_code == 200  # some ESPs check the URL with HEAD


@CONFIGURED
def test_a_rotated_secret_accepts_both_credentials(client, settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": [SECRET, "esp-hooks:next-secret"]}
    first = sent_subtask("one@example.com")
    second = sent_subtask("two@example.com")

    post_sendgrid(client, [sendgrid_event("spamreport", "one@example.com", first.message_id)])
    post_sendgrid(
        client,
        [sendgrid_event("spamreport", "two@example.com", second.message_id)],
        basic_auth("esp-hooks:next-secret"),
    )

    assert set(Suppression.objects.values_list("email", flat=True)) == {"one@example.com", "two@example.com"}


@CONFIGURED
def test_esps_need_no_csrf_token():
    ours = sent_subtask("spam@example.com")

    response = post_sendgrid(
        Client(enforce_csrf_checks=True), [sendgrid_event("spamreport", "spam@example.com", ours.message_id)]
    )

    assert response.status_code == 200
    assert Suppression.objects.filter(email="spam@example.com").exists()


@CONFIGURED
@pytest.mark.parametrize("path", ["mailersend/tracking/", "mandrill/", "postal/tracking/", "unisender_go/tracking/"])
def test_an_esp_whose_own_key_is_missing_is_refused(client, path):
    response = client.post(f"/webhooks/anymail/{path}", data="{}", content_type="application/json", **basic_auth())

    assert response.status_code == 403
