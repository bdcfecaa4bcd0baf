"""Regex keys that would hang a turn or do not compile: bounded, named, and contained."""

from __future__ import annotations

from lore_helpers import chat, make_book, rejected, run, st_entry, uids

EVIL_TEXT = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"


def test_classic_catastrophic_pattern_returns():
    # /(a+)+$/ takes 2^32 steps in a backtracking engine such as the browser's (SillyTavern
    # freezes). The `regex` engine answers it without blowing up: no match, the scan goes on.
    book = make_book(
        st_entry(0, key=["/(a+)+$/"], comment="Evil"),
        st_entry(1, key=["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"], comment="Plain"),
    )
    result = run(book, chat(EVIL_TEXT))
    assert uids(result) == [1]
    assert result.broken == []


def test_runaway_regex_is_cut_off_and_named():
    # A pattern that does blow up in the `regex` engine too: stopped at the time limit.
    book = make_book(
        st_entry(0, key=["/(a|aa)+$/"], comment="Runaway"),
        st_entry(1, key=["/(a|a)+$/", "fallback"], comment="Also runaway, other key works"),
        st_entry(2, key=["fine"], comment="Fine"),
    )
    result = run(book, chat(EVIL_TEXT + " fine fallback"), regex_timeout_ms=20)
    assert uids(result) == [1, 2]
    assert rejected(result)[0] == 'regex key "/(a|aa)+$/" timed out after 20 ms'
    broken = {(b.uid, b.comment): b.message for b in result.broken}
    assert broken[(0, "Runaway")] == 'regex key "/(a|aa)+$/" timed out after 20 ms'
    assert broken[(1, "Also runaway, other key works")].startswith('regex key "/(a|a)+$/" timed out')


def test_total_regex_time_is_bounded_too():
    book = make_book(*(st_entry(i, key=[f"/(a|aa)+$|x{i}/"]) for i in range(30)))
    result = run(book, chat(EVIL_TEXT), regex_timeout_ms=20, regex_total_ms=60)
    assert uids(result) == []
    assert len(result.broken) == 30
    assert any("time for regex keys in this scan spent" in b.message for b in result.broken)


def test_invalid_regex_marks_only_that_entry_broken():
    book = make_book(
        st_entry(0, key=["/[unclosed/"], comment="Bad"),
        st_entry(1, key=["/(oops/", "dragon"], comment="Bad key, good key"),
        st_entry(2, key=["dragon"], comment="Good"),
    )
    result = run(book, chat("a dragon [unclosed"))
    assert uids(result) == [1, 2]
    messages = {b.uid: b.message for b in result.broken}
    assert set(messages) == {0, 1}
    assert messages[0].startswith('invalid regex key "/[unclosed/": ')
    assert messages[1].startswith('invalid regex key "/(oops/": ')
