"""Hostile chat templates (from a GGUF file or an imported preset) end in one TemplateError line:
no code execution, no unbounded memory, no hang."""

from __future__ import annotations

import pytest

from tavern.errors import TemplateError
from tavern.prompt import template_guards
from tavern.prompt.templates import format_from_jinja, get_format, select_format

MALICIOUS = {
    "class walk": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals walk": "{{ cycler.__init__.__globals__ }}",
    "attr filter": "{{ ''|attr('__class__') }}",
    "format walk": "{{ '{0.__class__.__mro__}'.format('') }}",
    "mutate input": "{{ messages.append({'role': 'user', 'content': 'x'}) }}",
    "huge range": "{% for i in range(10**9) %}{% endfor %}",
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "string repetition": "{{ 'x' * 10**9 }}",
    "list repetition": "{{ ([1] * 10**9)|length }}",
    "doubling with ~": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "doubling with +": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "huge power": "{{ 10**(10**10) }}",
    "squaring": "{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
    "center method": "{{ 'x'.center(10**9) }}",
    "center filter": "{{ 'x'|center(1000000000) }}",
    "indent filter": "{{ 'x'|indent(1000000000) }}",
    "printf width": "{{ '%0999999999d' % 1 }}",
    "printf star": "{{ '%*d' % (999999999, 1) }}",
    "format width": "{{ '{:>999999999}'.format(1) }}",
    "nested format width": "{{ '{:{}}'.format(1, 999999999) }}",
    "replace blowup": "{% set s = 'a' * 1000000 %}{{ s.replace('a', s) }}",
    "replace filter blowup": "{% set s = 'a' * 1000000 %}{{ s|replace('a', s) }}",
    "batch fill": "{{ range(3)|batch(1000000000, 'x')|list }}",
    "output flood": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    "recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "exponential macro": "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "include": "{% include 'secrets.txt' %}",
    "import": "{% import 'os' as os %}",
    "lipsum": "{{ lipsum(1000000) }}",
    "syntax error": "{% for m in messages %}{{ m.content }",
    "undefined call": "{{ os.system('echo pwned') }}",
    "tojson indent": "{{ messages|tojson(indent=1000000000) }}",
}


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower step and time limits, so the templates that run until a limit stops them end quickly."""
    monkeypatch.setattr(template_guards, "MAX_STEPS", 100_000)
    monkeypatch.setattr(template_guards, "MAX_SECONDS", 2.0)


@pytest.mark.usefixtures("small_limits")
@pytest.mark.parametrize("source", list(MALICIOUS.values()), ids=list(MALICIOUS))
def test_malicious_template_gives_one_error_line(source: str) -> None:
    with pytest.raises(TemplateError) as info:
        format_from_jinja(source, "<s>", "</s>", "evil")
    message = str(info.value)
    assert message and "\n" not in message
    assert "Traceback" not in message
    assert "pwned" not in message


def test_default_limits_stop_nested_loops() -> None:
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError, match=f"more than {template_guards.MAX_STEPS} steps"):
        format_from_jinja(source, "", "", "evil")


def test_error_messages_say_what_happened() -> None:
    cases = {
        "{% for i in range(10**9) %}{% endfor %}": "range() of 1000000000 items",
        "{{ ''.__class__ }}": "unsafe",
        "{{ cycler.__init__.__globals__ }}": "unsafe",
        "{% for m in messages %}": "syntax error on line 1",
        "{{ raise_exception('System role not supported') }}": "refused the conversation: System role not supported",
        "{{ 'x' * 10**9 }}": "stopped",
    }
    for source, expected in cases.items():
        with pytest.raises(TemplateError, match="prompt format 'custom:evil'") as info:
            format_from_jinja(source, "", "", "evil")
        assert expected in str(info.value), source


def test_selection_survives_a_hostile_gguf_template() -> None:
    fmt, reason = select_format("Meta-Llama-3-8B-Instruct", MALICIOUS["class walk"], None)
    assert fmt.id == "llama3"
    assert "unusable" in reason and "\n" not in reason


def test_template_cannot_change_caller_data() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    source = "{% set x = messages[0].update({'content': 'changed'}) %}{{ messages[0].content }}"
    with pytest.raises(TemplateError):
        format_from_jinja(source, "", "", "evil")
    assert get_format("chatml").render(messages)
    assert messages == [{"role": "user", "content": "Hi"}]


def test_legitimate_template_features_still_work() -> None:
    # What real chat templates use: namespace, loops with loop vars, break, tojson, strftime_now,
    # string methods, slicing, generation blocks, selectattr, dict literals.
    source = (
        "{%- set ns = namespace(n=0) -%}"
        "{%- for m in messages if m.role != 'system' -%}"
        "{%- if loop.index > 2 %}{% break %}{% endif -%}"
        "{%- set ns.n = ns.n + 1 -%}"
        "[{{ loop.index }}/{{ loop.length }}]{{ m.content.strip()|upper }}"
        "{%- generation %}!{% endgeneration -%}"
        "{%- endfor -%}"
        "{{ (messages|selectattr('role', 'equalto', 'user')|list|length) }}"
        "{{ {'a': 1}|tojson }}{{ '%d-%s' % (ns.n, 'x') }}{{ '{}/{}'.format(1, 2) }}"
        "{{ strftime_now('%Y')|length }}{{ range(3)|join(',') }}{{ 'abc'[::-1] }}"
    )
    fmt = format_from_jinja(source, "", "", "fine")
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": " a "},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert fmt.render(messages) == '[1/3]A![2/3]B!2{"a": 1}2-x1/240,1,2cba'
