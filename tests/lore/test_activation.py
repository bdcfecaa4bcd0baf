"""Which entries activate for which messages: keys, selective logic, matching rules, depth.

Each case is one SillyTavern decides the same way (public/scripts/world-info.js, Sep 2024),
except where a test says it checks Tavern's documented Unicode word boundaries.
"""

from __future__ import annotations

import pytest
from lore_helpers import chat, make_book, rejected, run, st_entry, uids, words

from tavern.lore import LoreSettings, ScanMessage, scan_lore


def test_primary_key_activates_and_says_where():
    book = make_book(st_entry(0, key=["dragon"], content="Dragons hoard gold."))
    result = run(book, chat("I saw a dragon!", "Really?"))
    assert uids(result) == [0]
    assert result.activated[0].reason == 'key "dragon" matched in message -2'
    assert result.activated[0].content == "Dragons hoard gold."
    assert uids(run(book, chat("Nothing here."))) == []


# --- selective logic -----------------------------------------------------------------------

LOGIC = [
    # logic, text, active?, reason when not
    (0, "a dragon in the cave", True, None),
    (0, "a dragon in the sky", False, 'secondary keys AND_ANY: none of "cave", "lair" present'),
    (1, "a dragon in the cave", True, None),
    (1, "the dragon cave is its lair", False, 'secondary keys NOT_ALL: all of "cave", "lair" present'),
    (2, "a dragon in the sky", True, None),
    (2, "a dragon in the cave", False, 'secondary keys NOT_ANY: "cave" present'),
    (3, "the dragon cave is its lair", True, None),
    (3, "a dragon in the cave", False, 'secondary keys AND_ALL: "lair" missing'),
]


@pytest.mark.parametrize(("logic", "text", "active", "reason"), LOGIC)
def test_selective_logic(logic, text, active, reason):
    book = make_book(st_entry(0, key=["dragon"], keysecondary=["cave", "lair"], selectiveLogic=logic))
    result = run(book, chat(text))
    assert (uids(result) == [0]) is active
    if not active:
        assert rejected(result)[0] == reason


def test_secondary_keys_ignored_when_not_selective():
    book = make_book(st_entry(0, key=["dragon"], keysecondary=["cave"], selective=False))
    assert uids(run(book, chat("a dragon in the sky"))) == [0]


def test_secondary_key_alone_does_not_activate():
    book = make_book(st_entry(0, key=["dragon"], keysecondary=["cave"]))
    assert uids(run(book, chat("a cave"))) == []


# --- regex keys ----------------------------------------------------------------------------


def test_regex_key_with_flags_ignores_case_and_whole_word_settings():
    book = make_book(
        st_entry(0, key=["/drag(on|ons)/i"], caseSensitive=True),
        st_entry(1, key=["/Drag/"]),  # no i flag: case matters even though the setting says not
        st_entry(2, key=["/drag/"]),  # matches inside a word even with whole words on
    )
    result = run(book, chat("The DRAGONS flew over the dragonfly pond."))
    assert uids(result) == [0, 2]


def test_regex_key_can_span_its_alternatives_and_anchors():
    book = make_book(
        st_entry(0, key=[r"/\bsea ?serpents?\b/i"]),
        # `$` is the end of the whole scan text, as in JavaScript; the scan text runs newest
        # message first, so it ends with the oldest scanned message.
        st_entry(1, key=[r"/storm$/"]),
    )
    assert uids(run(book, chat("Seaserpent sighted! A storm"))) == [0, 1]
    assert uids(run(book, chat("A storm", "sea serpents"))) == [0, 1]
    assert uids(run(book, chat("sea serpents", "A storm"))) == [0]


def test_text_that_only_looks_like_a_regex_is_a_plain_key():
    # An unescaped slash inside means "not a regex" to SillyTavern: matched literally.
    book = make_book(st_entry(0, key=["/a/b/"]))
    assert uids(run(book, chat("path /a/b/ here"))) == [0]


# --- case and whole words -------------------------------------------------------------------


def test_case_insensitive_by_default_and_case_sensitive_global_or_per_entry():
    book = make_book(st_entry(0, key=["Mira"]), st_entry(1, key=["Mira"], caseSensitive=True))
    messages = chat(("Ilse", "where is mira?"))
    assert uids(run(book, messages)) == [0]
    assert uids(run(book, messages, case_sensitive=True)) == []
    assert uids(run(book, chat(("Ilse", "where is Mira?")), case_sensitive=True)) == [0, 1]


def test_whole_words_global_and_per_entry():
    book = make_book(st_entry(0, key=["cat"]), st_entry(1, key=["cat"], matchWholeWords=False))
    assert uids(run(book, chat("a category error"))) == [1]
    assert uids(run(book, chat("the (cat)!"))) == [0, 1]
    assert uids(run(book, chat("a category error"), match_whole_words=False)) == [0, 1]


def test_multi_word_key_is_a_substring_test_and_punctuated_key_respects_boundaries():
    book = make_book(st_entry(0, key=["red dragon"]), st_entry(1, key=["half-elf"]))
    assert uids(run(book, chat("the red dragons"))) == [0]
    assert uids(run(book, chat("a half-elf ranger"))) == [1]
    assert uids(run(book, chat("half-elfish manners"))) == []


def test_cyrillic_key_does_not_match_inside_a_longer_word():
    # Tavern's documented improvement: SillyTavern's ASCII boundaries would match "кот"
    # inside "который" (every Cyrillic letter is \W there).
    book = make_book(st_entry(0, key=["кот"]), st_entry(1, key=["café"]))
    assert uids(run(book, chat("Это тот, который пришёл вчера."))) == []
    assert uids(run(book, chat("Мой Кот спит."))) == [0]
    assert uids(run(book, chat("two cafés"))) == []
    assert uids(run(book, chat("the café, again"))) == [1]


# --- scan depth and names ------------------------------------------------------------------


def test_scan_depth_global_and_per_entry():
    messages = chat("the amulet glows", "hm", "go on", "ok")  # key in message -4
    book = make_book(st_entry(0, key=["amulet"]))
    assert uids(run(book, messages)) == []  # default depth 2
    assert uids(run(book, messages, scan_depth=4)) == [0]
    deep = make_book(st_entry(0, key=["amulet"], scanDepth=4))
    assert uids(run(deep, messages)) == [0]
    assert run(deep, messages).activated[0].reason == 'key "amulet" matched in message -4'


def test_scan_depth_zero_matches_nothing():
    book = make_book(st_entry(0, key=["amulet"], scanDepth=0), st_entry(1, key=["amulet"]))
    assert uids(run(book, chat("the amulet"))) == [1]
    assert uids(run(book, chat("the amulet"), scan_depth=0)) == []


def test_names_are_scanned_unless_turned_off():
    book = make_book(st_entry(0, key=["Ilse"]))
    messages = chat(("Ilse", "Hello."))
    assert uids(run(book, messages)) == [0]
    assert uids(run(book, messages, include_names=False)) == []


def test_min_activations_widens_the_scan_depth():
    messages = chat("the amulet glows", "hm", "go on", "ok")
    book = make_book(st_entry(0, key=["amulet"]))
    assert uids(run(book, messages, min_activations=1)) == [0]
    # SillyTavern compares the depth with the maximum before widening it, so the last widening
    # goes one message past the maximum: 3 reaches message -4, 2 stops at message -3.
    assert uids(run(book, messages, min_activations=1, min_activations_depth_max=3)) == [0]
    assert uids(run(book, messages, min_activations=1, min_activations_depth_max=2)) == []


def test_injected_text_is_scanned():
    book = make_book(st_entry(0, key=["lighthouse"]))
    result = scan_lore(
        [("global", book)],
        chat("hello"),
        LoreSettings(),
        8192,
        words,
        extra_scan_text=["[Author's note: they reach the lighthouse]"],
    )
    assert [a.reason for a in result.activated] == ['key "lighthouse" matched in injected text']


def test_key_macros_are_substituted_when_a_substituter_is_given():
    book = make_book(st_entry(0, key=["{{char}}"]))
    messages = [ScanMessage("User", "Where is Mira?", True)]
    result = scan_lore(
        [("character", book)],
        messages,
        LoreSettings(),
        8192,
        words,
        substitute_macros=lambda s: s.replace("{{char}}", "Mira"),
    )
    assert [a.uid for a in result.activated] == [0]


# --- constant, disabled, decorators, filters, probability -----------------------------------


def test_constant_and_disabled():
    book = make_book(
        st_entry(0, constant=True, content="always"),
        st_entry(1, key=["dragon"], disable=True),
        st_entry(2, constant=True, disable=True),
        st_entry(3, key=["unicorn"], disable=True),
    )
    result = run(book, chat("a dragon"))
    assert uids(result) == [0]
    assert result.activated[0].reason == "constant"
    assert rejected(result) == {1: "disabled", 2: "disabled"}  # 3 would not have fired anyway


def test_decorators():
    book = make_book(
        st_entry(0, content="@@activate\nAlways here."),
        st_entry(1, key=["dragon"], content="@@dont_activate\nNever here."),
        st_entry(2, key=["dragon"], content="@@depth 2\n@@role system\nDecorators stripped."),
    )
    result = run(book, chat("a dragon"))
    assert uids(result) == [0, 2]
    contents = {a.uid: a.content for a in result.activated}
    assert contents == {0: "Always here.", 2: "Decorators stripped."}
    assert rejected(result)[1] == "@@dont_activate decorator"


def test_character_filter():
    only_mira = {"isExclude": False, "names": ["Mira"], "tags": []}
    not_mira = {"isExclude": True, "names": ["Mira"], "tags": []}
    by_tag = {"isExclude": False, "names": [], "tags": ["sailor"]}
    book = make_book(
        st_entry(0, key=["ship"], characterFilter=only_mira),
        st_entry(1, key=["ship"], characterFilter=not_mira),
        st_entry(2, key=["ship"], characterFilter=by_tag),
    )

    def active(name, tags=()):
        result = scan_lore(
            [("character", book)],
            chat("a ship"),
            LoreSettings(),
            8192,
            words,
            character_name=name,
            character_tags=list(tags),
        )
        return uids(result), rejected(result)

    assert active("Mira")[0] == [0]
    ilse, why = active("Ilse", ["sailor"])
    assert ilse == [1, 2]
    assert why[0] == 'character filter: not for "Ilse"'


def test_probability_is_seeded_and_reported():
    book = make_book(st_entry(0, key=["dragon"], probability=50))
    outcomes = [uids(run(book, chat("dragon"), seed=seed)) == [0] for seed in range(40)]
    assert any(outcomes) and not all(outcomes)
    assert outcomes == [uids(run(book, chat("dragon"), seed=seed)) == [0] for seed in range(40)]
    lost = next(seed for seed, ok in enumerate(outcomes) if not ok)
    reason = rejected(run(book, chat("dragon"), seed=lost))[0]
    assert reason.startswith("probability roll ") and reason.endswith(" > 50")


def test_probability_off_or_zero():
    book = make_book(
        st_entry(0, key=["dragon"], probability=10, useProbability=False),
        st_entry(1, key=["dragon"], probability=0),
    )
    for seed in range(20):
        assert uids(run(book, chat("dragon"), seed=seed)) == [0]


def test_index_notices_edits_between_scans():
    book = make_book(st_entry(0, key=["dragon"]), st_entry(1, key=["ship"]))
    assert uids(run(book, chat("a dragon"))) == [0]
    book.entries[0].key = ["wyrm"]  # attribute assignment
    assert uids(run(book, chat("a dragon"))) == []
    book.entries.append(make_book(st_entry(7, key=["dragon"])).entries[0])  # list edit
    assert uids(run(book, chat("a dragon"))) == [7]
    book.entries[1] = make_book(st_entry(1, key=["dragon"])).entries[0]  # replaced in place
    assert uids(run(book, chat("a dragon"))) == [1, 7]
    book.entries[0].key.append("dragon")  # edit inside a list: needs touch()
    book.touch()
    assert uids(run(book, chat("a dragon"))) == [0, 1, 7]


def test_sillytavern_quirk_whitespace_key_matches_anything():
    # SillyTavern trims the key to "" and finds "" in any text; an empty key never matches.
    book = make_book(st_entry(0, key=["  "]), st_entry(1, key=[""]))
    assert uids(run(book, chat("hello"))) == [0]
