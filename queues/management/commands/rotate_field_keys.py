from django.core.management.base import BaseCommand, CommandError

from common.field_keys import FieldKeyError
from queues.credential_rotation import credentials_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every service's password and backend options with the first key of EDM_FIELD_KEYS "
        "(run after putting a new key first; then the old key can be removed). Prints one line."
    )

    def handle(self, *args, **options) -> None:
        try:
            rotation = credentials_rotate()
        except FieldKeyError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(rotation.line())
