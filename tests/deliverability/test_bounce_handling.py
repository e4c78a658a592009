"""Bounces end to end: a real SMTP relay refuses some recipients, the scheduler sends, the outcomes are judged."""

from __future__ import annotations

import collections
import dataclasses

import pytest
from django.core.management import call_command

from deliverability.models import ServiceReputationHour, Suppression, TaskBounceTally
from monitoring.models import Alert
from queues.models import EmailService, SendAttempt, SubTask, Task
from queues.scheduler.transports import PERMANENT, TRANSIENT, open_transport
from queues.scheduler.worker import work_remaining
from queues.services import task_create
from queues.sink import SmtpSink, _Handler
from tests.api_helpers import client_for
from tests.queues.test_transports import config, mail, smtp_backend

pytestmark = pytest.mark.django_db(transaction=True)

HARD = "550 5.1.1 user unknown"
POLICY = "550 5.7.1 Message refused by local policy"
BUSY = "450 4.2.0 Mailbox busy, try again later"
SENDER = "553 5.1.8 Sender address rejected: domain not found"


class _BounceHandler(_Handler):
    """Refuses by the recipient's local part: hard… for good, spam… by policy, busy… the first time only;
    and a sender whose local part starts with badsender (5.1.8 at MAIL FROM)."""

    async def handle_MAIL(self, server, session, envelope, address: str, mail_options) -> str:
        if address.lower().startswith("badsender"):
            return SENDER
        return await super().handle_MAIL(server, session, envelope, address, mail_options)

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options) -> str:
        relay: BounceRelay = self.sink
        local = address.split("@", 1)[0].lower()
        with relay.lock:
            relay.rcpts[address] += 1
            tries = relay.rcpts[address]
        if local.startswith("hard"):
            return HARD
        if local.startswith("spam"):
            return POLICY
        if local.startswith("busy") and tries == 1:
            return BUSY
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


class BounceRelay(SmtpSink):
    handler_class = _BounceHandler

    def __init__(self) -> None:
        super().__init__()
        self.rcpts: collections.Counter[str] = collections.Counter()

    def received(self, domain: str) -> list[str]:
        return sorted(r.recipient for r in self.snapshot() if r.recipient.endswith(f"@{domain}"))


@pytest.fixture
def relay():
    relay = BounceRelay().start()
    yield relay
    relay.shutdown()


@pytest.fixture
def service(relay, email_service_factory):
    return email_service_factory(port=relay.port, sending_rate=0)


def subtasks_by_address(task: Task) -> dict[str, SubTask]:
    return {s.recipient_email: s for s in SubTask.objects.filter(task=task)}


def bounce_classes(task: Task) -> dict[str, list[str]]:
    found = collections.defaultdict(list)
    for email, bounce in (
        SendAttempt.objects.filter(subtask__task=task)
        .order_by("started_at")
        .values_list("subtask__recipient_email", "bounce_class")
    ):
        found[email].append(bounce)
    return dict(found)


def test_a_hard_bounce_is_suppressed_a_soft_one_retried_a_policy_refusal_failed(relay, service, user, queue_config):
    queue_config(max_retries=3, retry_backoff_seconds=0)
    task = task_create(
        owner=user,
        name="mixed",
        subject="s",
        body_text="b",
        recipients=["ok@x.example", "hard@x.example", "busy@x.example", "spam@x.example"],
    )

    call_command("run_scheduler", "--once")

    subs = subtasks_by_address(task)
    assert {email: (s.status, s.attempts) for email, s in subs.items()} == {
        "ok@x.example": ("sent", 1),
        "hard@x.example": ("failed", 1),
        "busy@x.example": ("pending", 1),
        "spam@x.example": ("failed", 1),
    }
    assert subs["hard@x.example"].error_message == HARD
    assert subs["spam@x.example"].error_message == POLICY
    entry = Suppression.objects.get()
    assert (entry.owner_id, entry.email, entry.reason, entry.source, entry.detail) == (
        user.pk,
        "hard@x.example",
        "hard_bounce",
        "smtp",
        HARD,
    )
    assert (entry.task_id, entry.subtask_id, entry.service_id) == (task.pk, subs["hard@x.example"].pk, service.pk)

    call_command("run_scheduler", "--once")  # the retry of the 4.2.0, due at once

    subs = subtasks_by_address(task)
    assert (subs["busy@x.example"].status, subs["busy@x.example"].attempts) == ("sent", 2)
    assert bounce_classes(task) == {
        "ok@x.example": [""],
        "hard@x.example": ["hard"],
        "busy@x.example": ["soft", ""],
        "spam@x.example": ["policy"],
    }
    # At the relay: the refused-for-good addresses were tried once, the busy one twice.
    assert relay.rcpts == {"ok@x.example": 1, "hard@x.example": 1, "busy@x.example": 2, "spam@x.example": 1}
    assert relay.received("x.example") == ["busy@x.example", "ok@x.example"]
    assert Suppression.objects.count() == 1  # neither the soft nor the policy refusal suppressed anything
    task.refresh_from_db()
    assert task.status == "completed"
    counts = ServiceReputationHour.objects.get(service=service)
    assert (counts.answered, counts.sent, counts.hard_bounces, counts.policy_rejections) == (4, 2, 1, 1)


@pytest.mark.parametrize(
    ("local", "failures", "backoff_level", "alerts", "suppressed"),
    [
        pytest.param("spam", 2, 1, 1, 0, id="5.7.1-counts-against-the-service"),
        pytest.param("hard", 0, 0, 0, 2, id="5.1.1-is-the-recipients-not-the-services"),
    ],
)
def test_a_policy_refusal_counts_against_the_service_a_hard_bounce_does_not(
    relay, service, user, queue_config, local, failures, backoff_level, alerts, suppressed
):
    queue_config(service_failure_threshold=2)
    task_create(owner=user, name="t", subject="s", body_text="b", recipients=[f"{local}{i}@x.example" for i in (1, 2)])

    call_command("run_scheduler", "--once")

    assert set(SubTask.objects.values_list("status", flat=True)) == {"failed"}
    service.refresh_from_db()
    assert (service.consecutive_failures, service.backoff_level, service.total_failed) == (failures, backoff_level, 2)
    assert Alert.objects.filter(alert_type="service_failing", subject=f"service:{service.pk}").count() == alerts
    assert Suppression.objects.count() == suppressed


def test_a_task_bouncing_past_the_limit_pauses_itself_while_another_users_task_goes_on(
    relay, service, user_factory, queue_config
):
    queue_config(claim_batch_size=10)
    bouncer, other = user_factory(username="bouncer"), user_factory(username="careful")
    # 30 % of the list does not exist, spread through it.
    addresses = [f"{'hard' if i % 10 in (0, 3, 6) else 'ok'}{i}@bad.example" for i in range(100)]
    bad = task_create(owner=bouncer, name="old list", subject="s", body_text="b", recipients=addresses)
    good = task_create(
        owner=other, name="fresh list", subject="s", body_text="b", recipients=[f"r{i}@good.example" for i in range(40)]
    )

    for _ in range(60):  # a pass claims up to 10 mails; the two tasks need about a dozen
        call_command("run_scheduler", "--once")
        if not work_remaining():
            break

    bad.refresh_from_db()
    good.refresh_from_db()
    tally = TaskBounceTally.objects.get(task=bad)
    # Paused by the batch that brought it to the minimum sample of 50 answers (claims of 10).
    assert bad.status == "paused", (bad.status, tally.answered, tally.hard_bounces)
    assert 50 <= tally.answered < 60, (tally.answered, tally.hard_bounces)
    assert tally.hard_bounces / tally.answered > 0.10
    assert bad.pause_reason.startswith(f"{tally.hard_bounces} hard bounces in {tally.answered} answered sends")
    assert "reputation.hard_bounce_rate_limit" in bad.pause_reason
    left = SubTask.objects.filter(task=bad, status="pending").count()
    assert left == 100 - tally.answered
    assert len(relay.received("bad.example")) == tally.answered - tally.hard_bounces
    # The other user's task on the same service was sent in full.
    assert good.status == "completed", dict(collections.Counter(good.subtasks.values_list("status", flat=True)))
    assert relay.received("good.example") == sorted(f"r{i}@good.example" for i in range(40))
    assert EmailService.objects.get().backoff_level == 0
    # The alert, and the reason where the owner and the operators look.
    alert = Alert.objects.get(alert_type="task_hard_bounces")
    assert (alert.subject, alert.severity, alert.status) == (f"task:{bad.pk}", "warning", "open")
    assert alert.message == f"Task old list: {bad.pause_reason}; paused; resume it once its recipient list is cleaned."
    body = client_for(bouncer).get(f"/api/tasks/{bad.pk}/").json()
    assert (body["status"], body["pause_reason"]) == ("paused", bad.pause_reason)
    suppressed = set(Suppression.objects.filter(owner=bouncer).values_list("email", flat=True))
    assert suppressed == set(
        SubTask.objects.filter(task=bad, status="failed").values_list("recipient_email", flat=True)
    )
    assert len(suppressed) == tally.hard_bounces


@pytest.mark.parametrize("transport", ["smtp", "backend"])
@pytest.mark.parametrize(
    ("recipient", "outcome", "fault", "bounce"),
    [
        pytest.param("hard@x.example", PERMANENT, False, "hard", id="5.1.1"),
        pytest.param("spam@x.example", PERMANENT, True, "policy", id="5.7.1"),
        pytest.param("busy@x.example", TRANSIENT, True, "soft", id="4.2.0"),
    ],
)
def test_both_transports_classify_the_recipients_refusals_alike(relay, transport, recipient, outcome, fault, bounce):
    settings = config(relay.port) if transport == "smtp" else smtp_backend(relay.port)
    sender = open_transport(settings)
    delivery = sender.send(mail(recipient))
    sender.close()
    assert (delivery.outcome, delivery.service_fault, delivery.bounce) == (outcome, fault, bounce)


@pytest.mark.parametrize(
    ("transport", "outcome"),
    [
        # As every MAIL FROM refusal: the service's, retried (possibly through another service).
        pytest.param("smtp", TRANSIENT, id="smtp"),
        # Django's backend raises SMTPSenderRefused, which it cannot tell from a refused message: failed.
        pytest.param("backend", PERMANENT, id="backend"),
    ],
)
def test_a_5_1_x_refusal_of_the_sender_is_never_the_recipients_hard_bounce(relay, transport, outcome):
    settings = config(relay.port) if transport == "smtp" else smtp_backend(relay.port)
    sender = open_transport(settings)
    bad_sender_mail = dataclasses.replace(
        mail("hard@x.example"), from_email="badsender@sender.example", from_header="badsender@sender.example"
    )
    delivery = sender.send(bad_sender_mail)
    sender.close()
    assert (delivery.outcome, delivery.code, delivery.service_fault, delivery.bounce) == (outcome, 553, True, "policy")


def test_a_hard_bounced_address_is_skipped_by_the_owners_next_task_not_by_another_owners(relay, service, user_factory):
    owner, stranger = user_factory(), user_factory()
    task_create(owner=owner, name="first", subject="s", body_text="b", recipients=["hard@x.example"])
    call_command("run_scheduler", "--once")
    assert Suppression.objects.get().owner_id == owner.pk
    service.refresh_from_db()
    charged = service.used_quota

    again = task_create(owner=owner, name="second", subject="s", body_text="b", recipients=["hard@x.example"])
    theirs = task_create(owner=stranger, name="theirs", subject="s", body_text="b", recipients=["hard@x.example"])
    for _ in range(3):
        call_command("run_scheduler", "--once")

    service.refresh_from_db()
    assert service.used_quota == charged + 1  # the other owner's attempt only: the suppressed one costs nothing

    assert SubTask.objects.get(task=again).status == "suppressed"  # never offered to the relay
    assert (SubTask.objects.get(task=theirs).status, SubTask.objects.get(task=theirs).attempts) == ("failed", 1)
    assert relay.rcpts == {"hard@x.example": 2}  # the first task's attempt and the other owner's
    assert Suppression.objects.filter(owner=stranger, email="hard@x.example", reason="hard_bounce").exists()
