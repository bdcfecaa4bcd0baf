"""Lorebooks made by SillyTavern, and our bundled one, activate what SillyTavern would.

Expected results follow SillyTavern's rules for the same messages, settings and tokenizer
(the tests count words as tokens, and use a context large enough that the budget is not the
question, except where a test says so).
"""

from __future__ import annotations

import json

from lore_helpers import BUNDLED, DATA, chat, rejected, run, uids

from tavern.lore import load_lorebook, lorebook_from_character_book
from tavern.lore.report import format_scan_report, scan_result_to_json


def eldoria():
    return load_lorebook(DATA / "Eldoria.json")


def seraphina():
    book = json.loads((DATA / "seraphina_character_book.json").read_text(encoding="utf-8"))
    return lorebook_from_character_book(book, "Seraphina's Lorebook")


def test_eldoria_whole_words():
    # "woods" is not the key "wood" with whole-word matching (SillyTavern's default).
    assert uids(run(eldoria(), chat(("User", "What lurks in these woods?")))) == []


def test_eldoria_monsters_pull_in_the_rest_by_recursion():
    result = run(eldoria(), chat(("Seraphina", "Rest now."), ("User", "Are there monsters out there?")))
    assert [a.uid for a in result.activated] == [1, 0, 2, 3]
    reasons = {a.uid: a.reason for a in result.activated}
    assert reasons[1] == 'key "monsters" matched in message -1'
    assert reasons[0] == 'key "forest" matched in recursion text of uid 1'
    assert reasons[3] == 'key "power" matched in recursion text of uid 1'
    assert uids(run(eldoria(), chat(("User", "Are there monsters?")), recursive=False)) == [1]


def test_eldoria_budget_keeps_the_first_entries():
    # Default budget of a 1024-token context is 256: entry 1 (146 words + 1 for the newline
    # SillyTavern appends) fits, the recursion step's first entry does not.
    result = run(eldoria(), chat(("User", "Are there monsters?")), context=1024)
    assert uids(result) == [1]
    assert rejected(result)[0].startswith("budget: would reach 256 tokens")


def test_seraphina_card_book_activates_like_the_world_file():
    messages = chat(("User", "Are there monsters out there?"))
    assert [a.uid for a in run(seraphina(), messages).activated] == [1, 0, 2, 3]
    assert [a.content for a in run(seraphina(), messages).activated] == [
        a.content for a in run(eldoria(), messages).activated
    ]


def test_v3_card_book_decorators_and_disabled_entries():
    book = lorebook_from_character_book(
        json.loads((DATA / "v3_character_book.json").read_text(encoding="utf-8")), "Kestrel crew"
    )
    result = run(book, chat(("User", "The Kestrel's cargo smells. Ask the cook.")))
    assert uids(result) == [0, 1]
    assert {a.uid: a.reason for a in result.activated}[1] == "@@activate decorator"
    assert rejected(result) == {2: "@@dont_activate decorator", 3: "disabled"}
    assert result.by_position()[4] == [(2, 1, "The bosun, Pell, has a voice that carries over any gale.")]


def test_bundled_saltmere_conversation():
    book = load_lorebook(BUNDLED / "saltmere.json")
    titles = {e.uid: e.comment for e in book.entries}
    lines = ["Evening, Mira! Is the Kestrel moored at the skydock tonight?"]
    first = run(book, chat(*lines), timed_state={}, seed=1)
    active = {titles[u] for u in uids(first)}
    assert {
        "The Brinewind Coast (always on)",
        "The Kestrel (skyship)",
        "The skydock",
        "Captain Ilse Varga",
    } <= active
    assert not any(t.startswith("Weather") for t in active)  # weather only from the chat

    lines += ["It is. Captain Varga came down an hour ago.", "What's the weather like? And supper?"]
    third = run(book, chat(*lines), timed_state=first.timed_state, seed=1)
    names = [titles[u] for u in uids(third)]
    assert sum(n.startswith("Weather") for n in names) == 1  # one winner of the group
    assert "Mira's kitchen" in names  # "supper" + secondary "Mira" (the speaker's name)
    kestrel = next(a for a in third.activated if a.comment == "The Kestrel (skyship)")
    assert kestrel.reason.startswith(("sticky", "key"))
    weather = next(a for a in third.activated if a.comment.startswith("Weather"))
    assert (weather.position, weather.depth) == (4, 2)


def test_report_and_json():
    result = run(eldoria(), chat(("User", "Are there monsters?")), context=1024)
    text = format_scan_report(result)
    assert "ACTIVATED" in text and "Eldoria#1" in text
    assert 'key "monsters" matched in message -1' in text
    assert "KEPT OUT" in text and "budget: would reach 256 tokens" in text
    data = scan_result_to_json(result)
    assert json.loads(json.dumps(data)) == data
    assert data["activated"][0]["uid"] == 1 and data["budget"] == 256
    assert data["rejected"][0]["reason"].startswith("budget")
