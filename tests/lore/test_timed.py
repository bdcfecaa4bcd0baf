"""Sticky, cooldown and delay over several turns, with the timed state persisted between them
as SillyTavern keeps it in `chat_metadata.timedWorldInfo`."""

from __future__ import annotations

import copy

from lore_helpers import chat, make_book, rejected, run, st_entry, uids


class Chat:
    """A growing chat: each `turn` adds a message and scans with the persisted state."""

    def __init__(self, book):
        self.book = book
        self.lines: list[str] = []
        self.state: dict = {}

    def turn(self, text: str):
        self.lines.append(text)
        result = run(self.book, chat(*self.lines), timed_state=self.state, scan_depth=1)
        self.state = result.timed_state
        return result


def test_sticky_stays_for_its_messages_then_ends():
    talk = Chat(make_book(st_entry(0, key=["storm"], sticky=2, content="A storm rages.")))
    first = talk.turn("a storm is coming")
    assert uids(first) == [0]
    effect = first.timed_state["sticky"]["world.0"]
    assert (effect["start"], effect["end"], effect["protected"]) == (1, 3, False)
    second = talk.turn("what now?")
    assert uids(second) == [0]
    assert second.activated[0].reason == "sticky (until message 3)"
    assert uids(talk.turn("and now?")) == []
    assert talk.state["sticky"] == {}


def test_cooldown_blocks_reactivation():
    talk = Chat(make_book(st_entry(0, key=["bell"], cooldown=2)))
    assert uids(talk.turn("the bell rings")) == [0]
    blocked = talk.turn("the bell again")
    assert uids(blocked) == []
    assert rejected(blocked)[0] == "cooldown until message 3"
    assert uids(talk.turn("the bell once more")) == [0]


def test_sticky_then_cooldown():
    talk = Chat(make_book(st_entry(0, key=["bell"], sticky=2, cooldown=2)))
    assert uids(talk.turn("bell")) == [0]  # 1: sticky until 3, cooldown until 3
    assert uids(talk.turn("bell")) == [0]  # 2: sticky wins over its own cooldown
    third = talk.turn("bell")  # 3: sticky ends, a protected cooldown starts until 5
    assert uids(third) == []
    assert rejected(third)[0] == "cooldown until message 5"
    assert talk.state["cooldown"]["world.0"]["protected"] is True
    assert uids(talk.turn("bell")) == []  # 4
    assert uids(talk.turn("bell")) == [0]  # 5


def test_delay_waits_for_the_chat_to_grow():
    talk = Chat(make_book(st_entry(0, key=["ghost"], delay=3)))
    assert rejected(talk.turn("a ghost?"))[0] == "delay: chat shorter than 3 messages"
    assert uids(talk.turn("a ghost!")) == []
    assert uids(talk.turn("the ghost")) == [0]


def test_regenerating_a_turn_decides_again():
    # A swipe/regenerate scans the same chat length again: SillyTavern drops the unprotected
    # effect it set at this length, so the sticky entry must be triggered anew.
    book = make_book(st_entry(0, key=["storm"], sticky=3))
    first = run(book, chat("storm"), timed_state={})
    again = run(book, chat("calm"), timed_state=first.timed_state)
    assert uids(again) == []
    assert "world.0" not in again.timed_state["sticky"]


def test_input_state_is_not_modified_and_unknown_keys_survive():
    book = make_book(st_entry(0, key=["storm"], sticky=3))
    state = {"sticky": {}, "cooldown": {}, "other": {"x": 1}}
    before = copy.deepcopy(state)
    result = run(book, chat("storm"), timed_state=state)
    assert state == before
    assert result.timed_state["other"] == {"x": 1}
    assert set(result.timed_state["sticky"]) == {"world.0"}


def test_effect_of_an_edited_or_missing_entry_expires():
    book = make_book(st_entry(0, key=["storm"], sticky=5))
    state = run(book, chat("storm"), chat_length=1).timed_state
    book.entries[0].content = "Changed."  # a different entry now: the old effect is not its
    result = run(book, chat("calm"), chat_length=2, timed_state=state)
    assert uids(result) == []
    later = run(book, chat("calm"), chat_length=6, timed_state=result.timed_state)
    assert later.timed_state["sticky"] == {}
