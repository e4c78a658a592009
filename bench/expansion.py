"""Task creation and background preparation of large tasks.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/edm_bench python bench/expansion.py [--recipients 100000]

Prints the API's answer time for a task of N recipients given as a list and
as a tag of N contacts, then the preparation rate (subtasks/s) of each,
next to a ceiling measured in the same run: one INSERT … SELECT
generate_series of N rows into a scratch copy of the subtasks table (same
columns and indexes), which is what the preparation's chunks add up to
without reading recipients or upserting contacts.
"""

from __future__ import annotations

import argparse
import time

from harness import setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    args = parser.parse_args()
    n = args.recipients

    vendor = setup_django()
    from django.conf import settings
    from django.db import connection
    from rest_framework.test import APIClient

    from accounts.models import User
    from contacts.models import Contact, Tag
    from queues.expansion import tasks_prepare
    from queues.models import SubTask, Task

    content = {"name": "bench", "subject": "Hello {{ contact.first_name }}", "body_text": "Hi {{ contact.first_name }}"}
    print(f"database: {vendor}; {n:,} recipients")
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]  # the API is called in process

    list_owner = User.objects.create(username="bench-list")
    client = APIClient()
    client.force_authenticate(list_owner)
    # Plain addresses: 100,000 of them fit DATA_UPLOAD_MAX_MEMORY_SIZE's default 5 MB.
    body = {**content, "recipients": [f"r{i}@bench.example" for i in range(n)]}
    started = time.perf_counter()
    response = client.post("/api/tasks/", body, format="json")
    list_create = time.perf_counter() - started
    assert response.status_code == 201, response.content[:500]
    print(f"API create, list of {n:,}: {list_create * 1000:.0f} ms  (status {response.json()['status']})")

    tag_owner = User.objects.create(username="bench-tag")
    contacts = Contact.objects.bulk_create(
        (Contact(owner=tag_owner, email=f"t{i}@bench.example") for i in range(n)), batch_size=5000
    )
    tag = Tag.objects.create(owner=tag_owner, name="all", contacts=[str(c.pk) for c in contacts])
    client.force_authenticate(tag_owner)
    started = time.perf_counter()
    response = client.post("/api/tasks/", {**content, "tag": str(tag.pk)}, format="json")
    tag_create = time.perf_counter() - started
    assert response.status_code == 201, response.content[:500]
    print(f"API create, tag of {n:,}:  {tag_create * 1000:.0f} ms  (status {response.json()['status']})")

    for label, owner in (("list (contacts upserted)", list_owner), ("tag", tag_owner)):
        task = Task.objects.get(owner=owner)
        started = time.perf_counter()
        created = tasks_prepare(task_id=task.pk)
        seconds = time.perf_counter() - started
        assert created == n == SubTask.objects.filter(task=task).count(), created
        print(f"preparation, {label}: {seconds:.2f} s = {n / seconds:,.0f} subtasks/s")

    if vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE bench_subtasks (LIKE subtasks INCLUDING ALL)")
            task = Task.objects.get(owner=list_owner)
            started = time.perf_counter()
            cursor.execute(
                """
                INSERT INTO bench_subtasks (
                    id, task_id, owner_id, contact_id, recipient_email, status, priority, attempts, error_message,
                    next_attempt_at, message_id, claimed_by, created_at, updated_at
                )
                SELECT gen_random_uuid(), %s, %s, NULL, 'r' || i || '@bench.example', 'pending', 0, 0, '', now(),
                       '<' || md5(i::text) || '@bench>', '', now(), now()
                FROM generate_series(1, %s) AS i
                """,
                [task.pk, list_owner.pk, n],
            )
            ceiling = time.perf_counter() - started
        print(f"ceiling, one INSERT ... SELECT generate_series into a copy of subtasks: {n / ceiling:,.0f} rows/s")


if __name__ == "__main__":
    main()
