"""Fuzz: random macro soup built from every macro name tavern.prompt.macros knows.

Two properties. Each case's result is bounded (the output grows by at most the context's
expansion limit, variables stay within theirs, warnings are a few single lines) and no exception
escapes. And the one-pass scanner finds exactly the matches SillyTavern's own regexes find (the
regexes run fine on small texts; on long hostile ones they were quadratic or cubic)."""

from __future__ import annotations

from datetime import datetime
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tavern.prompt import macro_context, macro_random, macro_time, macro_variables, macros
from tavern.prompt.macro_context import MacroContext
from tavern.prompt.macros import MACRO_NAMES, substitute

ARGS = [
    "",
    ":",
    "::",
    " ",
    "::x",
    "::x::1",
    "::x::{{getvar::x}}{{getvar::x}}",
    "::a::b",
    ":a,b",
    ":a\\,b, c",
    "::2024-09-15::2024-09-10",
    "::x::",
    ":d6",
    " 2d4+1",
    ":1000d6",
    " LLLL [at] h",
    " [[",
    ' "word"',
    "+2",
    "-5",
    "+2000",
    "::list::[1]",
    "::list::x",
    "::n::3",
    "::n::1e999",
    "::h::0xffff",
    "::x::\n",
]
CLOSERS = ["}}", "}}", "}}", "}", "", '"}}', "}}}"]
FRAGMENTS = [
    "{{",
    "}}",
    "}",
    "{",
    "::",
    ":",
    "\n",
    "\r\n",
    "\r",
    '"',
    "[",
    "]",
    " ",
    "a",
    "1",
    "x",
    ",",
    "\\,",
    "<USER>",
    "<BOT>",
    "<CHAR>",
    "🎲",
    "ä",
]

macro = st.builds(
    lambda name, arg, close: "{{" + name + arg + close,
    st.sampled_from(MACRO_NAMES),
    st.sampled_from(ARGS),
    st.sampled_from(CLOSERS),
)
# Whole macros that grow the text, write variables or draw: repeated, they reach every limit.
GROWING = [
    "{{description}}",
    "{{mesExamples}}",
    "{{getvar::x}}",
    "{{setvar::x::{{getvar::x}}{{getvar::x}}}}\n",
    "{{addvar::x::{{getvar::x}}}}\n",
    "{{setvar::y{{getvar::n}}::{{getvar::x}}}}\n",
    "{{incvar::n}}",
    "{{addvar::list::{{getvar::list}}}}\n",
    "{{roll:10d6}}",
    "{{random::a::b}}",
    "{{pick::a::b}}",
    "{{datetimeformat LLLL}}",
    "{{setglobalvar::g::{{getglobalvar::g}}{{getglobalvar::g}}}}\n",
]
piece = st.one_of(
    macro,
    macro,
    st.sampled_from(GROWING),
    st.sampled_from(FRAGMENTS),
    st.sampled_from(MACRO_NAMES),
    st.text(max_size=3),
)
soup = st.tuples(st.lists(piece, max_size=60).map("".join), st.integers(1, 20)).map(lambda t: t[0] * t[1])

MAX_EXPANSION = 3000


def context() -> MacroContext:
    return MacroContext(
        char="Mira",
        user="Ann",
        chat_id="fuzz",
        now=datetime(2024, 9, 15, 14, 3, 22),
        rng_seed=11,
        description="{{user}} keeps the inn. " * 20,
        personality="kind",
        mes_examples="<START>\n{{user}}: hi",
        original="SYSTEM",
        input="draft",
        last_message="last",
        max_prompt=4096,
        last_user_time=datetime(2024, 9, 15, 13, 0),
        instruct={"systemPrompt": "Be vivid.", "instructInput": "<|user|>"},
        variables={"x": "ab", "n": 3, "list": "[1]"},
        global_variables={"g": "1"},
        max_expansion=MAX_EXPANSION,
    )


def size(store: dict[str, object]) -> list[int]:
    return [len(v) if isinstance(v, str) else len(str(v)) for v in store.values()]


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(soup, min_size=1, max_size=3))
def test_macro_soup_gives_a_bounded_result_and_never_raises(texts: list[str]) -> None:
    # Small limits, so that short soup reaches them.
    limits = mock.patch.multiple(
        macro_context, MAX_VARIABLE_CHARS=300, MAX_VARIABLES_CHARS=1000, MAX_DRAWS=60, MAX_VARIABLE_WORK=20_000
    )
    with limits:
        c = context()
        outputs = [substitute(text, c) for text in texts]  # one context: the limits are shared
        volatile = [macros.volatile_macros(text) for text in texts]
    assert sum(map(len, outputs)) <= sum(map(len, texts)) + MAX_EXPANSION
    for store in (c.variables, c.global_variables):
        assert max(size(store)) <= 300  # MAX_VARIABLE_CHARS
        assert sum(size(store)) <= 1000  # MAX_VARIABLES_CHARS
    assert sum(map(len, c.banned_words)) <= sum(map(len, texts))
    assert len(c.warnings) <= 16 and all(w and "\n" not in w for w in c.warnings)
    assert all(set(v) <= set(MACRO_NAMES) for v in volatile)


DELIMITED = [
    macro_random.ROLL,
    macros._REVERSE,
    macros._COMMENT,
    macro_time.DATETIMEFORMAT,
    macro_time.TIMEDIFF,
    macros._BANNED,
    macro_random.RANDOM,
    macro_random.PICK,
    *(m for _scope, _kind, m in macro_variables.VARIABLE_MACROS),
]
OPENERS = [
    "{{roll:",
    "{{roll ",
    "{{reverse:",
    "{{//",
    "{{datetimeformat ",
    "{{DateTimeFormat",
    "{{timeDiff::",
    '{{banned "',
    "{{random::",
    "{{random:",
    "{{random :",
    "{{random\n:",
    "{{pick::",
    "{{PICK:",
    "{{getvar::",
    "{{setvar::",
    "{{addvar::",
    "{{incvar::",
    "{{decglobalvar::",
    "{{setglobalvar::",
]
DELIMITERS = ["}}", "}", "::", ":", '"}}', '"', "\n", "\r", " ", "  ", "a", "b c", "{{", "}}}"]
small_soup = st.lists(st.sampled_from(OPENERS + DELIMITERS), max_size=40).map("".join)


@settings(max_examples=500, deadline=None, database=None)
@given(text=small_soup)
def test_the_scanner_finds_what_sillytaverns_regexes_find(text: str) -> None:
    for macro_kind in DELIMITED:
        ours = [(m.span(), m.groups()) for m in macro_kind.finditer(text)]
        theirs = [(m.span(), m.groups()) for m in macro_kind.pattern.finditer(text)]
        assert ours == theirs, macro_kind.pattern.pattern
