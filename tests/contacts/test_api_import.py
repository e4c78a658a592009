from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from contacts.models import Contact
from tests.api_helpers import client_for

URL = "/api/contacts/import/"

GOOD_AND_BAD = (
    "Email,First_Name,last_name,company\n"
    "ann@example.org,Ann,Lee,ACME\n"  # row 2: new
    "not-an-address,Bob,,\n"  # row 3: bad address
    "known@Example.ORG,,Newname,Initech\n"  # row 4: update, first name kept
    ",Carl,,\n"  # row 5: no address
    "ann@example.org,Ann,Again,\n"  # row 6: duplicate of row 2
    "\n"  # blank line, skipped
    "dee@example.org,Dee,Ray,\n"  # row 8: new
)


def _upload(text: str, name: str = "contacts.csv") -> dict:
    return {"file": SimpleUploadedFile(name, text.encode(), content_type="text/csv")}


def test_multipart_import_creates_updates_and_reports_bad_rows(user, contact_factory):
    known = contact_factory(owner=user, email="known@example.org", first_name="Kim", last_name="Old")
    known.attributes = {"city": "Oslo"}
    known.save()

    response = client_for(user).post(URL, _upload(GOOD_AND_BAD), format="multipart")

    assert response.status_code == 200
    assert response.json() == {
        "created": 2,
        "updated": 1,
        "errors": [
            {"row": 3, "email": "not-an-address", "errors": ["'not-an-address' is not a valid e-mail address"]},
            {"row": 5, "email": "", "errors": ["the email cell is empty"]},
            {"row": 6, "email": "ann@example.org", "errors": ["the same address as row 2"]},
        ],
    }
    contacts = {c.email: c for c in Contact.objects.filter(owner=user)}
    assert sorted(contacts) == ["ann@example.org", "dee@example.org", "known@example.org"]
    ann, kim = contacts["ann@example.org"], contacts["known@example.org"]
    assert (ann.first_name, ann.last_name, ann.attributes) == ("Ann", "Lee", {"company": "ACME"})
    assert (kim.first_name, kim.last_name, kim.attributes) == ("Kim", "Newname", {"city": "Oslo", "company": "Initech"})


def test_text_csv_body(user):
    response = client_for(user).generic(
        "POST", URL, "\ufeffemail,first_name\nx@example.org,Xavier\n".encode(), content_type="text/csv"
    )

    assert response.status_code == 200
    assert response.json() == {"created": 1, "updated": 0, "errors": []}
    assert Contact.objects.get(owner=user).first_name == "Xavier"


def test_import_touches_only_the_callers_contacts(user, contact_factory):
    theirs = contact_factory(email="shared@example.org", first_name="Theirs")

    response = client_for(user).generic(
        "POST", URL, "email,first_name\nshared@example.org,Mine\n", content_type="text/csv"
    )

    assert response.json() == {"created": 1, "updated": 0, "errors": []}
    theirs.refresh_from_db()
    assert theirs.first_name == "Theirs"
    assert Contact.objects.get(owner=user).first_name == "Mine"


def test_row_level_size_errors(user):
    text = f"email,first_name,note\na@example.org,{'x' * 101},\nb@example.org,,{'y' * 1001}\nc@example.org,C,z,extra\n"

    response = client_for(user).generic("POST", URL, text, content_type="text/csv")

    assert response.json() == {
        "created": 0,
        "updated": 0,
        "errors": [
            {"row": 2, "email": "a@example.org", "errors": ["first_name: at most 100 characters"]},
            {"row": 3, "email": "b@example.org", "errors": ["note: at most 1000 characters"]},
            {"row": 4, "email": "c@example.org", "errors": ["4 cells but the header names 3 columns"]},
        ],
    }
    assert Contact.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param("", "file: The submitted file is empty.", id="empty-file"),
        pytest.param("\n\n", "file: the header row has no 'email' column", id="blank-header"),
        pytest.param("name,phone\nAnn,123\n", "file: the header row has no 'email' column", id="no-email-column"),
        pytest.param("email,Email\na@b.org,a@b.org\n", "file: columns named more than once: email", id="dup-column"),
        pytest.param("email\na@b.org\x00\n", "file: the file contains NUL characters", id="nul"),
        pytest.param('email\n"a@b.org\n', "file: not a readable CSV file: unexpected end of data", id="open-quote"),
    ],
)
def test_unreadable_files_are_a_400_and_write_nothing(user, body, message):
    response = client_for(user).post(URL, _upload(body), format="multipart")

    assert response.status_code == 400
    assert response.json() == {"detail": message, "errors": {"file": [message.removeprefix("file: ")]}}
    assert Contact.objects.filter(email="a@b.org").count() == 0


def test_non_utf8_file_is_a_400(user):
    upload = {"file": SimpleUploadedFile("c.csv", "email\nzoë@example.org\n".encode("latin-1"))}

    response = client_for(user).post(URL, upload, format="multipart")

    assert response.status_code == 400
    assert response.json() == {"detail": "file: not UTF-8 text", "errors": {"file": ["not UTF-8 text"]}}
    assert Contact.objects.count() == 0


def test_non_utf8_body_is_a_400(user):
    response = client_for(user).generic("POST", URL, "email\nzoë@x.org\n".encode("latin-1"), content_type="text/csv")

    assert response.status_code == 400
    assert response.json() == {"detail": "the CSV body is not UTF-8 text"}


def test_multipart_without_a_file_is_a_400(user):
    response = client_for(user).post(URL, {"other": "x"}, format="multipart")

    assert response.status_code == 400
    assert response.json()["errors"] == {"file": ["No file was submitted."], "other": ["unknown field"]}


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param('{"email": "a@b.org"}', "application/json", id="json"),
        pytest.param("email=a@b.org", "application/x-www-form-urlencoded", id="form"),
    ],
)
def test_other_content_types_are_a_415(user, content, content_type):
    response = client_for(user).generic("POST", URL, content, content_type=content_type)

    assert response.status_code == 415
    assert response.json()["detail"].startswith("Unsupported media type")
    assert Contact.objects.count() == 0


def test_empty_text_body_is_a_400(user):
    response = client_for(user).generic("POST", URL, "", content_type="text/csv")

    assert response.status_code == 400
    assert Contact.objects.count() == 0
