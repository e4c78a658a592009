"""Which variables a mail template reads, and which ones the renderer gives it.

Django renders a variable it cannot resolve as an empty string, so
``Hello {{ first_name }}`` (for ``{{ contact.first_name }}``) would send
"Hello ," to a whole list. This module walks a compiled template's nodes and
lists every variable it reads (in ``{{ }}``, in tags' arguments, in filters'
arguments), leaving out the names the template binds itself: a ``for``
loop's variables and ``forloop`` inside the loop, ``with`` names inside their
block, and ``... as name`` of ``cycle``, ``firstof`` and ``now`` after the tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.template import Context, Template
from django.template.base import FilterExpression, Node, NodeList, Variable, VariableNode
from django.template.defaulttags import (
    CycleNode,
    FilterNode,
    FirstOfNode,
    ForNode,
    IfNode,
    NowNode,
    TemplateLiteral,
    WithNode,
)

from queues.templates import MAIL_VARIABLES, contact_context, render_context

SAMPLE_RECIPIENT = "recipient@example.com"
# Names every Django context resolves by itself: True, False, None.
_BUILTINS = frozenset(Context().flatten())


@dataclass(frozen=True)
class Reference:
    """A variable the template reads, as its dotted lookups: ``("contact", "first_name")``."""

    lookups: tuple[str, ...]

    @property
    def name(self) -> str:
        return ".".join(self.lookups)


def provided_variables(attributes: Iterable[str] = ()) -> list[str]:
    """The variables the renderer gives a template, from the context it builds for a sample recipient.

    Dotted for the contact's fields (``contact.first_name``), with the
    contact attributes given; sorted.
    """
    contact = contact_context(SAMPLE_RECIPIENT, {"attributes": dict.fromkeys(attributes, "")})
    context = render_context(contact, dict.fromkeys(MAIL_VARIABLES, ""))
    names: list[str] = []
    for key, value in context.items():
        names.extend(f"{key}.{field}" for field in value) if isinstance(value, dict) else names.append(key)
    return sorted(names)


def template_references(template: Template) -> list[Reference]:
    """Every variable ``template`` reads that it does not bind itself, in order, repeats included."""
    return list(_walk(template.nodelist, set()))


def _walk(nodelist: NodeList, bound: set[str]) -> Iterator[Reference]:
    for node in nodelist:
        yield from _node(node, bound)


def _node(node: Node, bound: set[str]) -> Iterator[Reference]:
    if isinstance(node, VariableNode):
        yield from _expression(node.filter_expression, bound)
    elif isinstance(node, IfNode):
        for condition, body in node.conditions_nodelists:
            yield from _condition(condition, bound)
            yield from _walk(body, bound)
    elif isinstance(node, ForNode):
        yield from _expression(node.sequence, bound)
        yield from _walk(node.nodelist_loop, bound | {*node.loopvars, "forloop"})
        yield from _walk(node.nodelist_empty, bound)
    elif isinstance(node, WithNode):
        for value in node.extra_context.values():
            yield from _expression(value, bound)
        yield from _walk(node.nodelist, bound | set(node.extra_context))
    elif isinstance(node, FilterNode):
        # The filtered block is its filter expression's (internal) variable "var".
        yield from _filter_arguments(node.filter_expr, bound)
        yield from _walk(node.nodelist, bound)
    else:
        yield from _other(node, bound)


def _other(node: Node, bound: set[str]) -> Iterator[Reference]:
    """cycle, firstof, now and the tags that only hold blocks (spaceless, autoescape...)."""
    if isinstance(node, CycleNode):
        for value in node.cyclevars:
            yield from _expression(value, bound)
        if node.variable_name:
            bound.add(node.variable_name)
    elif isinstance(node, FirstOfNode):
        for value in node.vars:
            yield from _expression(value, bound)
        if node.asvar:
            bound.add(node.asvar)
    elif isinstance(node, NowNode) and node.asvar:
        bound.add(node.asvar)
    for attribute in node.child_nodelists:
        yield from _walk(getattr(node, attribute, None) or NodeList(), bound)


def _condition(condition: Any, bound: set[str]) -> Iterator[Reference]:
    """An {% if %} condition: a tree of operators (first, second) over literals; None for else."""
    if condition is None:
        return
    if isinstance(condition, TemplateLiteral):
        yield from _expression(condition.value, bound)
        return
    yield from _condition(getattr(condition, "first", None), bound)
    yield from _condition(getattr(condition, "second", None), bound)


def _expression(expression: FilterExpression, bound: set[str]) -> Iterator[Reference]:
    yield from _variable(expression.var, bound)
    yield from _filter_arguments(expression, bound)


def _filter_arguments(expression: FilterExpression, bound: set[str]) -> Iterator[Reference]:
    for _function, arguments in expression.filters:
        for is_variable, value in arguments:
            if is_variable:
                yield from _variable(value, bound)


def _variable(variable: Any, bound: set[str]) -> Iterator[Reference]:
    # A constant ("text", 1.5, _("text")) is a string or a Variable without lookups.
    lookups = getattr(variable, "lookups", None) if isinstance(variable, Variable) else None
    if lookups and lookups[0] not in bound and lookups[0] not in _BUILTINS:
        yield Reference(tuple(lookups))
