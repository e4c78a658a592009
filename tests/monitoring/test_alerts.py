"""Wait alerts past each threshold (frozen time), de-duplication, resolution, and the staff e-mail."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.db import transaction

from monitoring.models import Alert
from monitoring.services import notifications
from monitoring.services.alerts import AlertManagerService
from monitoring.services.wait_alerts import alert_waiting_tasks
from queues.first_send_wait import TaskWaitMonitorService

ENTERED = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)


def sweep_at(seconds: float) -> dict:
    with time_machine.travel(ENTERED + dt.timedelta(seconds=seconds), tick=False):
        return alert_waiting_tasks()


def waiting_alerts():
    return list(Alert.objects.filter(alert_type="task_waiting").values_list("severity", "status", "occurrences"))


@pytest.fixture
def waiting_task(task_wait_metric_factory):
    return task_wait_metric_factory(queue_entry_time=ENTERED)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        pytest.param(299, [], id="below-warning"),
        pytest.param(300, [("warning", "open", 1)], id="warning"),
        pytest.param(600, [("critical", "open", 1)], id="critical"),
        pytest.param(1800, [("emergency", "open", 1)], id="emergency"),
    ],
)
def test_a_waiting_task_raises_the_alert_of_the_threshold_it_passed(waiting_task, seconds, expected):
    sweep_at(seconds)
    assert waiting_alerts() == expected


def test_the_alert_is_one_row_escalated_then_resolved_when_the_task_sends(waiting_task):
    assert sweep_at(300) == {"waiting_alerts": 1, "resolved": 0}
    sweep_at(360)
    assert waiting_alerts() == [("warning", "open", 2)]
    sweep_at(650)
    sweep_at(1900)
    assert waiting_alerts() == [("emergency", "open", 4)]

    with time_machine.travel(ENTERED + dt.timedelta(seconds=2000), tick=False):
        wait = TaskWaitMonitorService.record_first_send(task_id=waiting_task.task_id)

    assert wait == 2000
    assert waiting_alerts() == [("emergency", "resolved", 4)]
    exceeded = Alert.objects.get(alert_type="task_wait_exceeded")
    assert (exceeded.severity, exceeded.details["wait_seconds"]) == ("emergency", 2000)
    assert sweep_at(2100) == {"waiting_alerts": 0, "resolved": 0}


def test_an_acknowledged_alert_stays_acknowledged_until_it_gets_worse(waiting_task, staff):
    sweep_at(650)
    alert = Alert.objects.get(alert_type="task_waiting")
    assert AlertManagerService.acknowledge_alert(alert, user=staff)

    sweep_at(700)  # the same severity again: still acknowledged
    assert waiting_alerts() == [("critical", "acknowledged", 2)]

    sweep_at(1900)  # past the emergency threshold: open again, acknowledgement cleared
    assert waiting_alerts() == [("emergency", "open", 3)]
    alert.refresh_from_db()
    assert (alert.acknowledged_at, alert.acknowledged_by) == (None, None)


# The mail goes out on commit: these tests commit for real.
@pytest.fixture
def notify(monkeypatch):
    """Turn the staff notification on (alerts.notify_staff) with a minimum severity."""

    def apply(minimum: str = "warning") -> None:
        monkeypatch.setattr(notifications, "notification_settings", lambda: (True, minimum))

    return apply


@pytest.fixture
def staff_mailboxes(user_factory):
    user_factory(username="ops", email="ops@example.com", is_staff=True)
    user_factory(username="lead", email="lead@example.com", is_staff=True)
    user_factory(username="gone", email="gone@example.com", is_staff=True, is_active=False)
    user_factory(username="nomail", email="", is_staff=True)
    user_factory(username="customer", email="customer@example.com")


def raise_alert(severity: str) -> Alert:
    return AlertManagerService.create_alert(
        alert_type="service_failing", severity=severity, subject="service:s1", message="s1 keeps failing"
    )


@pytest.mark.django_db(transaction=True)
def test_staff_are_mailed_when_an_alert_is_raised_and_when_it_escalates(notify, staff_mailboxes, mailoutbox):
    notify("warning")

    raise_alert("warning")
    assert sorted(m.to[0] for m in mailoutbox) == ["lead@example.com", "ops@example.com"]
    assert mailoutbox[0].subject == "[EDM warning] service_failing service:s1"
    assert "s1 keeps failing" in mailoutbox[0].body

    raise_alert("warning")  # one more occurrence: no new mail
    raise_alert("info")  # lower: no new mail
    assert len(mailoutbox) == 2

    raise_alert("critical")
    assert [m.subject for m in mailoutbox[2:]] == ["[EDM critical] service_failing service:s1"] * 2
    assert "severity rose to critical" in mailoutbox[2].body


@pytest.mark.django_db(transaction=True)
def test_the_mail_waits_for_the_commit_and_is_not_sent_on_rollback(notify, staff_mailboxes, mailoutbox):
    notify("warning")
    with transaction.atomic():
        raise_alert("critical")
        assert mailoutbox == []  # not from inside the transaction
    assert len(mailoutbox) == 2

    with transaction.atomic():
        AlertManagerService.create_alert(alert_type="other", severity="critical", subject="x", message="m")
        transaction.set_rollback(True)
    assert len(mailoutbox) == 2


@pytest.mark.django_db(transaction=True)
def test_no_mail_below_the_minimum_severity_or_when_off(notify, staff_mailboxes, mailoutbox):
    raise_alert("emergency")  # notification off by default (alerts.notify_staff not set)
    assert mailoutbox == []

    notify("critical")
    AlertManagerService.create_alert(alert_type="other", severity="warning", subject="x", message="m")
    assert mailoutbox == []


@pytest.mark.django_db(transaction=True)
def test_admins_get_it_when_no_staff_user_has_an_address(notify, settings, mailoutbox):
    settings.ADMINS = [("Ops", "admins@example.com")]
    notify("warning")
    raise_alert("critical")
    assert [(m.to, m.subject) for m in mailoutbox] == [
        (["admins@example.com"], "[Django] [EDM critical] service_failing service:s1")
    ]


def test_notification_is_off_unless_configured(db):
    assert notifications.notification_settings()[0] is False
