"""Tag membership through ContactTagManager: add, tags_of_contact, contacts_of_tag.

python bench/tag_membership.py [--tags 2000] [--contacts 20000]
BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/edm_bench python bench/tag_membership.py
"""

from __future__ import annotations

import argparse
import random
import uuid

from harness import setup_django, summary, time_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=2000)
    parser.add_argument("--contacts", type=int, default=20000)
    parser.add_argument("--per-tag", type=int, default=50, help="members per tag")
    args = parser.parse_args()

    vendor = setup_django()
    from django.db import connection

    from accounts.models import User
    from contacts.models import Contact, Tag
    from contacts.tag_manager import ContactTagManager

    owner = User.objects.create(username="bench")
    contacts = Contact.objects.bulk_create(
        (Contact(owner=owner, email=f"c{i}@bench.example") for i in range(args.contacts)), batch_size=5000
    )
    ids = [str(c.pk) for c in contacts]
    rng = random.Random(7)
    Tag.objects.bulk_create(
        (Tag(owner=owner, name=f"tag{i}", contacts=rng.sample(ids, args.per_tag)) for i in range(args.tags)),
        batch_size=1000,
    )
    if vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE tags")
    manager = ContactTagManager()
    tag_ids = list(Tag.objects.values_list("pk", flat=True))

    print(f"database: {vendor}; {args.tags} tags x {args.per_tag} members, {args.contacts} contacts")
    print("tags_of_contact   ", summary(time_calls(lambda: list(manager.tags_of_contact(rng.choice(ids))), 500)))
    print("contacts_of_tag   ", summary(time_calls(lambda: list(manager.contacts_of_tag(rng.choice(tag_ids))), 500)))
    extra = Contact.objects.bulk_create(
        Contact(owner=owner, email=f"x{uuid.uuid4().hex}@b.example") for _ in range(500)
    )
    pending = iter(extra)
    print(
        "add_contact_to_tag",
        summary(time_calls(lambda: manager.add_contact_to_tag(rng.choice(tag_ids), next(pending).pk), 500)),
    )


if __name__ == "__main__":
    main()
