"""Regex keys that would hang a turn or do not compile: bounded, named, and contained."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
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


# --- patterns that would exhaust memory when compiled ------------------------------------------
# `regex` unrolls repeat counts at compile time: `(?:a{60000}){60000}` took 23.9 GB before the
# pattern was measured first. These run in a child under an address-space limit, so the code
# before the bound fails them with a MemoryError instead of taking the machine down.

BOMB = "/(?:a{60000}){60000}/"
_CHILD_LIMIT = 1536 * 1024 * 1024


def _bounded(code: str, *args: str, limit: int = _CHILD_LIMIT) -> subprocess.CompletedProcess[str]:
    """Run `code` in a child Python limited to `limit` bytes of address space (and 120 s)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,
        cwd=Path(__file__).resolve().parent,
    )


_SCAN_WORLD_BOOK = """
import json, sys
sys.path.insert(0, ".")
from lore_helpers import chat, make_book, run, st_entry, uids
book = make_book(
    st_entry(0, key=[sys.argv[1]], comment="Bomb"),
    st_entry(1, key=["harbor"], comment="Harbor"),
)
for turn in range(3):  # every turn: the same one-line report, never a MemoryError
    result = run(book, chat("the harbor at dawn", "aaaa"))
    print(json.dumps([uids(result), [(b.uid, b.comment, b.message) for b in result.broken]]))
"""


def test_compile_bomb_in_a_world_book_is_refused_in_one_line():
    done = _bounded(_SCAN_WORLD_BOOK, BOMB)
    assert done.returncode == 0, done.stderr[-2000:]
    turns = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(turns) == 3
    for activated, broken in turns:
        assert activated == [1]
        ((uid, comment, message),) = broken
        assert (uid, comment) == (0, "Bomb")
        assert message.startswith(f'invalid regex key "{BOMB}": pattern repeats too much')
        assert "\n" not in message


_SCAN_CARD_BOOK = """
import json, sys
sys.path.insert(0, ".")
from lore_helpers import chat, run
from tavern.lore import lorebook_from_character_book
card_book = {
    "name": "Mira's book",
    "entries": [
        {"id": 1, "keys": [sys.argv[1]], "content": "boom", "comment": "Bomb", "enabled": True,
         "insertion_order": 100},
        {"id": 2, "keys": ["harbor"], "content": "The harbor.", "comment": "Harbor",
         "enabled": True, "insertion_order": 100},
    ],
}
book = lorebook_from_character_book(card_book, "Mira's book")
result = run(book, chat("the harbor at dawn"))
print(json.dumps([[e.comment for e in result.activated], [b.message for b in result.broken]]))
"""


def test_compile_bomb_in_a_card_character_book_is_refused_too():
    done = _bounded(_SCAN_CARD_BOOK, BOMB)
    assert done.returncode == 0, done.stderr[-2000:]
    activated, broken = json.loads(done.stdout)
    assert activated == ["Harbor"]
    assert len(broken) == 1 and "pattern repeats too much" in broken[0]


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("/a{1000000}/", "repeat count {1000000} is over 100000"),
        ("/(?:(?:ab){100}){101}/", "pattern repeats too much"),
        ("/x{2,9999999999999999999}/", "is over 100000"),
        ("/" + "a|" * 3000 + "b/", "pattern is 6001 characters (limit 4096)"),
    ],
    ids=["one big count", "nested counts", "huge maximum", "long pattern"],
)
def test_oversized_patterns_name_the_reason(key: str, problem: str):
    result = run(make_book(st_entry(0, key=[key], comment="Big")), chat("ab"))
    assert uids(result) == []
    (broken,) = result.broken
    assert problem in broken.message
    assert "\n" not in broken.message and len(broken.message) < 300


def test_ordinary_counts_still_work():
    book = make_book(
        st_entry(0, key=["/\\bx{2,5}y/"], comment="Counted"),
        st_entry(1, key=["/(?:ab){3}c/"], comment="Grouped"),
        st_entry(2, key=["/\\p{Lu}{2}!/"], comment="Unicode class with a count"),
        st_entry(3, key=["/\\d{4}-\\d{2}/"], comment="Date"),
    )
    result = run(book, chat("xxxy and abababc, then ÉZ! on 2024-05"))
    assert uids(result) == [0, 1, 2, 3]
    assert result.broken == []


def test_braces_that_are_not_a_count_are_literal_as_in_javascript():
    # `regex` reads `{e<=1}` as fuzzy matching ("dracon" would match); JavaScript, and so
    # SillyTavern, reads it as the literal text "{e<=1}".
    book = make_book(
        st_entry(0, key=["/(?:dragon){e<=1}/"], comment="Fuzzy in regex, literal in JS"),
        st_entry(1, key=["/a{,2}b/"], comment="Literal {,2}"),
    )
    assert uids(run(book, chat("the dracon and aab"))) == []
    assert uids(run(book, chat("the dragon{e<=1} and a{,2}b"))) == [0, 1]


_MANY_BIG_KEYS = """
import json, sys
sys.path.insert(0, ".")
from lore_helpers import chat, make_book, run, st_entry
# 400 different keys of 9,000 unrolled units each: 3.6M units, about 1 GB compiled.
book = make_book(*(st_entry(i, key=[f"/q{{{9000 + i}}}/"]) for i in range(400)))
result = run(book, chat("nothing here"))
refused = [b.message for b in result.broken]
print(json.dumps([len(refused), refused[-1] if refused else ""]))
"""


def test_many_big_keys_cannot_add_up():
    done = _bounded(_MANY_BIG_KEYS, limit=1024 * 1024 * 1024)
    assert done.returncode == 0, done.stderr[-2000:]
    count, last = json.loads(done.stdout)
    assert 250 <= count < 400  # the first ~110 compile, the rest are refused
    assert "regex keys in memory are over 1000000 units" in last


def test_lore_scan_command_reports_the_bomb_as_a_problem(tmp_path: Path):
    book = tmp_path / "book.json"
    entries = {
        "0": {"uid": 0, "key": [BOMB], "comment": "Bomb", "content": "boom"},
        "1": {"uid": 1, "key": ["harbor"], "comment": "Harbor", "content": "The harbor."},
    }
    book.write_text(json.dumps({"entries": entries}), encoding="utf-8")
    tavern = str(Path(sys.executable).with_name("tavern"))
    code = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
    done = _bounded(
        code, tavern, "--home", str(tmp_path / "home"), "lore", "scan", str(book), "--text", "harbor"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Harbor" in done.stdout
    problem = next(line for line in done.stdout.splitlines() if "Bomb" in line)
    assert problem.strip().startswith(f'book#0 Bomb: invalid regex key "{BOMB}": pattern repeats too much')
    assert "MemoryError" not in done.stdout + done.stderr
