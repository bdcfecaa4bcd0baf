"""SillyTavern macros: every macro Tavern supports, their order, and the volatility report.

Expected values for {{pick}} and the hash were computed with SillyTavern 1.12.6's own code
(getStringHash, seedrandom.min.js) under Node; time formats and humanized durations with its
moment.min.js."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tavern.prompt.macro_context import MacroContext
from tavern.prompt.macro_js import st_string_hash
from tavern.prompt.macros import substitute, volatile_macros

NOW = datetime(2024, 9, 15, 14, 3, 22)  # a Sunday
CHAT_ID = "Mira - 2024-09-15@14h03m22s"


def ctx(**kwargs: object) -> MacroContext:
    base: dict[str, object] = {"char": "Mira", "user": "Ann", "chat_id": CHAT_ID, "now": NOW, "rng_seed": 7}
    base.update(kwargs)
    return MacroContext(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{char}} greets {{user}}.", "Mira greets Ann."),
        ("{{CHAR}} and {{User}}", "Mira and Ann"),  # names are case-insensitive
        ("<USER> meets <BOT> and <char>", "Ann meets Mira and Mira"),  # legacy placeholders
        ("{{description}}", "Mira keeps the inn where Ann stays."),  # names inside fields too
        (
            "{{personality}}|{{scenario}}|{{persona}}|{{mesExamples}}",
            "kind|A rainy night.|Ann is a bard.|<START>\nAnn: hi",
        ),
        ("{{model}}", "SmolLM2"),
        ("a{{newline}}b{{noop}}c", "a\nbc"),
        ("Hello\n\n{{trim}}\n\nworld", "Helloworld"),
        ("keep{{// a comment, even\nover lines }} this", "keep this"),
        ("{{reverse:abc}}", "cba"),
        ("{{lastMessage}}|{{lastUserMessage}}|{{lastCharMessage}}", "last|from Ann|from Mira"),
        ("{{lastMessageId}}|{{maxPrompt}}|{{currentSwipeId}}", "12|4096|"),
        ("{{group}}|{{charIfNotGroup}}", "Mira|Mira"),
        ("{{unknownMacro}} stays", "{{unknownMacro}} stays"),
        ("{{input}}", "draft text"),
        ("", ""),
        ("no macros at all", "no macros at all"),
    ],
)
def test_simple_macros(text: str, expected: str) -> None:
    c = ctx(
        description="{{char}} keeps the inn where {{user}} stays.",
        personality="kind",
        scenario="A rainy night.",
        persona="Ann is a bard.",
        mes_examples="<START>\n{{user}}: hi",
        model="SmolLM2",
        last_message="last",
        last_user_message="from Ann",
        last_char_message="from Mira",
        last_message_id=12,
        max_prompt=4096,
        input="draft text",
    )
    assert substitute(text, c) == expected


def test_mes_examples_keep_user_macros_for_later() -> None:
    # SillyTavern substitutes {{user}} after the fields, so a field's own macros resolve.
    c = ctx(mes_examples="<START>\n{{user}}: hi")
    assert substitute("{{mesExamples}}", c) == "<START>\nAnn: hi"


def test_original_is_substituted_once_and_only_when_given() -> None:
    assert substitute("{{original}} + {{original}}", ctx(original="base")) == "base + "
    assert substitute("{{original}}", ctx()) == "{{original}}"


def test_time_macros_with_a_fixed_clock() -> None:
    c = ctx()
    assert substitute("{{time}}|{{date}}|{{weekday}}|{{isotime}}|{{isodate}}", c) == (
        "2:03 PM|September 15, 2024|Sunday|14:03|2024-09-15"
    )
    assert substitute("{{datetimeformat dddd, MMMM Do YYYY [at] h:mm A}}", c) == (
        "Sunday, September 15th 2024 at 2:03 PM"
    )
    assert substitute("{{datetimeformat LLLL}}|{{datetimeformat llll}}|{{datetimeformat w W}}", c) == (
        "Sunday, September 15, 2024 2:03 PM|Sun, Sep 15, 2024 2:03 PM|38 37"
    )
    aware = ctx(now=datetime(2024, 9, 15, 14, 3, tzinfo=UTC))
    assert substitute("{{time_UTC+2}}|{{time_UTC-5}}", aware) == "4:03 PM|9:03 AM"


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (None, "just now"),
        (timedelta(seconds=10), "a few seconds"),
        (timedelta(seconds=50), "a minute"),
        (timedelta(minutes=2), "2 minutes"),
        (timedelta(minutes=50), "an hour"),
        (timedelta(hours=2), "2 hours"),
        (timedelta(hours=25), "a day"),
        (timedelta(days=3), "3 days"),
        (timedelta(days=40), "a month"),
        (timedelta(days=200), "7 months"),
        (timedelta(days=400), "a year"),
        (timedelta(days=800), "2 years"),
    ],
)
def test_idle_duration(elapsed: timedelta | None, expected: str) -> None:
    c = ctx(last_user_time=None if elapsed is None else NOW - elapsed)
    assert substitute("{{idle_duration}}", c) == expected


def test_time_diff() -> None:
    c = ctx()
    assert substitute("{{timeDiff::2024-09-15 16:00::2024-09-15 14:00}}", c) == "in 2 hours"
    assert substitute("{{timeDiff::2024-09-10::2024-09-15}}", c) == "5 days ago"


def test_roll_uses_dice_notation() -> None:
    c = ctx()
    for _ in range(50):
        assert 1 <= int(substitute("{{roll:d20}}", c)) <= 20
        assert 1 <= int(substitute("{{roll 20}}", c)) <= 20  # digits only means 1dN
        assert 5 <= int(substitute("{{roll:3d6+2}}", c)) <= 20
        assert -1 <= int(substitute("{{roll:2d4-3}}", c)) <= 5
    assert substitute("[{{roll:banana}}]", c) == "[]"
    assert substitute("[{{roll:99999d6}}]", c) == "[]"  # too many dice for a prompt


def test_random_draws_anew_each_time() -> None:
    c = ctx(rng_seed=None)
    seen = {substitute("{{random::red::green::blue}}", c) for _ in range(100)}
    assert seen == {"red", "green", "blue"}
    assert substitute("{{random:a\\,b, c}}", ctx()) in {"a,b", "c"}  # comma list, escaped comma
    assert substitute("{{random::only}}", ctx()) == "only"
    # Seeded contexts repeat their draws.
    assert substitute("{{random::1::2::3::4::5::6}}" * 5, ctx()) == substitute(
        "{{random::1::2::3::4::5::6}}" * 5, ctx()
    )


def test_pick_is_stable_per_chat_and_matches_sillytavern() -> None:
    c = ctx(rng_seed=None)
    text = "{{pick::a::b::c}} {{pick::a::b::c}}"
    assert substitute(text, c) == "a c"  # SillyTavern gives the same picks
    assert {substitute(text, c) for _ in range(10)} == {"a c"}
    assert substitute("Привет 🎲 {{pick::x::y::z::w}}\n{{pick:1,2,3}}", c) == "Привет 🎲 z\n2"
    other_chat = ctx(chat_id="Mira - 2024-09-16@10h00m00s")
    picks = {
        substitute(f"{{{{pick::{'::'.join(map(str, range(20)))}}}}}", ctx(chat_id=f"chat {i}"))
        for i in range(10)
    }
    assert len(picks) > 1  # a different chat picks differently
    assert substitute(text, other_chat) == substitute(text, other_chat)
    # A stored chat_id_hash (chat_metadata.chat_id_hash) wins over the chat id.
    assert substitute(text, ctx(chat_id="renamed", chat_id_hash=st_string_hash(CHAT_ID))) == "a c"


def test_string_hash_matches_sillytavern() -> None:
    assert st_string_hash("a") == 7929297801672961
    assert st_string_hash("revenge") == 4051478007546757
    assert st_string_hash("Привет 🎲") == 91101274628019


def test_variables() -> None:
    c = ctx()
    assert (
        substitute("{{setvar::mood::happy}}Mood: {{getvar::mood}}", c) == "Mood: "
    )  # getvar runs first on a line
    assert c.variables == {"mood": "happy"}
    assert substitute("Mood: {{getvar::mood}}", c) == "Mood: happy"
    assert substitute("{{setvar::n::007}}", c) == ""
    assert substitute("{{getvar::n}}", c) == "7"  # numeric text reads back as a number
    assert substitute("{{addvar::n::3}}{{getvar::n}}", c) == "7"
    assert substitute("{{getvar::n}}", c) == "10"
    assert substitute("{{incvar::n}} {{decvar::n}} {{decvar::n}}", c) == "11 10 9"
    assert substitute("{{addvar::mood:: and calm}}{{getvar::mood}}", c) == "happy"
    assert c.variables["mood"] == "happy and calm"
    assert substitute("{{setvar::list::[1,2]}}{{addvar::list::x}}", c) == ""
    assert c.variables["list"] == '[1,2,"x"]'
    assert substitute("[{{getvar::missing}}]", c) == "[]"
    assert substitute("{{incvar::fresh}}", c) == "1"
    g = ctx(global_variables={"seen": 2})
    # On one line: getvar, then setvar, addvar, incvar, decvar (SillyTavern's order).
    assert (
        substitute(
            "{{incglobalvar::seen}}|{{setglobalvar::x::y}}{{getglobalvar::x}}|{{addglobalvar::seen::0.5}}", g
        )
        == "3.5||"
    )
    assert g.global_variables == {"seen": 3.5, "x": "y"}
    assert substitute("{{getglobalvar::x}}", g) == "y"
    assert substitute("{{decglobalvar::seen}}", g) == "2.5"


def test_variables_work_line_by_line() -> None:
    c = ctx()
    assert substitute("{{setvar::a::1}}\n{{getvar::a}}", c) == "\n1"


def test_instruct_macros() -> None:
    c = ctx(instruct={"systemPrompt": "Be vivid.", "instructInput": "<|user|>", "exampleSeparator": "***"})
    assert substitute("{{systemPrompt}}|{{instructUserPrefix}}|{{exampleSeparator}}|[{{chatStart}}]", c) == (
        "Be vivid.|<|user|>|***|[]"
    )


def test_banned_words_are_collected() -> None:
    c = ctx()
    assert substitute('Be nice.{{banned "shivers"}}', c) == "Be nice."
    assert c.banned_words == ["shivers"]


def test_order_dice_before_variables() -> None:
    # {{roll}} runs before variables, so a rolled value can be stored.
    c = ctx()
    substitute("{{setvar::hp::{{roll:1d1+9}}}}", c)
    assert c.variables["hp"] == "10"


def test_volatile_macros() -> None:
    text = "{{char}} at {{time}} on {{date}}; {{random::a::b}} {{pick::a::b}} {{idle_duration}} {{roll:d6}}"
    assert volatile_macros(text) == ["time", "date", "random", "idle_duration", "roll"]
    assert volatile_macros("{{char}} is {{personality}}. {{pick::x::y}}") == []
    assert volatile_macros("{{lastMessage}} {{setvar::a::1}} {{getvar::a}}") == [
        "lastMessage",
        "setvar",
        "getvar",
    ]
    assert volatile_macros("") == []
