"""What a template reads (queues.template_variables) and what the renderer provides."""

from __future__ import annotations

import pytest

from queues.template_variables import provided_variables, template_references
from queues.templates import compile_template


def names(source: str) -> list[str]:
    return [r.name for r in template_references(compile_template(source, html=False, field="body").django)]


def test_the_provided_variables_are_the_render_contexts_for_a_sample_recipient():
    assert provided_variables() == [
        "contact.email",
        "contact.first_name",
        "contact.full_name",
        "contact.last_name",
        "unsubscribe_url",
    ]
    assert "contact.company" in provided_variables(["company"])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hello {{ contact.first_name }}", ["contact.first_name"]),
        ("Hello {{ first_name }}", ["first_name"]),
        ("{{ contact.first_name|default:fallback }}", ["contact.first_name", "fallback"]),
        (
            "{% if vip and not contact.x == y %}a{% elif z %}b{% else %}{{ w }}{% endif %}",
            ["vip", "contact.x", "y", "z", "w"],
        ),
        (
            "{% for c in contact.cities %}{{ c.name }} {{ forloop.counter }} {{ d }}{% empty %}{{ c }}{% endfor %}",
            ["contact.cities", "d", "c"],
        ),
        ("{% for a, b in pairs %}{{ a }}{{ b }}{% endfor %}{{ a }}", ["pairs", "a"]),
        ("{% with n=contact.first_name %}{{ n }}{% endwith %}{{ n }}", ["contact.first_name", "n"]),
        ("{% filter upper|cut:chars %}{{ t }}{% endfilter %}", ["chars", "t"]),
        ("{% firstof p q 'x' as r %}{{ r }}", ["p", "q"]),
        ("{% cycle 'a' s as row %}{{ row }}", ["s"]),
        ('{% now "Y" as year %}{{ year }}', []),
        ("{% spaceless %}{% autoescape off %}{{ inner }}{% endautoescape %}{% endspaceless %}", ["inner"]),
        ('{{ "text" }}{{ 1.5 }}{{ _("x") }}{% if True or None %}{% endif %}{# {{ c }} #}', []),
        ("{% verbatim %}{{ raw }}{% endverbatim %}{% comment %}{{ gone }}{% endcomment %}", []),
    ],
    ids=[
        "plain",
        "unprefixed",
        "filter-argument",
        "if-conditions",
        "for-loop-variable",
        "for-unpacking",
        "with-scope",
        "filter-tag",
        "firstof-as",
        "cycle-as",
        "now-as",
        "nested-blocks",
        "constants-and-builtins",
        "verbatim-and-comment",
    ],
)
def test_every_variable_read_is_listed_and_the_names_a_template_binds_are_not(source, expected):
    assert names(source) == expected
