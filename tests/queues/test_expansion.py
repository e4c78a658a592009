"""Tasks prepared in the background (queues.expansion): the API's answer, the chunks, the preparers."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection, transaction

from config.services import get_config_by_category
from contacts.models import Contact, Tag
from contacts.services import contacts_delete
from contacts.tag_manager import ContactTagManager
from queues import expansion
from queues.expansion import task_prepare_chunk, tasks_prepare
from queues.maintenance import MaintenanceThread
from queues.models import SubTask, Task, TaskRecipientPart, TaskWaitMetric, UserQueue
from queues.scheduler.claim import claim_subtasks
from queues.services import message_id_for, task_cancel, task_create, tasks_complete_if_done
from tests.api_helpers import client_for
from tests.processes import run_in_processes
from tests.schedulers import wait_until

URL = "/api/tasks/"
CONTENT = {"name": "Spring sale", "subject": "Hello {{ contact.first_name }}", "body_text": "Hi!"}


@pytest.fixture
def inline_max(monkeypatch):
    """Tasks above this many recipients are prepared in the background (1000 in production)."""

    def apply(value: int) -> None:
        monkeypatch.setattr("queues.services.INLINE_MAX", value)

    return apply


def staged(task: Task) -> list[list]:
    """The entries still in the task's parts, in order."""
    parts = TaskRecipientPart.objects.filter(task=task).order_by("start")
    return [entry for part in parts for entry in part.recipients]


def emails(n: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i}@example.org" for i in range(n)]


def create_list_task(owner, n: int, prefix: str = "r") -> Task:
    return task_create(owner=owner, recipients=emails(n, prefix), **CONTENT)


def subtask_emails(task: Task) -> list[str]:
    return list(SubTask.objects.filter(task=task).order_by("id").values_list("recipient_email", flat=True))


def assert_prepared_exactly(task: Task, expected: list[str]) -> None:
    """Each recipient once, in recipient order, with its contact and a Message-ID derived from its id."""
    task.refresh_from_db()
    assert task.status == Task.Status.PENDING
    assert (task.recipients_total, task.recipients_prepared) == (len(expected), len(expected))
    assert subtask_emails(task) == expected
    rows = SubTask.objects.filter(task=task).values_list(
        "id", "message_id", "recipient_email", "contact__email", "status"
    )
    for id_, message_id, email, contact_email, status in rows:
        assert (id_.version, id_.variant, message_id) == (7, uuid.RFC_4122, message_id_for(id_))
        assert (contact_email, status) == (email, "pending")
    assert not TaskRecipientPart.objects.filter(task=task).exists()
    assert TaskWaitMetric.objects.filter(task=task).count() == 1
    assert UserQueue.objects.get(user=task.owner).ready_at is not None


def test_the_api_answers_a_large_list_preparing_with_its_progress(user):
    recipients = emails(1001)  # one above what is prepared inside the request

    response = client_for(user).post(URL, {**CONTENT, "recipients": recipients}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["recipients_total"], body["recipients_prepared"]) == ("preparing", 1001, 0)
    assert body["progress"]["total"] == 0
    assert body["wait"] is None
    task = Task.objects.get(pk=body["id"])
    assert [entry[0] for entry in staged(task)] == recipients
    assert not UserQueue.objects.filter(user=user, ready_at__isnull=False).exists()

    assert tasks_prepare(size=400) == 1001

    assert_prepared_exactly(task, recipients)
    body = client_for(user).get(f"{URL}{task.pk}/").json()
    assert (body["status"], body["recipients_total"], body["recipients_prepared"]) == ("pending", 1001, 1001)
    assert body["progress"]["pending"] == 1001


def test_a_small_task_is_prepared_inside_the_request(user):
    response = client_for(user).post(URL, {**CONTENT, "recipients": emails(3)}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["recipients_total"], body["recipients_prepared"]) == ("pending", 3, 3)
    assert body["progress"]["pending"] == 3


def test_progress_moves_chunk_by_chunk_and_the_contacts_are_upserted(user, contact_factory, inline_max):
    inline_max(10)
    known = contact_factory(owner=user, email="r3@example.org", first_name="Known")
    task = task_create(
        owner=user,
        recipients=[{"email": e, "first_name": f"F{i}", "attributes": {"n": i}} for i, e in enumerate(emails(25))],
        **CONTENT,
    )

    progress = []
    while (chunk := task_prepare_chunk(task_id=task.pk, size=10)) is not None:
        task.refresh_from_db()
        progress.append((chunk.created, chunk.done, task.recipients_prepared, task.status))

    assert progress == [
        (10, False, 10, "preparing"),
        (10, False, 20, "preparing"),
        (5, True, 25, "pending"),
    ]
    assert_prepared_exactly(task, emails(25))
    contacts = {c.email: c for c in Contact.objects.filter(owner=user)}
    assert len(contacts) == 25
    assert (contacts["r3@example.org"].pk, contacts["r3@example.org"].first_name) == (known.pk, "Known")
    assert (contacts["r7@example.org"].first_name, contacts["r7@example.org"].attributes) == ("F7", {"n": 7})
    assert dict(SubTask.objects.filter(task=task).values_list("recipient_email", "contact_id")) == {
        email: contact.pk for email, contact in contacts.items()
    }


def test_a_tag_task_is_prepared_from_the_tags_contacts(user, contact_factory, tag_factory, inline_max):
    inline_max(10)
    tag = tag_factory(owner=user)
    members = contact_factory.create_batch(23, owner=user)
    contact_factory(owner=user)  # not in the tag
    ContactTagManager().add_contacts_to_tag(tag.pk, [c.pk for c in members])

    response = client_for(user).post(URL, {**CONTENT, "tag": str(tag.pk)}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["recipients_total"], body["recipients_prepared"]) == ("preparing", 23, 0)
    task = Task.objects.get(pk=body["id"])
    by_id = sorted(members, key=lambda c: c.pk)
    # The first chunk copies the members; a contact deleted after that still gets its mail.
    assert task_prepare_chunk(task_id=task.pk, size=7).created == 0
    assert staged(task) == [[c.email, str(c.pk)] for c in by_id]
    by_id[5].delete()
    assert tasks_prepare(size=7) == 23

    task.refresh_from_db()
    assert (task.status, task.recipients_total, task.recipients_prepared) == ("pending", 23, 23)
    subtasks = SubTask.objects.filter(task=task).order_by("id")
    assert list(subtasks.values_list("recipient_email", flat=True)) == [c.email for c in by_id]
    assert list(subtasks.values_list("contact_id", flat=True)) == [
        None if i == 5 else c.pk for i, c in enumerate(by_id)
    ]
    assert not TaskRecipientPart.objects.filter(task=task).exists()


def test_a_tag_with_a_malformed_legacy_entry_is_prepared_from_its_valid_members(
    user, contact_factory, tag_factory, inline_max
):
    inline_max(1)
    tag = tag_factory(owner=user)
    members = sorted(contact_factory.create_batch(3, owner=user), key=lambda c: c.pk)
    Tag.objects.filter(pk=tag.pk).update(contacts=[str(members[1].pk), "not-a-uuid", str(members[0].pk), 42])
    task = task_create(owner=user, tag=tag, **CONTENT)

    assert tasks_prepare() == 2

    assert subtask_emails(task) == [members[0].email, members[1].email]


def test_a_tag_emptied_while_preparing_fails_the_task(user, contact_factory, tag_factory, inline_max):
    inline_max(1)
    tag = tag_factory(owner=user)
    members = contact_factory.create_batch(2, owner=user)
    ContactTagManager().add_contacts_to_tag(tag.pk, [c.pk for c in members])
    task = task_create(owner=user, tag=tag, **CONTENT)
    Contact.objects.filter(pk__in=[c.pk for c in members]).delete()

    assert tasks_prepare() == 0

    task.refresh_from_db()
    assert (task.status, task.failure_reason) == (Task.Status.FAILED, "no recipients: the tag has no contacts")
    assert not UserQueue.objects.filter(user=user, ready_at__isnull=False).exists()


BAD = [
    pytest.param({"recipients": [*emails(1500), "not-an-address"]}, "recipients", id="one-bad-address"),
    pytest.param({"recipients": [*emails(1500), {"name": "x"}]}, "recipients", id="one-bad-item"),
    pytest.param({"recipients": emails(1500), "subject": ""}, "subject", id="empty-subject"),
    pytest.param({"recipients": emails(1500), "body_text": "{% if %}"}, "body_text", id="bad-template"),
    pytest.param({"recipients": emails(1500), "priority": 40000}, "priority", id="bad-priority"),
    pytest.param({"recipients": "a@example.org"}, "recipients", id="not-a-list"),
]


@pytest.mark.parametrize(("fields", "field"), BAD)
def test_bad_input_is_refused_up_front_and_creates_nothing(user, fields, field):
    response = client_for(user).post(URL, {**CONTENT, **fields}, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert (Task.objects.count(), TaskRecipientPart.objects.count(), Contact.objects.count()) == (0, 0, 0)


def test_a_preparing_task_is_never_claimed_nor_completed(user, email_service, inline_max):
    inline_max(5)
    # Another task of the user is runnable: the rotation has the user, and still skips the preparing one.
    other = create_list_task(user, 2, prefix="other")
    task = create_list_task(user, 20)
    task_prepare_chunk(task_id=task.pk, size=10)

    claim = claim_subtasks(worker_id="test", limit=50, queue_config=get_config_by_category("queue"))

    assert {item.task_id for item in claim.items} == {other.pk}
    assert tasks_complete_if_done([task.pk]) == []
    task.refresh_from_db()
    assert task.status == Task.Status.PREPARING


def test_cancel_stops_the_preparation(user, inline_max):
    inline_max(5)
    task = create_list_task(user, 20)
    task_prepare_chunk(task_id=task.pk, size=8)

    response = client_for(user).post(f"{URL}{task.pk}/cancel/")

    assert response.status_code == 200, response.content
    assert (response.json()["cancelled"], response.json()["task"]["status"]) == (8, "cancelled")
    assert tasks_prepare() == 0
    assert task_cancel(task=task) == 0
    assert set(SubTask.objects.filter(task=task).values_list("status", flat=True)) == {"cancelled"}
    assert not TaskRecipientPart.objects.exists()


def test_pause_of_a_preparing_task_is_refused_and_resume_leaves_it_preparing(user, inline_max):
    inline_max(5)
    task = create_list_task(user, 20)
    client = client_for(user)

    paused = client.post(f"{URL}{task.pk}/pause/")
    resumed = client.post(f"{URL}{task.pk}/resume/")

    assert paused.status_code == 409
    assert "preparing" in paused.json()["detail"]
    assert (resumed.status_code, resumed.json()["status"]) == (200, "preparing")
    assert tasks_prepare() == 20
    task.refresh_from_db()
    assert task.status == Task.Status.PENDING


def test_delete_of_a_preparing_task_removes_everything(user, inline_max):
    inline_max(5)
    task = create_list_task(user, 20)
    task_prepare_chunk(task_id=task.pk, size=8)

    response = client_for(user).delete(f"{URL}{task.pk}/")

    assert response.status_code == 204, response.content
    assert (Task.objects.count(), SubTask.objects.count(), TaskRecipientPart.objects.count()) == (0, 0, 0)
    assert tasks_prepare() == 0


def test_a_priority_changed_while_preparing_holds_for_every_subtask(user, inline_max):
    from queues.services import task_update

    inline_max(5)
    task = create_list_task(user, 20)
    task_prepare_chunk(task_id=task.pk, size=8)

    task_update(task=task, priority=7)
    tasks_prepare()

    assert set(SubTask.objects.filter(task=task).values_list("priority", flat=True)) == {7}


def _prepare_in_child(task_id: str, size: int) -> int:
    return tasks_prepare(task_id=uuid.UUID(task_id), size=size)


def _prepare_any_in_child(size: int) -> int:
    return tasks_prepare(size=size)


@pytest.mark.django_db(transaction=True)
def test_preparers_in_several_processes_make_each_subtask_once(user_factory, inline_max):
    inline_max(10)
    owners = user_factory.create_batch(2)
    tasks = [create_list_task(owner, 600, prefix=f"u{i}-") for i, owner in enumerate(owners)]

    created = run_in_processes(_prepare_in_child, [(str(tasks[0].pk), 25), (str(tasks[0].pk), 25)]) + run_in_processes(
        _prepare_any_in_child, [(25,), (25,), (25,)]
    )

    assert sum(created) == 1200
    for i, task in enumerate(tasks):
        assert_prepared_exactly(task, emails(600, prefix=f"u{i}-"))


@pytest.mark.django_db(transaction=True)
def test_the_maintenance_thread_prepares_tasks(user, inline_max):
    inline_max(10)
    task = create_list_task(user, 50)
    stop = threading.Event()
    thread = MaintenanceThread(stop)
    thread.start()
    try:
        wait_until(lambda: Task.objects.get(pk=task.pk).status == Task.Status.PENDING, timeout=60, what="prepared")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert_prepared_exactly(task, emails(50))


@pytest.mark.django_db(transaction=True)
def test_a_large_task_is_handed_to_celery_once_committed(user, settings, monkeypatch):
    queued = []
    monkeypatch.setattr("queues.tasks.prepare_task_task.delay", queued.append)
    settings.CELERY_TASK_ALWAYS_EAGER = False

    task = create_list_task(user, 1001)
    small = create_list_task(user, 3, prefix="small")

    assert queued == [str(task.pk)]
    assert small.status == Task.Status.PENDING
    assert expansion.preparations_resume() == {"preparations_queued": 0}  # moved just now: its preparer is alive


def test_subtask_ids_built_in_sql_are_uuid7_in_recipient_order(user, inline_max):
    inline_max(1)
    task = create_list_task(user, 30)
    tasks_prepare(size=7)
    ids = list(SubTask.objects.filter(task=task).values_list("id", flat=True))
    by_email = dict(SubTask.objects.filter(task=task).values_list("recipient_email", "id"))
    assert [by_email[e] for e in emails(30)] == sorted(ids)


# --- contacts changed by other transactions while a chunk runs (PostgreSQL: row locks) ---------------


def lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def in_thread(target) -> threading.Thread:
    def run() -> None:
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def holding(work, release: threading.Event) -> threading.Thread:
    """A thread that does ``work`` in a transaction and keeps it open until ``release``."""
    done = threading.Event()

    def hold() -> None:
        with transaction.atomic():
            work()
            done.set()
            release.wait(30)

    thread = in_thread(hold)
    assert done.wait(30)
    return thread


def linked_contacts_exist(task: Task) -> bool:
    linked = set(SubTask.objects.filter(task=task, contact__isnull=False).values_list("contact_id", flat=True))
    return linked == set(Contact.objects.filter(pk__in=linked).values_list("pk", flat=True))


def tag_task_staged(owner, contact_factory, tag_factory, n: int) -> tuple[Task, list[Contact]]:
    tag = tag_factory(owner=owner)
    members = sorted(contact_factory.create_batch(n, owner=owner), key=lambda c: c.pk)
    ContactTagManager().add_contacts_to_tag(tag.pk, [c.pk for c in members])
    task = task_create(owner=owner, tag=tag, **CONTENT)
    assert task_prepare_chunk(task_id=task.pk).created == 0  # the members copied
    return task, members


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_contact_created_meanwhile_by_another_transaction_is_the_one_linked(user, inline_max):
    inline_max(5)
    task = create_list_task(user, 10)
    release = threading.Event()
    other = holding(lambda: Contact.objects.create(owner=user, email="r5@example.org", first_name="Other"), release)

    chunk: dict[str, int] = {}
    preparer = in_thread(lambda: chunk.update(created=task_prepare_chunk(task_id=task.pk).created))
    # The chunk's insert of r5 waits for the other transaction's row, then finds it committed.
    wait_until(lambda: lock_waiters() == 1, timeout=30, what="the chunk waiting for the other contact")
    release.set()
    other.join()
    preparer.join()

    assert chunk == {"created": 10}
    assert_prepared_exactly(task, emails(10))
    contacts = dict(Contact.objects.filter(owner=user).values_list("email", "first_name"))
    assert (len(contacts), contacts["r5@example.org"]) == (10, "Other")
    linked = SubTask.objects.get(task=task, recipient_email="r5@example.org").contact
    assert (linked.email, linked.first_name) == ("r5@example.org", "Other")


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_contact_deleted_while_a_chunk_links_it_waits_and_unlinks_its_subtask(
    user, contact_factory, tag_factory, inline_max
):
    inline_max(1)
    task, members = tag_task_staged(user, contact_factory, tag_factory, 5)
    # Another transaction holds members[3]: the chunk locks members[0..2], then waits there.
    release = threading.Event()
    blocker = holding(lambda: list(Contact.objects.select_for_update().filter(pk=members[3].pk)), release)
    preparer = in_thread(lambda: task_prepare_chunk(task_id=task.pk))
    wait_until(lambda: lock_waiters() == 1, timeout=30, what="the chunk waiting for members[3]")

    deleter = in_thread(lambda: contacts_delete(contacts=Contact.objects.filter(pk=members[1].pk)))
    wait_until(lambda: lock_waiters() == 2, timeout=30, what="the delete waiting for the chunk")
    release.set()
    for thread in (blocker, preparer, deleter):
        thread.join()

    subtasks = SubTask.objects.filter(task=task).order_by("id")
    assert list(subtasks.values_list("recipient_email", "contact_id")) == [
        (c.email, None if i == 1 else c.pk) for i, c in enumerate(members)
    ]
    assert not Contact.objects.filter(pk=members[1].pk).exists()
    assert linked_contacts_exist(task)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_contact_deleted_before_a_chunk_reads_it_is_not_linked(user, contact_factory, tag_factory, inline_max):
    inline_max(1)
    task, members = tag_task_staged(user, contact_factory, tag_factory, 4)
    # A list recipient's contact deleted before the chunk reads it: the recipient gets a new one.
    listed = create_list_task(user, 3)
    known = contact_factory(owner=user, email="r1@example.org")
    release = threading.Event()

    def delete() -> None:
        contacts_delete(contacts=Contact.objects.filter(pk__in=[members[2].pk, known.pk]))

    deleter = holding(delete, release)
    preparers = [in_thread(lambda t=t: task_prepare_chunk(task_id=t.pk)) for t in (task, listed)]
    wait_until(lambda: lock_waiters() == 2, timeout=30, what="both chunks waiting for the delete")
    release.set()
    for thread in (deleter, *preparers):
        thread.join()

    assert list(SubTask.objects.filter(task=task).order_by("id").values_list("contact_id", flat=True)) == [
        None if i == 2 else c.pk for i, c in enumerate(members)
    ]
    relinked = SubTask.objects.get(task=listed, recipient_email="r1@example.org").contact
    assert (relinked.email, relinked.pk != known.pk) == ("r1@example.org", True)
    assert linked_contacts_exist(task) and linked_contacts_exist(listed)
