"""One-click unsubscribe (RFC 8058, RFC 2369): signed links naming the owner, the task and the recipient.

A token is ``<payload>:<signature>``. The payload is base64url (unpadded) of
the owner's and the task's UUIDs (16 bytes each), a form byte and the address:
``u`` and the address in UTF-8, exactly as the subtask holds it; or, for the
rare internationalised address longer than 254 bytes in UTF-8, ``a`` and its
IDNA form (at most 254 ASCII characters for any address the scheduler can
send), decoded back when read. So a token is never longer than 427
characters and a header carrying it stays well within SMTP's 998-character
lines. The signature is exactly what ``django.core.signing.Signer(salt=SALT)``
computes for it, so reading a token is Django's ``Signer.unsign`` (which also
accepts tokens signed with a key in ``SECRET_KEY_FALLBACKS`` while the secret
is rotated). Tokens carry no timestamp and never expire: a link in an old
mail must keep working.

Signing runs once per mail in the scheduler: the signing key is derived once
per secret and each token costs one HMAC over a prepared state, no query.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.signing import BadSignature, Signer, b64_decode, b64_encode
from django.utils.encoding import force_bytes

from deliverability.models import Suppression
from deliverability.suppressions import suppression_add

SALT = "deliverability.unsubscribe"
# Where edm/urls.py routes the page, under EDM_PUBLIC_URL.
PATH = "u/"
ONE_CLICK = "List-Unsubscribe=One-Click"
MAX_TOKEN = 427  # base64 of 33 + 254 bytes (383 characters), ":" and the 43-character signature
_UUIDS = 32
_MAX_ADDRESS_BYTES = 254
_UTF8, _IDNA = b"u", b"a"


@dataclass(frozen=True)
class UnsubscribeLink:
    owner_id: uuid.UUID
    task_id: uuid.UUID
    email: str


class BadUnsubscribeToken(ValueError):
    """A token that was not signed here for unsubscribing (tampered, truncated, or another kind of token)."""


class UnsubscribeOwnerGone(LookupError):
    """The token is genuine but its owner's account no longer exists."""


_prepared: dict[bytes, hmac.HMAC] = {}


def _prepared_hmac(secret: str | bytes) -> hmac.HMAC:
    """Django's salted_hmac(SALT + "signer", …, secret, algorithm="sha256") with its derived key computed once."""
    secret = force_bytes(secret)
    prepared = _prepared.get(secret)
    if prepared is None:
        key = hashlib.sha256(force_bytes(SALT + "signer") + secret).digest()
        prepared = _prepared[secret] = hmac.new(key, digestmod=hashlib.sha256)
    return prepared


def _address_bytes(email: str) -> bytes:
    address = email.encode("utf-8")
    if len(address) <= _MAX_ADDRESS_BYTES:
        return _UTF8 + address
    local, _, domain = email.rpartition("@")
    address = f"{local}@{domain.encode('idna').decode('ascii')}".encode("ascii")
    if len(address) > _MAX_ADDRESS_BYTES:
        raise ValueError(f"{email!r} is longer than {_MAX_ADDRESS_BYTES} characters even in its IDNA form")
    return _IDNA + address


def _address_read(form: bytes, address: bytes) -> str:
    if form == _UTF8:
        return address.decode("utf-8")
    if form == _IDNA:
        local, _, domain = address.decode("ascii").rpartition("@")
        return f"{local}@{domain.encode('ascii').decode('idna')}"
    raise ValueError("unknown address form")


def unsubscribe_token(*, owner_id: uuid.UUID, task_id: uuid.UUID, email: str) -> str:
    """The token for ``email``; raises ValueError for an address no mail can be sent to (see smtp_address)."""
    payload = b64_encode(owner_id.bytes + task_id.bytes + _address_bytes(email))
    mac = _prepared_hmac(settings.SECRET_KEY).copy()
    mac.update(payload)
    return f"{payload.decode('ascii')}:{b64_encode(mac.digest()).decode('ascii')}"


def unsubscribe_token_read(token: str) -> UnsubscribeLink:
    """The link a token names; raises BadUnsubscribeToken unless it was signed here for unsubscribing."""
    if len(token) > MAX_TOKEN:
        raise BadUnsubscribeToken("the token is too long")
    try:
        raw = b64_decode(Signer(salt=SALT).unsign(token).encode("ascii"))
        email = _address_read(raw[_UUIDS : _UUIDS + 1], raw[_UUIDS + 1 :])
    except (BadSignature, ValueError) as exc:  # binascii.Error and UnicodeError are ValueErrors
        raise BadUnsubscribeToken(str(exc)) from None
    if "@" not in email:
        raise BadUnsubscribeToken("the token names no address")
    return UnsubscribeLink(owner_id=uuid.UUID(bytes=raw[:16]), task_id=uuid.UUID(bytes=raw[16:_UUIDS]), email=email)


def unsubscribe_url(token: str) -> str:
    return f"{settings.EDM_PUBLIC_URL}/{PATH}{token}/"


def list_unsubscribe_uris(token: str, url: str) -> tuple[str, ...]:
    """The List-Unsubscribe header's entries: the one-click URL, then the mailbox when one is configured."""
    mailbox = settings.EDM_UNSUBSCRIBE_MAILTO
    if not mailbox:
        return (f"<{url}>",)
    return (f"<{url}>", f"<mailto:{mailbox}?subject=unsubscribe%20{token}>")


def unsubscribe_owner_exists(link: UnsubscribeLink) -> bool:
    return get_user_model().objects.filter(pk=link.owner_id).exists()


def unsubscribe_apply(*, link: UnsubscribeLink) -> tuple[Suppression, bool]:
    """Suppress the link's address for its owner; idempotent, returns (entry, created).

    Raises UnsubscribeOwnerGone when the owner's account was deleted. The task
    is recorded while it exists (a deleted task leaves the entry without one).
    """
    if not unsubscribe_owner_exists(link):
        raise UnsubscribeOwnerGone(str(link.owner_id))
    task_model = Suppression._meta.get_field("task").related_model
    task_id = link.task_id if task_model.objects.filter(pk=link.task_id).exists() else None
    return suppression_add(
        owner_id=link.owner_id,
        email=link.email,
        reason=Suppression.Reason.UNSUBSCRIBED,
        source="unsubscribe",
        task_id=task_id,
    )
