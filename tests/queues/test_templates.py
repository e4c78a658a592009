from __future__ import annotations

import pytest

from queues.templates import TemplateError, compile_template, contact_context, render

CONTACT = contact_context(
    "ann@example.org",
    {
        "email": "ann@example.org",
        "first_name": "Ann <b>&",
        "last_name": "O'Neil",
        "attributes": {"company": 'ACME "Ltd"', "orders": 3, "vip": True, "score": 1.5, "none": None},
    },
)


@pytest.mark.parametrize("html", [False, True], ids=["text", "html"])
@pytest.mark.parametrize(
    "source",
    [
        "Hello",
        "Hello {{ contact.first_name }}!",
        "{{contact.first_name}} {{ contact.last_name }} of {{ contact.company }}",
        "{{ contact.missing }}|{{ contact.email }}",
        "{{ contact.orders }} orders, vip={{ contact.vip }}, score={{ contact.score }}, {{ contact.none }}",
        "{{ contact.first_name|upper }}",
        "{% if contact.vip %}Dear VIP{% else %}Hi{% endif %} {{ contact.full_name }}",
        "{# a comment #}x{{ contact.first_name }}",
        "",
    ],
    ids=["literal", "one-field", "three-fields", "missing", "non-text-values", "filter", "tags", "comment", "empty"],
)
def test_fast_rendering_matches_django_exactly(source, html):
    template = compile_template(source, html=html, field="body")
    assert template.render(CONTACT) == render(template.django, {"contact": CONTACT})


def test_plain_templates_take_the_fast_path_and_others_do_not():
    assert compile_template("Hi {{ contact.first_name }}", html=False, field="s").parts is not None
    assert compile_template("Hi {{ contact.first_name|upper }}", html=False, field="s").parts is None
    assert compile_template("{% if contact.vip %}x{% endif %}", html=False, field="s").parts is None


def test_html_bodies_are_escaped_and_text_bodies_are_not():
    source = "{{ contact.first_name }}"
    assert compile_template(source, html=True, field="b").render(CONTACT) == "Ann &lt;b&gt;&amp;"
    assert compile_template(source, html=False, field="b").render(CONTACT) == "Ann <b>&"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{% include "admin/base.html" %}', "the tag {% include %} is not allowed"),
        ('{% extends "base.html" %}', "the tag {% extends %} is not allowed"),
        ("{% load static %}", "the tag {% load %} is not allowed"),
        ("{% debug %}", "the tag {% debug %} is not allowed"),
        ("{% if %}", "body: "),
        ("{{ contact.first_name|nosuchfilter }}", "Invalid filter: 'nosuchfilter'"),
        ("{% for x in y %}", "body: "),
    ],
)
def test_dangerous_or_broken_templates_are_refused_with_the_field_named(source, message):
    with pytest.raises(TemplateError) as error:
        compile_template(source, html=True, field="body")
    assert message in str(error.value)
    assert str(error.value).startswith("body: ")


def test_contact_context_without_a_contact_still_has_the_address():
    assert contact_context("x@example.org", None) == {
        "email": "x@example.org",
        "first_name": "",
        "last_name": "",
        "full_name": "",
    }


VARIABLES = {"unsubscribe_url": "https://mail.example.com/u/a'b&c<d>/"}


@pytest.mark.parametrize("html", [False, True], ids=["text", "html"])
@pytest.mark.parametrize(
    ("source", "fast"),
    [
        ("Leave: {{ unsubscribe_url }}", True),
        ('<a href="{{unsubscribe_url}}">{{ contact.first_name }}</a>', True),
        ("{{ unsubscribe_url|upper }}", False),
        ("{% if unsubscribe_url %}{{ unsubscribe_url }}{% endif %}", False),
        ("{{ other_variable }}{{ contact.unsubscribe_url }}", False),
    ],
    ids=["alone", "with-a-field", "filter", "tag", "not-a-mail-variable"],
)
def test_mail_variables_render_as_django_would_and_plain_ones_take_the_fast_path(source, fast, html):
    template = compile_template(source, html=html, field="body")
    assert (template.parts is not None) is fast
    expected = render(template.django, {**VARIABLES, "contact": CONTACT})
    assert template.render(CONTACT, VARIABLES) == expected


def test_the_url_is_escaped_in_html_only():
    source = "{{ unsubscribe_url }}"
    assert compile_template(source, html=False, field="b").render(CONTACT, VARIABLES) == VARIABLES["unsubscribe_url"]
    assert (
        compile_template(source, html=True, field="b").render(CONTACT, VARIABLES)
        == "https://mail.example.com/u/a&#x27;b&amp;c&lt;d&gt;/"
    )


def test_without_variables_a_mail_variable_renders_empty():
    for source in ("[{{ unsubscribe_url }}]", "[{{ unsubscribe_url|upper }}]"):
        assert compile_template(source, html=False, field="b").render(CONTACT) == "[]"


def test_a_contact_field_cannot_stand_in_for_a_mail_variable():
    contact = {**CONTACT, "unsubscribe_url": "https://evil.example/"}
    template = compile_template("{{ unsubscribe_url }}", html=False, field="b")
    assert template.render(contact, VARIABLES) == VARIABLES["unsubscribe_url"]
    assert template.render(contact) == ""
