"""Unsubscribe tokens: compact, signed as django.core.signing.Signer signs, never expiring."""

from __future__ import annotations

import uuid

import pytest
from django.core.signing import Signer, b64_encode

from deliverability.unsubscribe import (
    MAX_TOKEN,
    SALT,
    BadUnsubscribeToken,
    UnsubscribeLink,
    list_unsubscribe_uris,
    unsubscribe_token,
    unsubscribe_token_read,
    unsubscribe_url,
)

OWNER = uuid.UUID("6f1c2a4e-0000-4000-8000-000000000001")
TASK = uuid.UUID("6f1c2a4e-0000-4000-8000-000000000002")


@pytest.mark.parametrize("email", ["ann@example.org", "user@bücher.de", "Mixed.Case+tag@Example.ORG"])
def test_a_token_names_the_owner_task_and_address_it_was_made_for(email):
    token = unsubscribe_token(owner_id=OWNER, task_id=TASK, email=email)
    assert unsubscribe_token_read(token) == UnsubscribeLink(owner_id=OWNER, task_id=TASK, email=email)


def test_the_signature_is_djangos_signer_with_the_unsubscribe_salt():
    token = unsubscribe_token(owner_id=OWNER, task_id=TASK, email="ann@example.org")
    payload = token.rsplit(":", 1)[0]
    assert Signer(salt=SALT).sign(payload) == token
    assert Signer(salt=SALT).unsign(token) == payload


def test_a_token_is_short_enough_for_a_header_line():
    token = unsubscribe_token(owner_id=OWNER, task_id=TASK, email="ann@example.org")
    # 32 bytes of UUIDs, the form byte and 15 of address in base64 (64 characters), ':' and the 43-character signature.
    assert len(token) == 108
    assert token.isascii() and "/" not in token
    longest = unsubscribe_token(owner_id=OWNER, task_id=TASK, email="a" * 64 + "@" + "b" * 185 + ".org")
    assert len(longest) == MAX_TOKEN == 427


# Valid and sendable (178 characters, 196 IDNA-encoded) but 520 bytes in UTF-8.
LONG_IDN = "a@" + ".".join(["一" * 57] * 3) + ".cn"


@pytest.mark.parametrize(
    ("email", "length"),
    [
        pytest.param("user@bücher.de", 108, id="short-idn-as-utf8"),
        pytest.param("a@" + ".".join(["ü" * 40] * 3) + "." + "ü" * 3 + ".de", 427, id="254-bytes-as-utf8"),
        pytest.param(LONG_IDN, 350, id="longer-as-idna"),
    ],
)
def test_an_internationalised_address_reads_back_exactly_within_the_bound(email, length):
    token = unsubscribe_token(owner_id=OWNER, task_id=TASK, email=email)
    assert len(token) == length
    assert unsubscribe_token_read(token).email == email


def test_an_address_too_long_even_in_idna_form_has_no_token():
    with pytest.raises(ValueError, match="longer than 254 characters even in its IDNA form"):
        unsubscribe_token(owner_id=OWNER, task_id=TASK, email="a" * 60 + "@" + ".".join(["一" * 57] * 4) + ".cn")


def test_a_token_signed_before_a_key_rotation_still_reads(settings):
    settings.SECRET_KEY = "the-old-secret"
    token = unsubscribe_token(owner_id=OWNER, task_id=TASK, email="ann@example.org")
    settings.SECRET_KEY = "the-new-secret"
    settings.SECRET_KEY_FALLBACKS = ["the-old-secret"]
    assert unsubscribe_token_read(token).email == "ann@example.org"
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(BadUnsubscribeToken):
        unsubscribe_token_read(token)


def test_tokens_do_not_expire(time_machine):
    time_machine.move_to("2020-01-01T00:00:00Z", tick=False)
    token = unsubscribe_token(owner_id=OWNER, task_id=TASK, email="ann@example.org")
    time_machine.move_to("2045-01-01T00:00:00Z", tick=False)
    assert unsubscribe_token_read(token).owner_id == OWNER


def test_a_genuine_signature_over_a_payload_naming_no_address_is_refused():
    payload = b64_encode(OWNER.bytes + TASK.bytes + b"unobody").decode()
    with pytest.raises(BadUnsubscribeToken, match="names no address"):
        unsubscribe_token_read(Signer(salt=SALT).sign(payload))


@pytest.mark.parametrize(
    "raw", [b"", b"\x00" * 32, b"\x00" * 32 + b"x" + b"ann@example.org"], ids=["empty", "no-form", "unknown-form"]
)
def test_a_genuine_signature_over_a_malformed_payload_is_refused(raw):
    with pytest.raises(BadUnsubscribeToken):
        unsubscribe_token_read(Signer(salt=SALT).sign(b64_encode(raw).decode()))


def test_the_url_is_under_the_public_url_and_the_mailbox_is_offered_second(settings):
    settings.EDM_PUBLIC_URL = "https://mail.example.com/edm"
    token = unsubscribe_token(owner_id=OWNER, task_id=TASK, email="ann@example.org")
    url = unsubscribe_url(token)
    assert url == f"https://mail.example.com/edm/u/{token}/"
    assert list_unsubscribe_uris(token, url) == (f"<{url}>",)
    settings.EDM_UNSUBSCRIBE_MAILTO = "unsubscribe@sender.example"
    assert list_unsubscribe_uris(token, url) == (
        f"<{url}>",
        f"<mailto:unsubscribe@sender.example?subject=unsubscribe%20{token}>",
    )
