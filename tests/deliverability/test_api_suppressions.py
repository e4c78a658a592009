"""/api/suppressions/: each owner's own list, the platform-wide one for staff, CSV in and out."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from deliverability.models import Suppression
from deliverability.suppressions import suppression_add
from tests.api_helpers import client_for

pytestmark = pytest.mark.django_db

URL = "/api/suppressions/"
IMPORT = URL + "import/"
EXPORT = URL + "export/"


def add(owner, email, reason="manual", source="api", detail=""):
    entry, _ = suppression_add(
        owner_id=None if owner is None else owner.pk, email=email, reason=reason, source=source, detail=detail
    )
    return entry


def emails(response) -> list[str]:
    return sorted(item["email"] for item in response.json()["results"])


@pytest.fixture
def staff(user_factory):
    return user_factory(is_staff=True)


# --- listing and filters ------------------------------------------------------------


def test_a_user_lists_only_their_own_entries(user_factory):
    user, other = user_factory(), user_factory()
    add(user, "mine@example.com", "hard_bounce", "smtp", "550 no such user")
    add(other, "theirs@example.com")
    add(None, "everyone@example.com")

    response = client_for(user).get(URL)

    assert response.status_code == 200
    (item,) = response.json()["results"]
    assert {k: item[k] for k in ("email", "reason", "source", "detail", "scope", "task")} == {
        "email": "mine@example.com",
        "reason": "hard_bounce",
        "source": "smtp",
        "detail": "550 no such user",
        "scope": "own",
        "task": None,
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("email=EXAMPLE.org", ["b@example.org", "c@example.org"], id="email-part-any-case"),
        pytest.param("reason=complaint", ["b@example.org"], id="reason"),
        pytest.param("source=import", ["c@example.org"], id="source"),
        pytest.param("created_after=2030-01-01T12:00:00Z", ["c@example.org"], id="created-after"),
        pytest.param("created_before=2030-01-01T12:00:00Z", ["a@example.com", "b@example.org"], id="created-before"),
    ],
)
def test_list_filters(user, query, expected):
    for email, reason, source, day in [
        ("a@example.com", "manual", "api", 1),
        ("b@example.org", "complaint", "webhook:ses", 1),
        ("c@example.org", "hard_bounce", "import", 2),
    ]:
        entry = add(user, email, reason, source)
        Suppression.objects.filter(pk=entry.pk).update(created_at=dt.datetime(2030, 1, day, tzinfo=dt.UTC))

    response = client_for(user).get(f"{URL}?{query}")

    assert response.status_code == 200
    assert emails(response) == expected


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("reason=bounced", id="unknown-reason"),
        pytest.param("created_after=yesterday", id="bad-date"),
        pytest.param("scope=everyone", id="unknown-scope"),
    ],
)
def test_bad_filters_are_a_400_with_json(user, query):
    response = client_for(user).get(f"{URL}?{query}")

    assert response.status_code == 400
    assert response.json()["detail"]


def test_another_owners_entry_is_a_404_to_read_and_to_delete(user_factory):
    user, other = user_factory(), user_factory()
    theirs = add(other, "theirs@example.com")

    client = client_for(user)

    assert client.get(f"{URL}{theirs.pk}/").status_code == 404
    assert client.delete(f"{URL}{theirs.pk}/").status_code == 404
    assert Suppression.objects.filter(pk=theirs.pk).exists()


# --- adding and removing -------------------------------------------------------------


def test_add_normalises_the_address_defaults_to_manual_and_is_idempotent(user):
    client = client_for(user)

    first = client.post(URL, {"email": "  Ann@Example.COM ", "detail": "asked by phone"}, format="json")
    again = client.post(URL, {"email": "ann@example.com", "reason": "complaint"}, format="json")

    assert first.status_code == 201
    assert {k: first.json()[k] for k in ("email", "reason", "source", "detail", "scope")} == {
        "email": "ann@example.com",
        "reason": "manual",
        "source": "api",
        "detail": "asked by phone",
        "scope": "own",
    }
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["reason"]) == (first.json()["id"], "manual")  # the first entry stays
    assert list(Suppression.objects.values_list("owner_id", "email")) == [(user.pk, "ann@example.com")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "email", id="missing-email"),
        pytest.param({"email": "not-an-address"}, "email", id="bad-email"),
        pytest.param({"email": 12}, "email", id="not-a-string"),
        pytest.param({"email": "a@example.com", "reason": "bored"}, "reason", id="unknown-reason"),
        pytest.param({"email": "a@example.com", "detail": "x" * 2001}, "detail", id="detail-too-long"),
        pytest.param({"email": "a@example.com", "detail": "nul\x00"}, "detail", id="nul-in-detail"),
    ],
)
def test_bad_input_is_a_400_and_adds_nothing(user, body, field):
    response = client_for(user).post(URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not Suppression.objects.exists()


def test_a_body_that_is_not_json_is_a_400(user):
    response = client_for(user).generic("POST", URL, b"{not json", content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_delete_takes_the_address_off_the_owners_list_only(user_factory):
    user, other = user_factory(), user_factory()
    mine, theirs = add(user, "x@example.com"), add(other, "x@example.com")

    response = client_for(user).delete(f"{URL}{mine.pk}/")

    assert response.status_code == 204
    assert list(Suppression.objects.values_list("pk", flat=True)) == [theirs.pk]


# --- the platform-wide list ------------------------------------------------------------


def test_staff_manage_the_platform_list_with_scope_platform(staff, user):
    add(staff, "staffs-own@example.com")
    add(user, "users@example.com")
    client = client_for(staff)

    created = client.post(
        f"{URL}?scope=platform", {"email": "spamtrap@example.com", "reason": "complaint"}, format="json"
    )
    listed = client.get(f"{URL}?scope=platform")
    own = client.get(URL)

    assert (created.status_code, created.json()["scope"]) == (201, "platform")
    assert Suppression.objects.get(email="spamtrap@example.com").owner_id is None
    assert emails(listed) == ["spamtrap@example.com"]
    assert emails(own) == ["staffs-own@example.com"]
    assert client.delete(f"{URL}{created.json()['id']}/").status_code == 404  # not in the staff member's own list
    assert client.delete(f"{URL}{created.json()['id']}/?scope=platform").status_code == 204
    assert not Suppression.objects.filter(owner__isnull=True).exists()


def test_plain_users_can_neither_read_nor_change_the_platform_list(user):
    entry = add(None, "everyone@example.com")
    client = client_for(user)

    responses = [
        client.get(f"{URL}?scope=platform"),
        client.get(f"{URL}{entry.pk}/?scope=platform"),
        client.post(f"{URL}?scope=platform", {"email": "x@example.com"}, format="json"),
        client.delete(f"{URL}{entry.pk}/?scope=platform"),
        client.post(f"{IMPORT}?scope=platform", "x@example.com\n", content_type="text/csv"),
        client.get(f"{EXPORT}?scope=platform"),
    ]

    assert [r.status_code for r in responses] == [403] * 6
    assert {r.json()["detail"] for r in responses} == {"only staff manage the platform-wide list"}
    assert client.get(f"{URL}{entry.pk}/").status_code == 404
    assert client.delete(f"{URL}{entry.pk}/").status_code == 404
    assert list(Suppression.objects.values_list("email", flat=True)) == ["everyone@example.com"]


def test_the_api_needs_authentication(db):
    from rest_framework.test import APIClient

    assert APIClient().get(URL).status_code in (401, 403)


# --- CSV import ------------------------------------------------------------------------

MIXED = (
    "ann@example.com\n"  # 1: added, manual
    "BOB@Example.com,hard_bounce\n"  # 2: added, lowercased
    "not-an-address,manual\n"  # 3: invalid address
    "known@example.com,complaint\n"  # 4: already present
    "carl@example.com,bored\n"  # 5: unknown reason
    "\n"  # 6: blank, skipped
    "ann@example.com,complaint\n"  # 7: earlier in the file
    "dee@example.com,unsubscribed,extra\n"  # 8: too many cells
    ",manual\n"  # 9: no address
)


def _upload(text: str) -> dict:
    return {"file": SimpleUploadedFile("list.csv", text.encode(), content_type="text/csv")}


def test_multipart_import_counts_added_present_and_invalid_lines(user):
    add(user, "known@example.com", "manual")

    response = client_for(user).post(IMPORT, _upload(MIXED), format="multipart")

    assert response.status_code == 200
    assert response.json() == {
        "added": 2,
        "already_present": 2,
        "invalid": 4,
        "errors": [
            {"line": 3, "email": "not-an-address", "error": "'not-an-address' is not a valid e-mail address"},
            {
                "line": 5,
                "email": "carl@example.com",
                "error": "unknown reason 'bored'; one of unsubscribed, hard_bounce, complaint, manual",
            },
            {"line": 8, "email": "dee@example.com", "error": "3 cells; a line is email[,reason]"},
            {"line": 9, "email": "", "error": "the email cell is empty"},
        ],
    }
    entries = dict(Suppression.objects.filter(owner=user).values_list("email", "reason"))
    assert entries == {"ann@example.com": "manual", "bob@example.com": "hard_bounce", "known@example.com": "manual"}
    assert set(Suppression.objects.filter(email="ann@example.com").values_list("source", flat=True)) == {"import"}


def test_a_text_csv_body_with_a_header_takes_columns_by_name(user):
    body = "\ufeffreason,Email,note,detail\ncomplaint,a@example.com,x,from the ESP\n,b@example.com,y,\n"

    response = client_for(user).generic("POST", IMPORT, body.encode(), content_type="text/csv")

    assert response.status_code == 200
    assert response.json() == {"added": 2, "already_present": 0, "invalid": 0, "errors": []}
    assert sorted(Suppression.objects.values_list("email", "reason", "detail")) == [
        ("a@example.com", "complaint", "from the ESP"),
        ("b@example.com", "manual", ""),
    ]


def test_import_goes_to_the_callers_list_not_another_owners(user_factory):
    user, other = user_factory(), user_factory()
    add(other, "shared@example.com")

    response = client_for(user).post(IMPORT, _upload("shared@example.com\n"), format="multipart")

    assert response.json()["added"] == 1
    assert Suppression.objects.filter(email="shared@example.com").count() == 2


def test_staff_import_into_the_platform_list(staff):
    response = client_for(staff).post(f"{IMPORT}?scope=platform", _upload("trap@example.com,complaint\n"))

    assert response.json()["added"] == 1
    assert list(Suppression.objects.values_list("owner_id", "email")) == [(None, "trap@example.com")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"", "The submitted file is empty", id="empty"),
        pytest.param(b"\n\n", "the file holds no addresses", id="only-blank-lines"),
        pytest.param(b"email,reason\n", "the file holds no addresses", id="only-a-header"),
        pytest.param(b"\xff\xfeb\x00a\x00d\x00", "not UTF-8 text", id="not-utf8"),
        pytest.param(b"a@example.com\x00\n", "the file contains NUL characters", id="nul"),
        pytest.param(b'"a@example.com\n', "not a readable CSV file", id="unclosed-quote"),
        pytest.param(b"email,Email\nx@example.com,y@example.com\n", "columns named more than once", id="dup-header"),
    ],
)
def test_a_file_that_cannot_be_read_is_a_400_and_adds_nothing(user, content, message):
    upload = {"file": SimpleUploadedFile("list.csv", content, content_type="text/csv")}

    response = client_for(user).post(IMPORT, upload, format="multipart")

    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert not Suppression.objects.exists()


def test_an_empty_csv_body_is_a_400(user):
    response = client_for(user).generic("POST", IMPORT, b"", content_type="text/csv")

    assert response.status_code == 400
    assert response.json()["detail"] == "file: No file was submitted."


def test_an_import_without_a_file_is_a_400(user):
    response = client_for(user).post(IMPORT, {}, format="multipart")

    assert response.status_code == 400
    assert "file" in response.json()["errors"]


def test_only_the_first_hundred_bad_lines_are_listed_but_all_are_counted(user):
    text = "".join(f"bad{i}\n" for i in range(150)) + "good@example.com\n"

    response = client_for(user).post(IMPORT, _upload(text), format="multipart")

    body = response.json()
    assert (body["added"], body["invalid"], len(body["errors"])) == (1, 150, 100)
    assert body["errors"][-1]["line"] == 100


# --- CSV export -------------------------------------------------------------------------


def _rows(response) -> list[list[str]]:
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


def test_export_streams_the_filtered_list_as_csv(user_factory):
    user, other = user_factory(), user_factory()
    bounce = add(user, "b@example.com", "hard_bounce", "smtp", '550 "no such user", really')
    add(user, "a@example.com", "complaint", "webhook:ses")
    add(other, "theirs@example.com")
    add(None, "everyone@example.com")
    client = client_for(user)

    response = client.get(EXPORT, HTTP_ACCEPT="text/csv")
    filtered = client.get(f"{EXPORT}?reason=hard_bounce")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="suppressions.csv"'
    rows = _rows(response)
    assert rows[0] == ["email", "reason", "source", "detail", "created_at"]
    assert [r[:4] for r in rows[1:]] == [
        ["a@example.com", "complaint", "webhook:ses", ""],
        ["b@example.com", "hard_bounce", "smtp", '550 "no such user", really'],
    ]
    assert dt.datetime.fromisoformat(rows[2][4]) == bounce.created_at
    assert [r[0] for r in _rows(filtered)[1:]] == ["b@example.com"]


def test_an_export_imports_again_as_it_is(user_factory):
    user, other = user_factory(), user_factory()
    add(user, "a@example.com", "complaint", "smtp", "5.7.1 spam")
    add(user, "b@example.com", "unsubscribed", "unsubscribe")
    exported = b"".join(client_for(user).get(EXPORT).streaming_content)

    response = client_for(other).generic("POST", IMPORT, exported, content_type="text/csv")

    assert response.json() == {"added": 2, "already_present": 0, "invalid": 0, "errors": []}
    assert sorted(Suppression.objects.filter(owner=other).values_list("email", "reason", "detail")) == [
        ("a@example.com", "complaint", "5.7.1 spam"),
        ("b@example.com", "unsubscribed", ""),
    ]


def test_a_bad_export_filter_is_a_400_in_json(user):
    response = client_for(user).get(f"{EXPORT}?created_after=soon")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "created_after" in response.json()["errors"]


def test_the_schema_documents_the_routes(user):
    schema = client_for(user).get("/api/schema/?format=json").json()

    paths = schema["paths"]
    assert {"/api/suppressions/", "/api/suppressions/{id}/", "/api/suppressions/import/"} <= set(paths)
    assert "text/csv" in paths["/api/suppressions/export/"]["get"]["responses"]["200"]["content"]
    assert "scope" in {p["name"] for p in paths["/api/suppressions/"]["get"]["parameters"]}


def test_created_since_accepts_an_offset_and_stays_timezone_aware(user):
    add(user, "a@example.com")
    since = (timezone.now() - dt.timedelta(minutes=1)).astimezone(dt.timezone(dt.timedelta(hours=5)))

    response = client_for(user).get(URL, {"created_after": since.isoformat()})

    assert emails(response) == ["a@example.com"]
