"""Tavern's cache-aware lore mode: an entry that stops firing lingers in the prompt for a few
messages, so lore that flickers on and off leaves the prompt unchanged."""

from __future__ import annotations

from lore_helpers import chat, make_book, rejected, run, st_entry, uids


class Chat:
    def __init__(self, book, **settings):
        self.book = book
        self.lines: list[str] = []
        self.state: dict = {}
        self.settings = {"scan_depth": 1, **settings}

    def turn(self, text: str):
        self.lines.append(text)
        result = run(self.book, chat(*self.lines), timed_state=self.state, **self.settings)
        self.state = result.timed_state
        return result


FLICKER = ["the storm", "quiet", "the storm", "quiet", "quiet", "the storm", "quiet"]


def test_default_mode_flickers_as_sillytavern_does():
    talk = Chat(make_book(st_entry(0, key=["storm"])))
    assert [uids(talk.turn(t)) for t in FLICKER] == [[0], [], [0], [], [], [0], []]
    assert "tavernLinger" not in talk.state


def test_cache_aware_mode_keeps_a_flickering_entry_in():
    talk = Chat(make_book(st_entry(0, key=["storm"])), cache_aware_linger=3)
    results = [talk.turn(t) for t in FLICKER]
    assert [uids(r) for r in results] == [[0]] * len(FLICKER)
    assert results[1].activated[0].reason == "cache-aware: lingers until message 4"
    assert results[2].activated[0].reason.startswith('key "storm"')  # firing again refreshes it
    assert talk.state["tavernLinger"]["world.0"] == {"start": 6, "end": 9}


def test_an_entry_that_stops_firing_leaves_after_linger_messages():
    talk = Chat(make_book(st_entry(0, key=["storm"])), cache_aware_linger=2)
    assert [uids(talk.turn(t)) for t in ["storm", "a", "b", "c"]] == [[0], [0], [], []]
    assert talk.state["tavernLinger"] == {}


def test_lingering_respects_the_rules_that_keep_an_entry_out():
    book = make_book(st_entry(0, key=["bell"], cooldown=3), st_entry(1, key=["fog"], probability=1))
    talk = Chat(book, cache_aware_linger=4)
    assert uids(talk.turn("bell")) == [0]
    second = talk.turn("quiet")
    assert uids(second) == []  # its own cooldown wins over lingering
    assert rejected(second) == {}
    # A lingering entry is in the prompt already: no new probability roll that would drop it.
    fog = make_book(st_entry(1, key=["fog"], probability=50))
    won = next(seed for seed in range(40) if uids(run(fog, chat("fog"), seed=seed, scan_depth=1)))
    state = run(fog, chat("fog"), seed=won, scan_depth=1, cache_aware_linger=4).timed_state
    later = chat("fog", "quiet")
    lost = [seed for seed in range(20) if not uids(run(fog, later[:1], seed=seed, scan_depth=1))]
    assert lost  # without lingering, some rolls drop it
    for seed in lost:
        assert uids(run(fog, later, timed_state=state, seed=seed, scan_depth=1, cache_aware_linger=4)) == [1]


def test_a_disabled_entry_does_not_linger():
    talk = Chat(make_book(st_entry(0, key=["storm"])), cache_aware_linger=4)
    assert uids(talk.turn("storm")) == [0]
    talk.book.entries[0].disable = True
    from tavern.lore import index as lore_index

    if hasattr(lore_index, "_CACHE"):
        lore_index._CACHE.clear()
    assert uids(talk.turn("quiet")) == []


def test_turning_the_mode_off_ignores_its_state():
    talk = Chat(make_book(st_entry(0, key=["storm"])), cache_aware_linger=4)
    talk.turn("storm")
    talk.settings["cache_aware_linger"] = 0
    assert uids(talk.turn("quiet")) == []
    assert "world.0" in talk.state["tavernLinger"]  # kept, unused, for when it is on again
