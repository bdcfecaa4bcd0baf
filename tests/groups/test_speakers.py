"""Who speaks next: SillyTavern's natural, list, pooled and manual orders, swipes, and muting."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from tavern.groups.model import ActivationStrategy, Group
from tavern.groups.speakers import (
    Member,
    Spoken,
    Turn,
    activation,
    choose_speakers,
    extract_words,
    talkativeness_of,
)

MIRA = Member("Mira.png", "Mira", 0.5)
VANCE = Member("Captain Vance.png", "Captain Vance", 0.5)
TOM = Member("Old Tom.png", "Old Tom", 0.5)
CREW = [MIRA, VANCE, TOM]


def group(strategy: int = ActivationStrategy.NATURAL, members: Sequence[Member] = CREW,
          muted: Sequence[Member] = (), allow_self: bool = False) -> Group:
    return Group({
        "id": "1", "name": "Crew", "members": [m.avatar for m in members], "chat_id": "c", "chats": ["c"],
        "disabled_members": [m.avatar for m in muted], "activation_strategy": int(strategy),
        "allow_self_responses": allow_self,
    })


def said(member: Member, text: str = "...") -> Spoken:
    return Spoken(member.name, is_user=False, original_avatar=member.avatar, mes=text)


def user(text: str) -> Spoken:
    return Spoken("You", is_user=True, mes=text)


def pick(g: Group, members: Sequence[Member], history: Sequence[Spoken], text: str, seed: int,
         *, is_user_input: bool = True, **options: object) -> list[str]:
    return choose_speakers(g, members, history, text, random.Random(seed), is_user_input=is_user_input,
                           **options)


def quiet(member: Member) -> Member:
    return Member(member.avatar, member.name, 0.0)


# -- natural order ----------------------------------------------------------------------------
def test_a_member_named_in_the_message_speaks_first() -> None:
    for seed in range(50):
        assert pick(group(), CREW, [], "Tom, what do you make of the sails?", seed)[0] == TOM.avatar


def test_names_are_whole_words_in_any_case_and_any_word_of_a_name_counts() -> None:
    silent = [quiet(m) for m in CREW]
    assert pick(group(), silent, [], "VANCE! And mira.", 1)[:2] == [VANCE.avatar, MIRA.avatar]
    assert pick(group(), silent, [], "old-timers", 1) == [TOM.avatar]  # "old" is a word of "Old Tom"
    # "Miranda" is not "Mira": nobody is named, so the fallback picks one at random.
    hits = Counter(pick(group(), silent, [], "Miranda waves", seed)[0] for seed in range(200))
    assert set(hits) == {m.avatar for m in CREW}


def test_sillytavern_words_are_ascii_so_a_cyrillic_name_is_never_named_unless_asked() -> None:
    sera = Member("Sera.png", "Сера", 0.0)
    members = [quiet(MIRA), sera]
    g = group(members=members)
    assert extract_words("Сера, привет") == []
    assert Counter(pick(g, members, [], "Сера, привет", s)[0] for s in range(100))[MIRA.avatar] > 20
    assert pick(g, members, [], "Сера, привет", 3, ascii_words=False) == [sera.avatar]


def test_talkativeness_one_always_speaks_and_zero_never_unless_named() -> None:
    members = [Member(MIRA.avatar, "Mira", 1.0), Member(VANCE.avatar, "Captain Vance", 0.0), TOM]
    for seed in range(100):
        chosen = pick(group(), members, [], "The tide turns.", seed)
        assert MIRA.avatar in chosen and VANCE.avatar not in chosen
    assert VANCE.avatar in pick(group(), members, [], "Captain?", 7)


def test_nobody_chosen_falls_back_to_exactly_one_random_member() -> None:
    silent = [quiet(m) for m in CREW]
    firsts = Counter()
    for seed in range(300):
        chosen = pick(group(), silent, [], "Hello", seed)
        assert len(chosen) == 1
        firsts[chosen[0]] += 1
    assert set(firsts) == {m.avatar for m in CREW} and min(firsts.values()) > 50


def test_the_fallback_prefers_members_who_ever_talk() -> None:
    members = [quiet(MIRA), quiet(VANCE), Member(TOM.avatar, "Old Tom", 0.000001)]
    assert {pick(group(), members, [], "Hello", s)[0] for s in range(100)} == {TOM.avatar}


def test_the_last_speaker_does_not_answer_themself_without_self_responses() -> None:
    history = [user("Hi"), said(MIRA, "Mira here.")]
    chatty = [Member(m.avatar, m.name, 1.0) for m in CREW]
    for seed in range(100):
        text, from_user = activation("", history, by_auto_mode=True)
        assert text == "Mira here." and not from_user
        assert MIRA.avatar not in pick(group(), chatty, history, text, seed, is_user_input=False)
        # ...not even when the text names them.
        assert MIRA.avatar not in pick(group(), chatty, history, "Mira?", seed, is_user_input=False)
    assert MIRA.avatar in pick(group(allow_self=True), chatty, history, "", 1, is_user_input=False)
    # The user's new message in between lifts the ban.
    assert MIRA.avatar in pick(group(), chatty, history, "Mira, again?", 1, is_user_input=True)


def test_the_draws_come_in_sillytavern_order() -> None:
    class Scripted(random.Random):
        def __init__(self, values: list[float]) -> None:
            super().__init__(0)
            self.values = values

        def random(self) -> float:
            return self.values.pop(0)

    # Three draws shuffle [Mira, Vance, Tom] into [Vance, Tom, Mira] (Fisher-Yates from the end),
    # then one roll each in that order against talkativeness 0.5: 0.9 no, 0.1 yes, 0.4 yes.
    rng = Scripted([0.0, 0.0, 0.0, 0.9, 0.1, 0.4])
    assert choose_speakers(group(), CREW, [], "", rng, is_user_input=True) == [TOM.avatar, MIRA.avatar]
    assert rng.values == []


def test_the_same_seed_gives_the_same_speakers() -> None:
    runs = {tuple(pick(group(), CREW, [], "Hello all", 42)) for _ in range(5)}
    assert len(runs) == 1


# -- muting, list, manual, pooled ---------------------------------------------------------------
@pytest.mark.parametrize("strategy", list(ActivationStrategy))
def test_a_muted_member_never_speaks_even_when_named(strategy: ActivationStrategy) -> None:
    g = group(strategy, muted=[TOM])
    chatty = [Member(m.avatar, m.name, 1.0) for m in CREW]
    history = [user("Hi"), said(MIRA), said(VANCE)]
    for seed in range(60):
        for from_user in (True, False):
            assert TOM.avatar not in pick(g, chatty, history, "Tom! Old Tom!", seed, is_user_input=from_user)


def test_all_members_muted_means_no_reply() -> None:
    assert pick(group(muted=CREW), CREW, [], "Mira?", 1) == []
    assert pick(group(ActivationStrategy.LIST, muted=CREW), CREW, [], "", 1) == []


def test_list_order_is_every_unmuted_member_in_list_order() -> None:
    g = group(ActivationStrategy.LIST, members=[TOM, MIRA, VANCE], muted=[MIRA])
    for seed in range(10):
        assert pick(g, CREW, [], "Mira!", seed) == [TOM.avatar, VANCE.avatar]


def test_a_member_without_a_card_is_skipped() -> None:
    assert pick(group(ActivationStrategy.LIST), [MIRA, TOM], [], "", 1) == [MIRA.avatar, TOM.avatar]


def test_manual_waits_for_the_user_and_picks_one_on_auto() -> None:
    g = group(ActivationStrategy.MANUAL)
    assert pick(g, CREW, [], "Anyone?", 1, is_user_input=True) == []
    picks = {tuple(pick(g, CREW, [], "", s, is_user_input=False)) for s in range(100)}
    assert picks == {(m.avatar,) for m in CREW}


def test_pooled_order_gives_everyone_a_turn_before_anyone_twice() -> None:
    g = group(ActivationStrategy.POOLED, members=[MIRA, VANCE, TOM, Member("Nell.png", "Nell")])
    cards = [MIRA, VANCE, TOM, Member("Nell.png", "Nell")]
    for seed in range(20):
        rng = random.Random(seed)
        history: list[Spoken] = []
        for _round in range(3):
            history.append(user("What now?"))
            spoken: list[str] = []
            for turn in range(6):
                chosen = choose_speakers(g, cards, history, history[-1].mes, rng, is_user_input=turn == 0)
                assert len(chosen) == 1
                spoken.append(chosen[0])
                history.append(said(next(c for c in cards if c.avatar == chosen[0])))
            assert sorted(spoken[:4]) == sorted(c.avatar for c in cards)  # each once first
            assert all(a != b for a, b in zip(spoken, spoken[1:]))  # then never the last again


def test_pooled_order_skips_muted_members_and_system_messages() -> None:
    g = group(ActivationStrategy.POOLED, muted=[TOM])
    history = [user("Hi"), said(MIRA), Spoken("System", is_user=False, is_system=True, original_avatar=VANCE.avatar)]
    for seed in range(30):
        assert pick(g, CREW, history, "", seed, is_user_input=False) == [VANCE.avatar]


# -- swipes, continues, impersonation, forcing ---------------------------------------------------
def test_a_swipe_or_continue_goes_to_whoever_wrote_the_last_message() -> None:
    history = [user("Hi"), said(VANCE), said(MIRA)]
    for turn in (Turn.SWIPE, Turn.CONTINUE):
        assert pick(group(muted=[MIRA]), CREW, history, "", 1, turn=turn) == [MIRA.avatar]
    # After the user's message, the last character who spoke before it.
    assert pick(group(), CREW, [*history, user("Go on")], "", 1, turn=Turn.SWIPE) == [MIRA.avatar]
    # A chat from before original_avatar: the member with the message's name.
    assert pick(group(), CREW, [Spoken("Old Tom", is_user=False)], "", 1, turn=Turn.SWIPE) == [TOM.avatar]


def test_impersonation_borrows_any_member_muted_ones_included() -> None:
    g = group(muted=[TOM])
    seen = {tuple(pick(g, CREW, [], "", s, turn=Turn.IMPERSONATE)) for s in range(100)}
    assert seen == {(m.avatar,) for m in CREW}


def test_forcing_a_member_makes_exactly_that_one_speak_even_muted() -> None:
    assert pick(group(muted=[TOM]), CREW, [], "Mira!", 1, force=TOM.avatar) == [TOM.avatar]


def test_an_empty_group_or_an_unknown_strategy_means_no_reply() -> None:
    assert pick(group(members=[]), CREW, [], "Hi", 1) == []
    assert pick(group(strategy=7), CREW, [], "Mira", 1) == []


# -- reading the inputs -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("card", "value"),
    [
        ({"spec": "chara_card_v2", "data": {"extensions": {"talkativeness": "0.8"}}}, 0.8),
        ({"spec": "chara_card_v2", "data": {"extensions": {}}}, 0.5),
        ({"spec": "chara_card_v3", "data": {"extensions": {"talkativeness": ""}}}, 0.0),
        ({"spec": "chara_card_v2", "data": {"extensions": {"talkativeness": None}}}, 0.0),
        ({"spec": "chara_card_v2", "data": {"extensions": {"talkativeness": "often"}}}, 0.5),
        ({"spec": "chara_card_v2", "talkativeness": "0.9", "data": {"extensions": {"talkativeness": "0.1"}}}, 0.1),
        ({"spec": "chara_card_v2", "talkativeness": "0.3"}, 0.3),  # no data: the top-level copy
        ({"name": "V1 card", "talkativeness": "1"}, 1.0),
        ({"name": "V1 card"}, 0.5),
    ],
)
def test_talkativeness_is_read_from_the_card_as_sillytavern_reads_it(card: dict[str, object], value: float) -> None:
    assert talkativeness_of(card) == value


def test_the_activating_text_is_the_users_or_else_the_last_message() -> None:
    history = [user("Hi"), said(MIRA, "Welcome aboard.")]
    assert activation("Tom?", history) == ("Tom?", True)
    assert activation("", history) == ("Welcome aboard.", False)
    assert activation("Tom?", history, by_auto_mode=True) == ("Welcome aboard.", False)
    assert activation("", [Spoken("System", is_user=False, is_system=True, mes="x")]) == ("", False)


def test_a_message_line_becomes_a_spoken_message() -> None:
    line = {"name": "Mira", "is_user": False, "original_avatar": "Mira.png", "mes": "Ahoy", "extra": {"type": "narrator"}}
    assert Spoken.from_message(line) == Spoken("Mira", False, False, "Mira.png", True, "Ahoy")
