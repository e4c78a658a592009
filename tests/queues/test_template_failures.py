"""A task whose templates cannot be used fails once, with its reason; one contact's bad data fails one mail."""

from __future__ import annotations

from collections import Counter

import pytest
from django.core.management import call_command

from monitoring.models import Alert
from queues.models import SendAttempt, SubTask, Task
from queues.services import task_create

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_task_whose_templates_do_not_compile_fails_with_its_reason(
    smtp_sink, email_service_factory, user, queue_config
):
    queue_config(claim_batch_size=2)
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    task = task_create(
        owner=user, name="n", subject="Hi", body_text="Hello", recipients=[f"r{i}@x.example" for i in range(5)]
    )
    # Written around the validation, as a data fix or an older version could have.
    Task.objects.filter(pk=task.pk).update(body_text="{% include 'secret.html' %}")
    reason = "the task's templates cannot be used: body_text: the tag {% include %} is not allowed in mail templates"

    call_command("run_scheduler", "--once")

    task.refresh_from_db()
    assert (task.status, task.failure_reason) == (Task.Status.FAILED, reason)
    assert Counter(SubTask.objects.values_list("status", "error_message")) == {(SubTask.Status.FAILED, reason): 5}
    assert smtp_sink.snapshot() == []
    # The two claimed ones were recorded failed (one attempt each), not given back to be claimed again.
    assert Counter(SendAttempt.objects.values_list("outcome", "smtp_reply")) == {("permanent", reason): 2}
    alert = Alert.objects.get(alert_type="task_failed")
    assert (alert.subject, alert.severity, alert.message) == (
        f"task:{task.pk}",
        "critical",
        f"Task {task.name} failed: {reason}",
    )
    # Nothing left to claim: a second pass finds no work and changes nothing.
    call_command("run_scheduler", "--once")
    assert Counter(SubTask.objects.values_list("status", flat=True)) == {SubTask.Status.FAILED: 5}


def test_one_contacts_bad_data_fails_only_its_mail_and_for_good(smtp_sink, email_service_factory, user, queue_config):
    queue_config(claim_batch_size=10)
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    task_create(
        owner=user,
        name="n",
        subject="Hi",
        body_text="{% for c in contact.cities %}{{ c }} {% endfor %}",
        recipients=[
            {"email": "good@x.example", "attributes": {"cities": ["Oslo", "Rome"]}},
            {"email": "bad@x.example", "attributes": {"cities": 5}},
        ],
    )

    call_command("run_scheduler", "--until-empty")

    rows = dict(SubTask.objects.values_list("recipient_email", "status"))
    assert rows == {"good@x.example": SubTask.Status.SENT, "bad@x.example": SubTask.Status.FAILED}
    bad = SubTask.objects.get(recipient_email="bad@x.example")
    assert (bad.attempts, bad.error_message) == (
        1,
        "cannot render the mail for this recipient: TypeError: 'int' object is not iterable",
    )
    assert list(SendAttempt.objects.filter(subtask=bad).values_list("outcome", flat=True)) == ["permanent"]
    assert [r.recipient for r in smtp_sink.snapshot()] == ["good@x.example"]
    assert Task.objects.get().status == Task.Status.COMPLETED


def test_an_edit_made_while_paused_is_what_goes_out_after_resume(user):
    from queues.scheduler.worker import SchedulerWorker
    from queues.services import task_pause, task_resume, task_update

    task = task_create(owner=user, name="n", subject="Sale ends Fryday", body_text="b", recipients=["a@x.example"])
    worker = SchedulerWorker(concurrency=1)
    assert worker._compiled_tasks({task.pk})[0][task.pk].subject.render({}) == "Sale ends Fryday"

    task_pause(task=task)
    task_update(task=task, subject="Sale ends Friday")
    task_resume(task=task)

    compiled, broken = worker._compiled_tasks({task.pk})
    assert (compiled[task.pk].subject.render({}), broken) == ("Sale ends Friday", {})
