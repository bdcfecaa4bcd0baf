"""Regex scripts change what a user sees, what the model reads, or the stored message, by
SillyTavern's rules (public/scripts/extensions/regex/engine.js)."""

from __future__ import annotations

from tavern.scripts.model import Placement, RegexScript, SubstituteRegex
from tavern.scripts.regex import apply_scripts, run_script

AI = Placement.AI_OUTPUT
USER = Placement.USER_INPUT


def macros(text: str) -> str:
    """A stand-in for the prompt's macro engine: Mira talks with Ann."""
    return text.replace("{{char}}", "Mira").replace("{{user}}", "Ann")


def shown(text: str, *scripts: RegexScript, placement: int = AI, depth: int | None = 0) -> str:
    run = apply_scripts(
        text, scripts, placement, is_markdown=True, is_prompt=False, is_edit=False, depth=depth, macros=macros
    )
    assert not run.errors
    return run.text


def prompted(text: str, *scripts: RegexScript, placement: int = AI, depth: int | None = 0) -> str:
    run = apply_scripts(
        text, scripts, placement, is_markdown=False, is_prompt=True, is_edit=False, depth=depth, macros=macros
    )
    assert not run.errors
    return run.text


def stored(text: str, *scripts: RegexScript, placement: int = AI, is_edit: bool = False) -> str:
    """The message itself as it is received, sent or edited (neither display nor prompt)."""
    run = apply_scripts(
        text,
        scripts,
        placement,
        is_markdown=False,
        is_prompt=False,
        is_edit=is_edit,
        depth=None,
        macros=macros,
    )
    assert not run.errors
    return run.text


HIDE_ACTIONS = RegexScript(
    script_name="Hide *actions*",
    find_regex=r"/\s*\*[^*]+\*/g",
    placement=(AI,),
    markdown_only=True,
)
REPLY = 'Hello there. *waves and smiles* "Nice to meet you." *bows*'


def test_a_display_only_script_changes_what_is_shown_not_the_prompt_nor_the_chat_file() -> None:
    assert shown(REPLY, HIDE_ACTIONS) == 'Hello there. "Nice to meet you."'
    assert prompted(REPLY, HIDE_ACTIONS) == REPLY
    assert stored(REPLY, HIDE_ACTIONS) == REPLY


def test_a_prompt_only_script_changes_only_what_the_model_reads() -> None:
    ooc = RegexScript(
        script_name="Drop OOC", find_regex=r"/\(OOC:[^)]*\)\s*/g", placement=(USER,), prompt_only=True
    )
    text = "(OOC: keep it short) Where is the lighthouse?"
    assert prompted(text, ooc, placement=USER) == "Where is the lighthouse?"
    assert shown(text, ooc, placement=USER) == text
    assert stored(text, ooc, placement=USER) == text


def test_a_script_with_neither_flag_rewrites_the_stored_message_only() -> None:
    # SillyTavern runs such a script when the message arrives, so the chat file keeps the
    # result; display and prompt then see it already changed and do not run it again.
    fix = RegexScript(script_name="No em dash", find_regex="/—/g", replace_string=", ", placement=(AI,))
    text = "The sea—grey and cold—rolled in."
    assert stored(text, fix) == "The sea, grey and cold, rolled in."
    assert shown(text, fix) == text
    assert prompted(text, fix) == text


def test_a_script_with_both_flags_runs_when_shown_and_in_the_prompt_but_not_on_the_stored_text() -> None:
    both = RegexScript(
        script_name="Both",
        find_regex="/lol/gi",
        replace_string="(laughs)",
        placement=(AI,),
        markdown_only=True,
        prompt_only=True,
    )
    assert shown("LOL ok", both) == "(laughs) ok"
    assert prompted("LOL ok", both) == "(laughs) ok"
    assert stored("LOL ok", both) == "LOL ok"


def test_char_in_the_replacement_is_the_speaker() -> None:
    third_person = RegexScript(
        script_name="Third person", find_regex=r"/\bI am\b/g", replace_string="{{char}} is", placement=(AI,)
    )
    assert stored("I am tired, and I am cold.", third_person) == "Mira is tired, and Mira is cold."


def test_substitute_regex_escaped_matches_a_name_with_regex_characters_literally() -> None:
    def odd_name(text: str) -> str:
        return text.replace("{{char}}", "Dr. Who (v2)")

    raw = RegexScript(
        script_name="Name",
        find_regex="/{{char}}/g",
        replace_string="[name]",
        placement=(AI,),
        substitute_regex=SubstituteRegex.RAW,
    )
    escaped = RegexScript(
        script_name="Name",
        find_regex="/{{char}}/g",
        replace_string="[name]",
        placement=(AI,),
        substitute_regex=SubstituteRegex.ESCAPED,
    )
    text = "Dr. Who (v2) met Dr! Who v2."
    # Raw: the name is regex syntax, so `.` is any character and `(v2)` a group.
    assert run_script(raw, text, macros=odd_name).text == "Dr. Who (v2) met [name]."
    assert run_script(escaped, text, macros=odd_name).text == "[name] met Dr! Who v2."
    # Without substitution the braces are literal text to match.
    plain = RegexScript(script_name="Name", find_regex="/{{char}}/g", replace_string="X", placement=(AI,))
    assert run_script(plain, "{{char}} waves", macros=odd_name).text == "X waves"


def test_trim_strings_are_removed_from_the_inserted_groups_with_macros_expanded() -> None:
    ooc = RegexScript(
        script_name="OOC box",
        find_regex=r"/\[OOC: (.*?)\]/g",
        replace_string="<ooc>$1</ooc>",
        trim_strings=("{{user}}: ",),
        placement=(USER,),
        markdown_only=True,
    )
    text = "[OOC: Ann: please slow down] Hi."
    assert shown(text, ooc, placement=USER) == "<ooc>please slow down</ooc> Hi."


def test_trim_strings_do_not_touch_the_literal_part_of_the_replacement() -> None:
    script = RegexScript(
        script_name="t",
        find_regex="/(ab)/",
        replace_string="a: $1 / {{match}}",
        trim_strings=("a",),
        placement=(AI,),
    )
    # The template's own `a` stays; the inserted group and the whole match lose theirs.
    assert stored("ab", script) == "a: b / b"


STATUS = RegexScript(
    script_name="Old status blocks out of the prompt",
    find_regex=r"/<status>[\s\S]*?<\/status>\n?/g",
    placement=(AI,),
    prompt_only=True,
    min_depth=1,
)
WITH_STATUS = "<status>HP 10</status>\nShe nods."


def test_a_depth_limited_script_keeps_the_newest_message_whole() -> None:
    assert prompted(WITH_STATUS, STATUS, depth=0) == WITH_STATUS
    assert prompted(WITH_STATUS, STATUS, depth=1) == "She nods."
    assert prompted(WITH_STATUS, STATUS, depth=7) == "She nods."
    # No depth (a lorebook entry not placed at a depth): the limits do not apply.
    assert prompted(WITH_STATUS, STATUS, depth=None) == "She nods."


def test_max_depth_and_the_continued_message_at_depth_minus_one() -> None:
    recent = RegexScript(
        script_name="r", find_regex="/x/g", replace_string="y", placement=(AI,), prompt_only=True, max_depth=2
    )
    assert prompted("x", recent, depth=2) == "y"
    assert prompted("x", recent, depth=3) == "x"
    # On a continue SillyTavern counts the message being continued as depth -1: a minDepth of
    # 0 leaves it alone, a minDepth of -1 includes it; a negative maxDepth is no limit.
    from_zero = RegexScript(
        script_name="z",
        find_regex="/x/",
        replace_string="y",
        placement=(AI,),
        prompt_only=True,
        min_depth=0,
        max_depth=-1,
    )
    from_minus_one = RegexScript(
        script_name="m", find_regex="/x/", replace_string="y", placement=(AI,), prompt_only=True, min_depth=-1
    )
    assert prompted("x", from_zero, depth=-1) == "x"
    assert prompted("x", from_zero, depth=50) == "y"
    assert prompted("x", from_minus_one, depth=-1) == "y"


def test_without_the_g_flag_only_the_first_match_is_replaced() -> None:
    first = RegexScript(script_name="f", find_regex="/um, /", placement=(AI,))
    every = RegexScript(script_name="e", find_regex="/um, /g", placement=(AI,))
    assert stored("um, well, um, yes", first) == "well, um, yes"
    assert stored("um, well, um, yes", every) == "well, yes"


def test_a_plain_find_string_is_a_case_sensitive_regex_for_the_first_match() -> None:
    plain = RegexScript(script_name="p", find_regex="c.t", replace_string="dog", placement=(AI,))
    assert stored("Cat cat cot", plain) == "Cat dog cot"


def test_groups_in_the_replacement() -> None:
    swap = RegexScript(
        script_name="swap",
        find_regex=r"/(?<first>\w+) (\w+)(!)?/",
        replace_string="$2 $<first>[$3][$<none>] {{MATCH}} $& $$",
        placement=(AI,),
    )
    # An unmatched or unknown group is empty; `$&` and `$$` are not special in SillyTavern.
    assert stored("hello world", swap) == "world hello[][] hello world $& $$"


def test_flags_i_m_s() -> None:
    bullets = RegexScript(script_name="b", find_regex="/^- /gm", replace_string="• ", placement=(AI,))
    assert stored("- one\n- two", bullets) == "• one\n• two"
    no_m = RegexScript(script_name="b", find_regex="/^- /g", replace_string="• ", placement=(AI,))
    assert stored("- one\n- two", no_m) == "• one\n- two"
    across = RegexScript(script_name="s", find_regex="/<a>.*<\\/a>/s", placement=(AI,))
    assert stored("x<a>1\n2</a>y", across) == "xy"
    assert stored(
        "x<a>1\n2</a>y", RegexScript(script_name="n", find_regex="/<a>.*<\\/a>/", placement=(AI,))
    ) == ("x<a>1\n2</a>y")
    shout = RegexScript(script_name="i", find_regex="/mira/gi", replace_string="M.", placement=(AI,))
    assert stored("MIRA and mira", shout) == "M. and M."


def test_word_classes_are_ascii_as_in_javascript() -> None:
    words = RegexScript(script_name="w", find_regex=r"/\b\w+\b/g", replace_string="<$0>", placement=(AI,))
    assert stored("Привет world", words) == "Привет <world>"


def test_scripts_run_in_list_order_each_on_the_previous_output() -> None:
    cat_to_dog = RegexScript(script_name="1", find_regex="/cat/g", replace_string="dog", placement=(AI,))
    dog_to_wolf = RegexScript(script_name="2", find_regex="/dog/g", replace_string="wolf", placement=(AI,))
    assert stored("a cat", cat_to_dog, dog_to_wolf) == "a wolf"
    assert stored("a cat", dog_to_wolf, cat_to_dog) == "a dog"


def test_placement_disabled_and_run_on_edit() -> None:
    script = RegexScript(script_name="s", find_regex="/a/g", replace_string="b", placement=(AI,))
    assert stored("a", script, placement=USER) == "a"
    assert stored("a", RegexScript(script_name="d", find_regex="/a/g", placement=(AI,), disabled=True)) == "a"
    assert stored("a", script, is_edit=True) == "a"
    on_edit = RegexScript(
        script_name="e", find_regex="/a/g", replace_string="b", placement=(AI,), run_on_edit=True
    )
    assert stored("a", on_edit, is_edit=True) == "b"


def test_a_catastrophic_pattern_is_stopped_with_one_line_and_the_text_unchanged() -> None:
    hostile = RegexScript(script_name="Hostile", find_regex="/(a|aa)+$/", replace_string="X", placement=(AI,))
    text = "a" * 40 + "b"
    run = apply_scripts(
        text,
        [hostile],
        AI,
        is_markdown=False,
        is_prompt=False,
        is_edit=False,
        depth=None,
        macros=macros,
        timeout=0.2,
    )
    assert run.text == text
    assert len(run.errors) == 1 and "\n" not in run.errors[0]
    assert "'Hostile'" in run.errors[0] and "unchanged" in run.errors[0]


def test_the_textbook_catastrophic_pattern_simply_does_not_match() -> None:
    # `regex` optimises (a+)+$ (JavaScript would backtrack for minutes): no match, no error.
    script = RegexScript(script_name="t", find_regex="/(a+)+$/", replace_string="X", placement=(AI,))
    run = run_script(script, "a" * 40 + "b", macros=macros, timeout=0.2)
    assert run.text == "a" * 40 + "b"
    assert run.errors == ()


def test_a_broken_script_reports_and_the_others_still_run() -> None:
    broken = RegexScript(script_name="Broken", find_regex="/(unclosed/g", placement=(AI,))
    good = RegexScript(script_name="Good", find_regex="/a/g", replace_string="b", placement=(AI,))
    run = apply_scripts(
        "aa", [broken, good], AI, is_markdown=False, is_prompt=False, is_edit=False, depth=None, macros=macros
    )
    assert run.text == "bb"
    assert run.changed_by == ("Good",)
    assert len(run.errors) == 1 and run.errors[0].startswith("regex script 'Broken': ")


def test_a_replacement_that_would_flood_the_text_is_stopped() -> None:
    flood = RegexScript(
        script_name="Flood", find_regex="/x*/g", replace_string="y" * 100_000, placement=(AI,)
    )
    run = run_script(flood, "a" * 100, macros=macros)
    assert run.text == "a" * 100
    assert len(run.errors) == 1 and "Flood" in run.errors[0]


def test_an_empty_text_or_an_empty_find_is_left_alone() -> None:
    script = RegexScript(script_name="s", find_regex="/^/g", replace_string="x", placement=(AI,))
    assert stored("", script) == ""
    assert (
        stored("abc", RegexScript(script_name="e", find_regex="", replace_string="x", placement=(AI,)))
        == "abc"
    )
