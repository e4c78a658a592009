"""The keys that encrypt credentials at rest, and the cipher built from them.

``EDM_FIELD_KEYS`` holds one or more Fernet keys, comma-separated: the first
encrypts, every one decrypts (``MultiFernet``), so a key can be replaced
without downtime: add the new key first, run ``manage.py rotate_field_keys``,
then drop the old key. With ``DEBUG=1`` and no keys set, one key is derived
from ``SECRET_KEY`` so that a development checkout works without setup.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

KEYS_SETTING = "EDM_FIELD_KEYS"
GENERATE_HINT = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


class FieldKeyError(Exception):
    """A stored secret that no key in EDM_FIELD_KEYS decrypts (the message names no secret)."""


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a Fernet key, or None when it is one."""
    try:
        Fernet(key)
    except (ValueError, binascii.Error):
        return "not a Fernet key (32 url-safe base64-encoded bytes)"
    return None


def derived_debug_key(secret_key: str) -> str:
    """A Fernet key derived from SECRET_KEY, for development only (DEBUG=1 without EDM_FIELD_KEYS)."""
    digest = hashlib.sha256(b"edm-field-keys\x00" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


@functools.lru_cache(maxsize=4)
def _cipher(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def field_cipher(keys: Sequence[str] | None = None) -> MultiFernet:
    """The MultiFernet of ``keys`` (by default the EDM_FIELD_KEYS setting): the first key encrypts."""
    return _cipher(tuple(settings.EDM_FIELD_KEYS if keys is None else keys))


def encrypt_text(plaintext: str) -> str:
    return field_cipher().encrypt(plaintext.encode()).decode()


def decrypt_text(token: str, *, what: str = "a stored secret") -> str:
    """The plaintext of ``token``; FieldKeyError when no key in EDM_FIELD_KEYS decrypts it."""
    try:
        return field_cipher().decrypt(token.encode()).decode()
    except InvalidToken:
        raise FieldKeyError(
            f"{what} cannot be decrypted with any key in {KEYS_SETTING} "
            "(was the key it was written with removed before rotate_field_keys ran?)"
        ) from None


def is_current(token: str, keys: Sequence[str] | None = None) -> bool:
    """True when ``token`` is already encrypted with the first key (rotation has nothing to do)."""
    first = (settings.EDM_FIELD_KEYS if keys is None else keys)[0]
    try:
        Fernet(first).decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def rotate_token(token: str) -> str:
    """``token`` encrypted again with the first key; FieldKeyError when no key decrypts it."""
    try:
        return field_cipher().rotate(token.encode()).decode()
    except InvalidToken:
        raise FieldKeyError(f"a stored secret cannot be decrypted with any key in {KEYS_SETTING}") from None
