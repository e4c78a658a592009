"""The V1 -> V2 upgrade: forward, back and forward again, with every value checked."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from queues.services import message_id_for

V1 = [
    ("accounts", "0001_initial"),
    ("contacts", "0001_v1_baseline"),
    ("queues", "0001_v1_baseline"),
    ("monitoring", None),
    ("config", None),
]

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(targets):
    """Migrate to the targets and return the historical app registry there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(
        [t for t in targets if t[1] is not None] or executor.loader.graph.leaf_nodes()
    ).apps


def latest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def table_names() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


def columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return {c.name for c in connection.introspection.get_table_description(cursor, table)}


def index_names(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, table))


def seed_v1(apps, now: dt.datetime) -> dict:
    User = apps.get_model("accounts", "User")
    Service = apps.get_model("queues", "EmailService")
    Task = apps.get_model("queues", "Task")
    SubTask = apps.get_model("queues", "SubTask")
    Contact = apps.get_model("contacts", "Contact")
    Tag = apps.get_model("contacts", "Tag")

    alice = User.objects.create(username="alice")
    bob = User.objects.create(username="bob")
    ids = {"alice": alice.pk, "bob": bob.pk}

    frozen_until = (now + dt.timedelta(hours=2)).replace(microsecond=0)
    expired_until = (now - dt.timedelta(hours=1)).replace(microsecond=0)
    common = {"host": "smtp.example.com", "from_email": "news@example.com", "daily_quota": 500}
    ids["frozen"] = Service.objects.create(
        name="frozen", is_frozen=True, frozen_until=frozen_until, used_quota=7, sending_rate=2.5, **common
    ).pk
    ids["open"] = Service.objects.create(name="open", is_frozen=False, used_quota=3, **common).pk
    ids["expired"] = Service.objects.create(name="expired", is_frozen=True, frozen_until=expired_until, **common).pk
    ids["indefinite"] = Service.objects.create(name="indefinite", is_frozen=True, frozen_until=None, **common).pk
    ids["frozen_until"] = frozen_until
    ids["expired_until"] = expired_until

    t1, t2, t3 = (Tag.objects.create(owner=alice, name=name) for name in ("vip", "news", "old"))
    c1, c2, c3, c4 = (Contact.objects.create(owner=alice, email=f"c{i}@example.org") for i in range(1, 5))
    missing_tag = str(uuid.uuid4())
    # contacts.tags and tags.contacts disagree, as they did in V1.
    c1.tags = [str(t1.pk), str(t2.pk)]
    c2.tags = [str(t1.pk)]
    c4.tags = [missing_tag]
    for contact in (c1, c2, c4):
        contact.save()
    t1.contacts = [str(c3.pk)]
    t2.contacts = [str(c1.pk)]
    t3.contacts = [str(c2.pk)]
    for tag in (t1, t2, t3):
        tag.save()
    ids.update(t1=t1.pk, t2=t2.pk, t3=t3.pk, c1=c1.pk, c2=c2.pk, c3=c3.pk, c4=c4.pk, missing_tag=missing_tag)

    task = Task.objects.create(owner=bob, name="spring", subject="Hi", body_text="Hello", status="sending")
    ids["task"] = task.pk
    ids["sent"] = SubTask.objects.create(
        task=task, recipient_email="a@example.org", status="sent", service_id=ids["open"], sent_at=now
    ).pk
    ids["orphan"] = SubTask.objects.create(task=task, recipient_email="b@example.org", status="allocated").pk
    ids["pending"] = SubTask.objects.create(task=task, recipient_email="c@example.org").pk
    return ids


def check_v1(apps, ids: dict) -> None:
    Service = apps.get_model("queues", "EmailService")
    Contact = apps.get_model("contacts", "Contact")
    Tag = apps.get_model("contacts", "Tag")
    SubTask = apps.get_model("queues", "SubTask")

    frozen = Service.objects.get(pk=ids["frozen"])
    assert (frozen.is_frozen, frozen.frozen_until, frozen.used_quota) == (True, ids["frozen_until"], 7)
    assert frozen.sending_rate == 2.5
    open_ = Service.objects.get(pk=ids["open"])
    assert (open_.is_frozen, open_.frozen_until, open_.used_quota, open_.is_enabled) == (False, None, 3, True)
    # An expired freeze comes back as "not frozen", which V1 read the same way.
    expired = Service.objects.get(pk=ids["expired"])
    assert (expired.is_frozen, expired.frozen_until) == (False, None)
    # An open-ended freeze became "disabled" and stays so.
    indefinite = Service.objects.get(pk=ids["indefinite"])
    assert (indefinite.is_frozen, indefinite.is_enabled) == (False, False)

    assert Contact.objects.get(pk=ids["c1"]).tags == [str(ids["t1"]), str(ids["t2"])]
    assert Contact.objects.get(pk=ids["c2"]).tags == [str(ids["t1"])]
    assert Contact.objects.get(pk=ids["c3"]).tags is None
    assert Contact.objects.get(pk=ids["c4"]).tags == [ids["missing_tag"]]
    assert Tag.objects.get(pk=ids["t1"]).contacts == [str(ids["c3"])]
    assert Tag.objects.get(pk=ids["t2"]).contacts == [str(ids["c1"])]
    assert Tag.objects.get(pk=ids["t3"]).contacts == [str(ids["c2"])]

    assert SubTask.objects.get(pk=ids["sent"]).status == "sent"
    assert SubTask.objects.count() == 3

    assert "idx_contacts_tags" in index_names("contacts")
    assert "tags" in columns("contacts")
    assert {"is_frozen", "frozen_until"} <= columns("email_services")
    assert not {"next_available_at", "last_sent_at", "total_sent"} & columns("email_services")
    assert not {"contact_tags_backup", "tag_contacts_merge_backup", "task_wait_metrics"} & table_names()


def check_v2(apps, ids: dict, now: dt.datetime, *, expired_next: dt.datetime | None) -> None:
    Service = apps.get_model("queues", "EmailService")
    Tag = apps.get_model("contacts", "Tag")
    SubTask = apps.get_model("queues", "SubTask")

    frozen = Service.objects.get(pk=ids["frozen"])
    assert frozen.next_available_at == ids["frozen_until"]
    assert (frozen.used_quota, frozen.daily_quota, frozen.sending_rate) == (7, 500, 2.5)
    assert (frozen.total_sent, str(frozen.success_rate), frozen.avg_response_time) == (0, "100.00", 0)
    assert Service.objects.get(pk=ids["open"]).next_available_at is None
    assert Service.objects.get(pk=ids["expired"]).next_available_at == expired_next
    assert Service.objects.get(pk=ids["indefinite"]).is_enabled is False
    # Ready services now, by the V2 rule: the frozen one is not among them.
    ready = set(Service.objects.filter(is_enabled=True, next_available_at__lte=now).values_list("pk", flat=True)) | set(
        Service.objects.filter(is_enabled=True, next_available_at=None).values_list("pk", flat=True)
    )
    assert ready == {ids["open"], ids["expired"]}

    # The merge: every membership from either side.
    # Existing members keep their place; merged ones follow (in contact id order).
    t1_members = Tag.objects.get(pk=ids["t1"]).contacts
    assert t1_members[0] == str(ids["c3"])
    assert t1_members[1:] == sorted([str(ids["c1"]), str(ids["c2"])])
    assert Tag.objects.get(pk=ids["t2"]).contacts == [str(ids["c1"])]
    assert Tag.objects.get(pk=ids["t3"]).contacts == [str(ids["c2"])]
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, tags FROM contact_tags_backup")
        backup = {str(uuid.UUID(str(row[0]))): row[1] for row in cursor.fetchall()}
    assert set(backup) == {str(ids["c1"]), str(ids["c2"]), str(ids["c4"])}

    orphan = SubTask.objects.get(pk=ids["orphan"])
    assert (orphan.status, orphan.service_id) == ("pending", None)
    # V1 rows get the Message-ID V2 would have given them.
    message_ids = dict(SubTask.objects.values_list("pk", "message_id"))
    assert message_ids == {pk: message_id_for(pk) for pk in (ids["sent"], ids["orphan"], ids["pending"])}
    assert set(SubTask.objects.values_list("owner__username", flat=True)) == {"bob"}
    assert SubTask.objects.get(pk=ids["sent"]).service_id == ids["open"]

    assert "tags" not in columns("contacts")
    assert "idx_contacts_tags" not in index_names("contacts")
    assert not {"is_frozen", "frozen_until"} & columns("email_services")
    assert {"contact_tags_backup", "tag_contacts_merge_backup", "task_wait_metrics"} <= table_names()
    assert "idx_email_services_next_available_enabled" in index_names("email_services")
    assert "idx_subtasks_pending_priority" in index_names("subtasks")
    assert "idx_tasks_sending_updated" in index_names("tasks")


def test_v1_data_survives_upgrade_downgrade_and_upgrade_again():
    now = timezone.now()
    ids = seed_v1(migrate(V1), now)

    check_v2(migrate(latest()), ids, now, expired_next=ids["expired_until"])
    check_v1(migrate(V1), ids)
    # The expired freeze came back as "not frozen", so it now carries nothing.
    check_v2(migrate(latest()), ids, now, expired_next=None)


def test_upgrade_refuses_sent_subtasks_without_a_service_and_changes_nothing():
    apps = migrate(V1)
    User = apps.get_model("accounts", "User")
    Task = apps.get_model("queues", "Task")
    SubTask = apps.get_model("queues", "SubTask")
    task = Task.objects.create(owner=User.objects.create(username="carol"), name="t", subject="s")
    broken = SubTask.objects.create(task=task, recipient_email="x@example.org", status="sent")

    with pytest.raises(Exception, match="1 subtasks are 'sent' but name no email service"):
        migrate(latest())
    assert "owner_id" not in columns("subtasks")  # 0003 rolled back as a whole

    SubTask.objects.filter(pk=broken.pk).update(status="failed")
    migrate(latest())
    assert "owner_id" in columns("subtasks")


@pytest.mark.postgres_only
def test_plan_indexes_are_partial_as_in_the_plan():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN "
            "('idx_email_services_next_available_enabled', 'idx_subtasks_pending_priority', "
            "'idx_tasks_sending_updated', 'idx_tags_contacts_gin')"
        )
        defs = dict(cursor.fetchall())
    assert defs["idx_email_services_next_available_enabled"].endswith(
        "ON public.email_services USING btree (next_available_at, is_enabled) WHERE is_enabled"
    )
    assert defs["idx_subtasks_pending_priority"].endswith(
        "ON public.subtasks USING btree (status, priority, created_at) WHERE ((status)::text = 'pending'::text)"
    )
    assert defs["idx_tasks_sending_updated"].endswith(
        "ON public.tasks USING btree (status, updated_at) WHERE ((status)::text = 'sending'::text)"
    )
    assert defs["idx_tags_contacts_gin"].endswith("USING gin (contacts jsonb_path_ops) WITH (fastupdate=off)")


def test_models_and_migrations_agree():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


BEFORE_PARTS = [("queues", "0018_bounce_class_pause_reason")]


def test_recipients_waiting_in_the_older_forms_move_to_parts_and_back():
    apps = migrate(BEFORE_PARTS)
    User = apps.get_model("accounts", "User")
    Contact = apps.get_model("contacts", "Contact")
    Task = apps.get_model("queues", "Task")
    owner = User.objects.create(username="dora")
    member = Contact.objects.create(owner=owner, email="m@example.org")
    content = {"owner": owner, "name": "t", "subject": "s", "status": "preparing"}
    # A list not staged yet; a tag task half prepared (position 1 done, 2..4 staged).
    listed = Task.objects.create(**content, recipients_total=2)
    apps.get_model("queues", "TaskRecipientList").objects.create(
        task=listed, recipients=[["a@example.org", "A", "", None], ["b@example.org", "", "B", {"k": 1}]]
    )
    staged = Task.objects.create(**content, recipients_total=4, recipients_prepared=1, recipients_staged=True)
    TaskRecipient = apps.get_model("queues", "TaskRecipient")
    TaskRecipient.objects.create(task=staged, position=2, email="c@example.org", first_name="C", attributes={"x": 2})
    TaskRecipient.objects.create(task=staged, position=3, email="m@example.org", contact=member)
    TaskRecipient.objects.create(task=staged, position=4, email="gone@example.org", contact_id=uuid.uuid4())
    listed_entries = [["a@example.org", "A", "", None], ["b@example.org", "", "B", {"k": 1}]]
    staged_entries = [["c@example.org", "C", "", {"x": 2}], ["m@example.org", str(member.pk)]]
    staged_entries.append(["gone@example.org", str(TaskRecipient.objects.get(position=4).contact_id)])

    apps = migrate(latest())
    parts = apps.get_model("queues", "TaskRecipientPart").objects
    assert list(parts.filter(task_id=listed.pk).values_list("start", "size", "recipients")) == [(0, 2, listed_entries)]
    assert list(parts.filter(task_id=staged.pk).values_list("start", "size", "recipients")) == [(1, 3, staged_entries)]
    assert apps.get_model("queues", "Task").objects.get(pk=listed.pk).recipients_staged is True

    apps = migrate(BEFORE_PARTS)  # back: every part staged one row each
    rows = apps.get_model("queues", "TaskRecipient").objects.order_by("task_id", "position")
    assert list(rows.filter(task_id=staged.pk).values_list("position", "email", "first_name", "contact_id")) == [
        (2, "c@example.org", "C", None),
        (3, "m@example.org", "", member.pk),
        (4, "gone@example.org", "", uuid.UUID(staged_entries[2][1])),
    ]
    assert list(rows.filter(task_id=listed.pk).values_list("position", "email", "last_name", "attributes")) == [
        (1, "a@example.org", "", None),
        (2, "b@example.org", "B", {"k": 1}),
    ]

    migrate(latest())
    from queues.expansion import tasks_prepare
    from queues.models import SubTask

    assert tasks_prepare() == 5
    prepared = SubTask.objects.order_by("id").values_list("task_id", "recipient_email", "contact__email")
    assert [row for row in prepared if row[0] == staged.pk] == [
        (staged.pk, "c@example.org", "c@example.org"),
        (staged.pk, "m@example.org", "m@example.org"),
        (staged.pk, "gone@example.org", None),
    ]
    assert [row[1:] for row in prepared if row[0] == listed.pk] == [
        ("a@example.org", "a@example.org"),
        ("b@example.org", "b@example.org"),
    ]


BEFORE_ENCRYPTION = [("queues", "0019_recipient_parts")]


def raw_credentials(name: str) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT password, backend_options FROM email_services WHERE name = %s", [name])
        password, options = cursor.fetchone()
    return password, options if isinstance(options, str) else json.dumps(options)


def test_existing_plaintext_credentials_are_encrypted_and_decrypted_back(settings):
    from cryptography.fernet import Fernet

    apps = migrate(BEFORE_ENCRYPTION)
    Service = apps.get_model("queues", "EmailService")
    common = {"host": "smtp.example.com", "from_email": "news@example.com"}
    Service.objects.create(name="esp", password="plain-Secret-1", backend_options={"api_key": "plain-Key-2"}, **common)
    Service.objects.create(name="open", password="", **common)
    plain = {name: raw_credentials(name) for name in ("esp", "open")}
    assert "plain-Secret-1" in plain["esp"][0] and "plain-Key-2" in plain["esp"][1]

    migrate(latest())
    password, options = raw_credentials("esp")
    assert "plain-Secret-1" not in password and "plain-Key-2" not in options
    (key,) = settings.EDM_FIELD_KEYS
    assert Fernet(key).decrypt(password.encode()) == b"plain-Secret-1"
    assert json.loads(Fernet(key).decrypt(json.loads(options).encode())) == {"api_key": "plain-Key-2"}
    assert raw_credentials("open")[0] == ""
    from queues.models import EmailService

    esp = EmailService.objects.get(name="esp")
    assert (esp.password, esp.backend_options) == ("plain-Secret-1", {"api_key": "plain-Key-2"})
    assert EmailService.objects.get(name="open").backend_options == {}

    migrate(BEFORE_ENCRYPTION)  # back: the plaintext as it was
    assert {name: raw_credentials(name) for name in ("esp", "open")} == plain
    migrate(latest())
    assert EmailService.objects.get(name="esp").password == "plain-Secret-1"
