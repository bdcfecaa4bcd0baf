"""A findRegex means what it means in SillyTavern's browser: `regexFromString`'s reading of
`/pattern/flags`, and the JavaScript syntax that the `regex` package reads differently."""

from __future__ import annotations

import pytest

from tavern.scripts.jsregex import MAX_PATTERN_CHARS, compile_find_regex, split_regex_string
from tavern.scripts.model import RegexScript
from tavern.scripts.regex import run_script


def sub(find: str, text: str, replace: str = "<$0>") -> str:
    run = run_script(RegexScript(script_name="t", find_regex=find, replace_string=replace), text, macros=str)
    assert not run.errors, run.errors
    return run.text


def error(find: str) -> str:
    found = compile_find_regex(find)
    assert found.pattern is None and found.error
    return found.error


@pytest.mark.parametrize(
    ("find", "parts"),
    [
        ("/abc/gi", ("abc", "gi")),
        ("/a/b/g", ("a/b", "g")),  # split on the last slash followed by letters
        ("/a/g junk", ("a", "g")),  # what follows the flags is ignored
        ("abc", ("abc", "")),  # no slashes: the whole string, no flags
        ("/abc", ("/abc", "")),
        ("/abc/y", ("/abc/y", "")),  # `y` fails SillyTavern's flag test: all of it is the pattern
        ("/abc/gg", ("/abc/gg", "")),
        ("/abc/G", ("/abc/G", "")),
        ("first line\nsecond", ("first line", "")),  # the shape test stops at a line break
        ("", None),
    ],
)
def test_regex_from_string(find: str, parts: tuple[str, str] | None) -> None:
    assert split_regex_string(find) == parts


def test_what_the_reading_means_for_a_user() -> None:
    assert sub("/abc/y", "abc /abc/y") == "abc </abc/y>"
    assert sub("/b/g and more", "abab") == "a<b>a<b>"
    assert error("/abc/x") == "'x' is not a JavaScript regex flag"
    assert error("") == "the pattern is empty"


def test_javascript_only_syntax() -> None:
    assert sub("/[^]+/", "a\nb") == "<a\nb>"  # [^] is any character
    assert sub("/x[]/", "x") == "x"  # [] never matches
    assert sub("/[]a]/", "a]") == "a]"  # JavaScript closes the class at the first ]
    assert sub("/a{e<=1}/", "ab a{e<=1}") == "ab <a{e<=1}>"  # a literal, not fuzzy matching
    assert sub("/a{,2}/", "aa a{,2}") == "aa <a{,2}>"
    assert sub(r"/\e\A/", "eA") == "<eA>"  # identity escapes
    assert sub(r"/(?<q>['\"]).*?\k<q>/", "say 'hi' now") == "say <'hi'> now"
    assert sub(r"/\101/", "A") == "<A>"  # legacy octal
    assert sub(r"/(a)\1/", "aa") == "<aa>"
    assert sub(r"/\u{1F600}/u", "😀") == "<😀>"
    assert sub(r"/\uD83D\uDE00/", "😀") == "<😀>"
    assert sub(r"/\cJ/", "a\nb") == "a<\n>b"


def test_anchors_and_line_breaks_are_javascripts() -> None:
    assert sub("/end$/", "the end\n") == "the end\n"  # `$` is the end of the input only
    assert sub("/end$/m", "the end\r\nmore") == "the <end>\r\nmore"
    assert sub("/^x/gm", "x\rx") == "<x>\r<x>"
    assert sub("/a.c/", "a\rc abc") == "a\rc <abc>"  # `.` stops at \r too


def test_classes_follow_javascript() -> None:
    assert sub(r"/[\w-]+/", "Привет ab-c") == "Привет <ab-c>"
    assert sub(r"/[^\W\d]+/g", "a1б_b") == "<a>1б<_b>"
    assert sub(r"/\d+/", "٣ 3") == "٣ <3>"  # Arabic-Indic digits are not \d in JavaScript
    assert sub(r"/\s+/g", "a\u00a0\ufeffb", "_") == "a_b"
    assert sub(r"/[\b]/", "a\bb") == "a<\b>b"


def test_patterns_over_the_bounds_are_refused_before_compiling() -> None:
    assert error("/a{1000000}/") == "the repeat count {1000000} is over 100000"
    assert "repeats too much" in error("/(?:(?:a{100}){100}){100}/")
    assert error("/" + "a" * MAX_PATTERN_CHARS + "/").startswith("the pattern is ")
    assert error("/(unclosed/").startswith("the pattern does not compile (")
    assert error("/[abc/") == "a character class [ is not closed"
    assert error("/abc\\/") == "the pattern ends with a lone backslash"
