"""Delete a user and all their data (tasks, subtasks, send history, contacts, tags, wait metrics)."""

from __future__ import annotations

import uuid

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User
from queues.services import TaskStateError, user_erase


class Command(BaseCommand):
    help = "Erase a user and all their data. Refused while their mail is being sent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="username or id")
        parser.add_argument("--yes", action="store_true", help="do not ask for a confirmation")

    def handle(self, *args, user: str, yes: bool, **options) -> None:
        target = self._find(user)
        if not yes:
            try:
                answer = input(f"Erase user {target.username} and all their data? Type 'yes' to confirm: ")
            except EOFError:  # no terminal to ask (a script): only --yes erases
                answer = ""
            if answer.strip().lower() != "yes":
                raise CommandError("not confirmed: nothing was erased")
        try:
            counts = user_erase(user=target)
        except TaskStateError as exc:
            raise CommandError(str(exc)) from None
        figures = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        self.stdout.write(f"Erased user {target.username}: {figures}.")

    @staticmethod
    def _find(key: str) -> User:
        user = User.objects.filter(username=key).first()
        if user is None:
            try:
                user = User.objects.filter(pk=uuid.UUID(key)).first()
            except ValueError:
                user = None
        if user is None:
            raise CommandError(f"no user with the username or id {key!r}")
        return user
