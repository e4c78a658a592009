"""A task whose templates read an unknown variable is refused, by the API and the admin alike."""

from __future__ import annotations

import pytest

from contacts.models import Contact
from queues.models import SubTask, Task
from queues.services import TaskValidationError, task_create
from queues.templates_check import template_variables_errors
from tests.api_helpers import client_for
from tests.test_admin_edits import form_errors, post_task, queued_task, row

URL = "/api/tasks/"
AVAILABLE = "Available: contact.email, contact.first_name, contact.full_name, contact.last_name, unsubscribe_url"
FIRST_NAME = f"unknown template variable 'first_name' in body_text; did you mean 'contact.first_name'? {AVAILABLE}"


def post(user, **fields):
    content = {"name": "Spring", "subject": "Hi {{ contact.first_name }}", "body_text": "Hello", **fields}
    return client_for(user).post(URL, {"recipients": ["a@example.org"], **content}, format="json")


def test_api_create_with_an_unknown_variable_is_a_400_naming_it_and_creates_nothing(user):
    response = post(user, body_text="Hello {{ first_name }},")

    assert response.status_code == 400
    assert response.json() == {"detail": f"body_text: {FIRST_NAME}", "errors": {"body_text": [FIRST_NAME]}}
    assert (Task.objects.count(), SubTask.objects.count(), Contact.objects.count()) == (0, 0, 0)


@pytest.mark.parametrize(
    ("field", "source", "name", "suggestion"),
    [
        ("subject", "Hi {{ contact.frist_name }}", "contact.frist_name", "contact.first_name"),
        ("body_text", "{% if contacts.email %}x{% endif %}", "contacts.email", "contact.email"),
        ("body_html", '<a href="{{ unsubscribe_link }}">x</a>', "unsubscribe_link", "unsubscribe_url"),
        ("body_text", "{{ contact.first_name|default:fullname }}", "fullname", "contact.full_name"),
    ],
    ids=["typo", "in-an-if", "mail-variable", "filter-argument"],
)
def test_a_near_miss_gets_a_suggestion(user, field, source, name, suggestion):
    response = post(user, **{field: source})

    assert response.status_code == 400
    assert response.json()["errors"] == {
        field: [f"unknown template variable '{name}' in {field}; did you mean '{suggestion}'? {AVAILABLE}"]
    }


def test_a_name_nothing_is_close_to_gets_no_suggestion(user):
    response = post(user, body_text="{{ xyzzy }}")

    assert response.json()["errors"] == {"body_text": [f"unknown template variable 'xyzzy' in body_text. {AVAILABLE}"]}


def test_every_unknown_variable_of_every_field_is_named_once(user):
    response = post(user, subject="{{ a }} {{ a }}", body_text="{{ b.c }} {{ contact.d.e }}")

    errors = response.json()["errors"]
    assert {field: [m.split(" in ")[0] for m in msgs] for field, msgs in errors.items()} == {
        "subject": ["unknown template variable 'a'"],
        "body_text": ["unknown template variable 'b.c'", "unknown template variable 'contact.d'"],
    }


@pytest.mark.parametrize(
    "source",
    [
        "{{ contact.first_name }} {{ contact.last_name }} {{ contact.full_name }} {{ contact.email }}",
        '<a href="{{ unsubscribe_url }}">{{ contact.first_name|default:"friend"|upper }}</a>',
        "{% for city in contact.cities %}{{ forloop.counter }}. {{ city|title }}{% empty %}none{% endfor %}",
        "{% with name=contact.first_name %}{% if name and contact.vip == True %}{{ name }}{% endif %}{% endwith %}",
        '{% now "Y" as year %}(c) {{ year }} {% firstof contact.first_name "friend" %}',
    ],
    ids=["fields", "mail-variable-and-filters", "for-loop", "with-and-if", "as-names"],
)
def test_templates_that_read_only_known_variables_are_accepted(user, source):
    response = post(
        user,
        body_html=source,
        recipients=[{"email": "a@example.org", "attributes": {"cities": ["oslo"], "vip": True}}],
    )

    assert response.status_code == 201, response.json()


def test_an_attribute_is_known_from_the_new_recipients_or_the_owners_contacts(user, user_factory):
    source = {"subject": "Hi", "body_text": "{{ contact.company }}"}
    other = user_factory()
    Contact.objects.create(owner=other, email="x@example.org", attributes={"company": "ACME"})

    # Another owner's contacts do not count.
    with pytest.raises(TaskValidationError) as refused:
        task_create(owner=user, name="n", recipients=["a@example.org"], **source)
    assert refused.value.errors["body_text"][0].startswith("unknown template variable 'contact.company' in body_text.")

    task_create(owner=user, name="n", recipients=[{"email": "b@example.org", "attributes": {"company": "B"}}], **source)
    # b@example.org is now one of the owner's contacts, with the attribute.
    task_create(owner=user, name="n", recipients=["c@example.org"], **source)
    assert Task.objects.filter(owner=user).count() == 2


def test_a_misspelt_attribute_is_refused_with_the_owners_attributes_offered(user):
    Contact.objects.create(owner=user, email="x@example.org", attributes={"company": "ACME", "city": "Oslo"})

    errors = template_variables_errors(owner_id=user.pk, templates={"body_text": "{{ contact.compnay }}"})

    assert errors == {
        "body_text": [
            "unknown template variable 'contact.compnay' in body_text; did you mean 'contact.company'? Available: "
            "contact.city, contact.company, contact.email, contact.first_name, contact.full_name, contact.last_name, "
            "unsubscribe_url"
        ]
    }


def test_api_patch_with_an_unknown_variable_is_a_400_and_changes_nothing(user):
    task = queued_task(user)
    before = row(task)

    response = client_for(user).patch(f"{URL}{task.pk}/", {"body_text": "Hello {{ first_name }},"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": f"body_text: {FIRST_NAME}", "errors": {"body_text": [FIRST_NAME]}}
    assert row(task) == before


def test_api_patch_with_known_variables_changes_the_task(user):
    task = queued_task(user)

    response = client_for(user).patch(
        f"{URL}{task.pk}/", {"body_text": "Hello {{ contact.first_name }}", "priority": 3}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["body_text"], response.json()["priority"]) == ("Hello {{ contact.first_name }}", 3)
    assert Task.objects.values_list("body_text", "priority").get(pk=task.pk) == ("Hello {{ contact.first_name }}", 3)


def test_editing_a_task_checks_only_the_templates_that_change(user):
    task = queued_task(user)
    Task.objects.filter(pk=task.pk).update(body_text="{{ legacy }}")  # written before the check existed

    response = client_for(user).patch(f"{URL}{task.pk}/", {"priority": 4}, format="json")

    assert response.status_code == 200
    assert Task.objects.values_list("body_text", "priority").get(pk=task.pk) == ("{{ legacy }}", 4)


@pytest.fixture
def staff_client(client, user_factory):
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    return client


def test_admin_change_with_an_unknown_variable_is_a_form_error_and_nothing_changes(staff_client, user):
    task = queued_task(user)
    before = row(task)

    response = post_task(staff_client, task, body_text="Hello {{ first_name }},")

    assert form_errors(response) == {"body_text": [FIRST_NAME]}
    assert row(task) == before


def test_admin_change_with_known_variables_is_saved(staff_client, user):
    task = queued_task(user)

    response = post_task(staff_client, task, body_text="Bye {{ contact.first_name }}")

    assert response.status_code == 302
    assert Task.objects.get(pk=task.pk).body_text == "Bye {{ contact.first_name }}"


def test_admin_has_no_add_form_for_tasks(staff_client):
    # Tasks are created with their recipients through task_create (the API), which runs the same check.
    assert staff_client.get("/admin/queues/task/add/").status_code == 403
