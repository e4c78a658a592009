import pytest

from deliverability.models import Suppression
from deliverability.suppressions import suppressed_among, suppression_add

pytestmark = pytest.mark.django_db


def test_an_address_is_suppressed_once_and_keeps_its_first_reason(user):
    first, created = suppression_add(
        owner_id=user.pk, email=" Ann@Example.com ", reason=Suppression.Reason.HARD_BOUNCE, source="smtp"
    )
    again, created_again = suppression_add(
        owner_id=user.pk, email="ann@example.com", reason=Suppression.Reason.UNSUBSCRIBED, source="unsubscribe"
    )

    assert (created, created_again) == (True, False)
    assert again.pk == first.pk
    assert (again.email, again.reason, again.source) == ("ann@example.com", "hard_bounce", "smtp")
    assert Suppression.objects.count() == 1


def test_an_owner_sees_its_own_and_the_platform_list_not_another_owners(user_factory):
    user, other_user = user_factory(), user_factory()
    suppression_add(owner_id=user.pk, email="own@example.com", reason="manual", source="api")
    suppression_add(owner_id=None, email="everyone@example.com", reason="complaint", source="admin")
    suppression_add(owner_id=other_user.pk, email="theirs@example.com", reason="manual", source="api")

    found = suppressed_among(
        owner_id=user.pk, emails=["OWN@example.com", "everyone@example.com", "theirs@example.com", "free@example.com"]
    )

    assert found == {"own@example.com", "everyone@example.com"}
