"""Re-encrypting every service's stored credentials with the first key of EDM_FIELD_KEYS.

Rotation: put the new key first in EDM_FIELD_KEYS (the old one after it),
restart, run ``manage.py rotate_field_keys``, then drop the old key. Rows
already under the first key are left alone, so a second run changes nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast

from common.encrypted_fields import Ciphertext
from common.field_keys import KEYS_SETTING, FieldKeyError, is_current, rotate_token
from queues.models import EmailService

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rotation:
    services: int
    rotated: int  # services whose credentials were re-encrypted now (the others already used the first key)

    def line(self) -> str:
        return (
            f"Re-encrypted the credentials of {self.rotated} of {self.services} services with the first key of "
            f"{KEYS_SETTING}; {self.services - self.rotated} already used it."
        )


def _rotated(token: str, where: str) -> str | None:
    """``token`` under the first key, or None when it already is."""
    if is_current(token):
        return None
    try:
        return rotate_token(token)
    except FieldKeyError:
        raise FieldKeyError(
            f"{where} cannot be decrypted with any key in {KEYS_SETTING}: put back the key it was written with "
            "(after the new one) and run rotate_field_keys again; nothing was changed"
        ) from None


def credentials_rotate() -> Rotation:
    """Every service's password and backend options under the first key; all or nothing.

    FieldKeyError (naming the service, never a secret) when a stored value
    decrypts with no key: then nothing is written.
    """
    with transaction.atomic():
        # Locked so an edit cannot land between reading a token and writing its rotation.
        rows = list(
            EmailService.objects.select_for_update()
            .order_by("pk")
            .values_list("pk", Cast("password", TextField()), Cast("backend_options", TextField()))
        )
        updates: dict = {}
        for pk, password, options in rows:
            changes = {}
            if password and (token := _rotated(password, f"the password of service {pk}")):
                changes["password"] = Ciphertext(token)
            if options and (token := _rotated(json.loads(options), f"the backend options of service {pk}")):
                changes["backend_options"] = Ciphertext(token)
            if changes:
                updates[pk] = changes
        for pk, changes in updates.items():
            EmailService.objects.filter(pk=pk).update(**changes)
    logger.info("service credentials re-encrypted", extra={"services": len(rows), "rotated": len(updates)})
    return Rotation(services=len(rows), rotated=len(updates))
