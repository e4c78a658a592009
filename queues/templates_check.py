"""Refusing a task whose templates read a variable the renderer does not provide.

One check for every way a task's content is written (task_create and
task_update_check, so the API and the admin alike). A variable is known when
the render context has it (queues.template_variables.provided_variables:
``contact.first_name``, ``unsubscribe_url`` ...) or, for ``contact.<name>``,
when ``<name>`` is a contact attribute: one the new recipients bring, or one
that some contact of the owner has.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from difflib import get_close_matches

from django.db import connection

from contacts.models import Contact
from queues.template_variables import Reference, provided_variables, template_references
from queues.templates import compile_template

TEMPLATE_FIELDS = ("subject", "body_text", "body_html")
# The owner's attributes listed in an error message, at most (the check itself looks each name up).
SHOWN_ATTRIBUTES = 100


def template_variables_errors(
    *, owner_id: uuid.UUID, templates: Mapping[str, str], attributes: Iterable[str] = ()
) -> dict[str, list[str]]:
    """The unknown variables of each template (by field), as messages; empty when all are known.

    ``templates`` maps a field of TEMPLATE_FIELDS to its source, already
    valid (compiled by the content validation); ``attributes`` are the
    attribute names the task's new recipients bring.
    """
    given = set(attributes)
    provided = set(provided_variables())
    roots = {name.split(".")[0] for name in provided}
    unknown: dict[str, list[str]] = {}
    looked_up: dict[str, bool] = {}
    for field, source in templates.items():
        if not source.strip():
            continue
        template = compile_template(source, html=field == "body_html", field=field).django
        for reference in template_references(template):
            if not _known(reference, provided, roots, given, owner_id, looked_up):
                names = unknown.setdefault(field, [])
                if _shown(reference) not in names:
                    names.append(_shown(reference))
    if not unknown:
        return {}
    available = provided_variables(given | _owner_attribute_names(owner_id))
    return {field: [_message(name, field, available) for name in names] for field, names in unknown.items()}


def _known(
    reference: Reference,
    provided: set[str],
    roots: set[str],
    given: set[str],
    owner_id: uuid.UUID,
    cache: dict[str, bool],
) -> bool:
    head, *rest = reference.lookups
    if head not in roots:
        return False
    if head != "contact" or not rest or f"contact.{rest[0]}" in provided or rest[0] in given:
        return True
    if rest[0] not in cache:
        cache[rest[0]] = Contact.objects.filter(owner_id=owner_id, attributes__has_key=rest[0]).exists()
    return cache[rest[0]]


def _shown(reference: Reference) -> str:
    """The part that is unknown: the whole name, or contact.<attribute> without what follows it."""
    return ".".join(reference.lookups[:2]) if reference.lookups[0] == "contact" else reference.name


def _message(name: str, field: str, available: list[str]) -> str:
    shown = available if len(available) <= SHOWN_ATTRIBUTES else [*available[:SHOWN_ATTRIBUTES], "..."]
    suggestion = suggest(name, available)
    hint = f"; did you mean '{suggestion}'?" if suggestion else "."
    return f"unknown template variable '{name}' in {field}{hint} Available: {', '.join(shown)}"


def suggest(name: str, available: list[str]) -> str | None:
    """The closest available name: among the contact's fields for contact.<name>; else by the whole
    name, then by its last part (first_name: contact.first_name)."""
    head, _, rest = name.partition(".")
    by_tail: dict[str, str] = {}
    for candidate in available:
        by_tail.setdefault(candidate.rsplit(".", 1)[-1], candidate)
    if head == "contact" and rest:
        fields = [candidate.partition(".")[2] for candidate in available if candidate.startswith("contact.")]
        match = get_close_matches(rest, fields, n=1)
        return f"contact.{match[0]}" if match else None
    match = get_close_matches(name, available, n=1)
    if match:
        return match[0]
    match = get_close_matches(name.rsplit(".", 1)[-1], list(by_tail), n=1)
    return by_tail[match[0]] if match else None


def _owner_attribute_names(owner_id: uuid.UUID) -> set[str]:
    """Some of the attribute names the owner's contacts have (for the message, on the error path only)."""
    if connection.vendor == "postgresql":
        sql = (
            "SELECT DISTINCT k FROM contacts, jsonb_object_keys(CASE WHEN jsonb_typeof(attributes) = 'object' "
            "THEN attributes ELSE '{}'::jsonb END) AS k WHERE owner_id = %s ORDER BY k LIMIT %s"
        )
    else:
        sql = (
            "SELECT DISTINCT j.key FROM contacts, json_each(CASE WHEN json_type(attributes) = 'object' "
            "THEN attributes ELSE '{}' END) AS j WHERE owner_id = %s ORDER BY 1 LIMIT %s"
        )
    owner = Contact._meta.get_field("owner").target_field.get_db_prep_value(owner_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [owner, SHOWN_ATTRIBUTES])
        return {row[0] for row in cursor.fetchall()}
