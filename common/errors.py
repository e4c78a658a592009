"""Bases of the apps' domain errors, by what the caller did wrong.

An app's error subclasses one of these, and the API answers it (``common.api.errors``) without
knowing the app: 400 for input, 404 for an unknown object, 409 for a state that refuses the action.
"""

from __future__ import annotations


class InputError(Exception):
    """Input the caller got wrong; ``errors`` ({field: [messages]}), when set, names the fields."""

    errors: dict[str, list[str]] | None = None


class NotFoundError(Exception):
    """The object named does not exist (for this caller)."""


class ConflictError(Exception):
    """The object's state does not allow the action."""
