"""suppressions_add_many: suppression_add's rules, for a batch in one statement."""

import pytest

from deliverability.models import Suppression
from deliverability.suppressions import SuppressionEntry, suppressions_add_many

pytestmark = pytest.mark.django_db


def entry(owner, email: str, **fields) -> SuppressionEntry:
    return SuppressionEntry(
        owner_id=owner.pk if owner else None, email=email, **{"reason": "hard_bounce", "source": "smtp", **fields}
    )


def test_a_batch_is_lowercased_deduplicated_and_keeps_what_was_there(user_factory):
    ann, bob = user_factory(), user_factory()
    Suppression.objects.create(owner=ann, email="old@x.example", reason="unsubscribed", source="api")

    suppressions_add_many(
        entries=[
            entry(ann, " New@X.example ", detail="550 5.1.1 first"),
            entry(ann, "new@x.example", detail="550 5.1.1 second"),  # the same address twice in one batch
            entry(ann, "OLD@x.example"),
            entry(bob, "new@x.example"),  # another owner's list
        ]
    )

    rows = set(Suppression.objects.values_list("owner__username", "email", "reason", "detail"))
    assert rows == {
        (ann.username, "old@x.example", "unsubscribed", ""),
        (ann.username, "new@x.example", "hard_bounce", "550 5.1.1 first"),
        (bob.username, "new@x.example", "hard_bounce", ""),
    }


def test_an_empty_batch_writes_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        suppressions_add_many(entries=[])
