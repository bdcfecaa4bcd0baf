"""Recursion (content activating other entries) and inclusion groups, SillyTavern's way."""

from __future__ import annotations

from lore_helpers import chat, make_book, rejected, run, st_entry, uids

from tavern.lore import Lorebook


def chain(**flags_by_uid):
    """alpha -> mentions beta -> mentions gamma."""
    entries = [
        st_entry(0, key=["alpha"], content="Alpha knows beta.", order=300),
        st_entry(1, key=["beta"], content="Beta fears gamma.", order=200),
        st_entry(2, key=["gamma"], content="Gamma.", order=100),
    ]
    for uid, flags in flags_by_uid.items():
        entries[int(uid[1:])].update(flags)
    return make_book(*entries)


def test_recursion_activates_entries_named_in_activated_content():
    result = run(chain(), chat("tell me about alpha"))
    assert uids(result) == [0, 1, 2]
    reasons = {a.uid: a.reason for a in result.activated}
    assert reasons[1] == 'key "beta" matched in recursion text of uid 0'
    assert [a.uid for a in result.activated] == [0, 1, 2]  # activation order


def test_recursion_off():
    assert uids(run(chain(), chat("alpha"), recursive=False)) == [0]


def test_prevent_recursion_stops_the_chain_there():
    assert uids(run(chain(u1={"preventRecursion": True}), chat("alpha"))) == [0, 1]
    assert uids(run(chain(u0={"preventRecursion": True}), chat("alpha"))) == [0]


def test_exclude_recursion_only_lets_the_chat_activate_it():
    book = chain(u1={"excludeRecursion": True})
    result = run(book, chat("alpha"))
    assert uids(result) == [0]
    assert rejected(result)[1] == "excluded from recursion (only the chat can activate it)"
    assert uids(run(book, chat("alpha and beta"))) == [0, 1, 2]


def test_max_recursion_steps():
    assert uids(run(chain(), chat("alpha"), max_recursion_steps=2)) == [0, 1]
    assert uids(run(chain(), chat("alpha"), max_recursion_steps=1)) == [0]
    assert uids(run(chain(), chat("alpha"), max_recursion_steps=0)) == [0, 1, 2]


def test_delay_until_recursion_levels():
    book = make_book(
        st_entry(0, key=["alpha"], content="Alpha."),
        st_entry(1, key=["beta"], content="Beta.", delayUntilRecursion=1),
        st_entry(2, key=["gamma"], content="Gamma.", delayUntilRecursion=2),
    )
    # With one level: nothing activates in the first step to start a recursion, so level 1
    # is never reached.
    one_level = Lorebook("world", [e for e in book.entries if e.uid != 2])
    only_beta = run(one_level, chat("beta"))
    assert uids(only_beta) == []
    assert rejected(only_beta)[1] == "delayed until recursion level 1"
    # A pending higher level gets its own step even then (SillyTavern's loop), and in it
    # every lower level may fire.
    assert uids(run(book, chat("beta"))) == [1]
    # alpha starts a recursion step: beta (level 1) fires in it from the chat text; when
    # nothing more comes, the loop opens level 2 and gamma fires.
    result = run(book, chat("alpha beta gamma"))
    assert [a.uid for a in result.activated] == [0, 1, 2]


def test_delay_until_recursion_true_means_level_one():
    book = make_book(
        st_entry(0, key=["alpha"], content="Alpha."),
        st_entry(1, key=["beta"], content="Beta.", delayUntilRecursion=True),
    )
    assert uids(run(book, chat("alpha beta"))) == [0, 1]


# --- inclusion groups ----------------------------------------------------------------------


def test_group_weight_decides_the_winner():
    book = make_book(
        st_entry(0, key=["weather"], group="weather", groupWeight=0, content="Fog."),
        st_entry(1, key=["weather"], group="weather", groupWeight=100, content="Sun."),
    )
    for seed in range(10):
        result = run(book, chat("how is the weather"), seed=seed)
        assert uids(result) == [1]
        assert rejected(result)[0] == 'lost inclusion group "weather" to uid 1 (weighted roll)'


def test_group_roll_is_seeded_and_picks_one():
    book = make_book(*(st_entry(i, key=["weather"], group="weather") for i in range(3)))
    winners = [uids(run(book, chat("weather"), seed=seed)) for seed in range(30)]
    assert all(len(w) == 1 for w in winners)
    assert len({w[0] for w in winners}) == 3
    assert winners == [uids(run(book, chat("weather"), seed=seed)) for seed in range(30)]


def test_group_override_highest_order_wins():
    book = make_book(
        st_entry(0, key=["x"], group="g", groupOverride=True, order=50),
        st_entry(1, key=["x"], group="g", groupOverride=True, order=80),
        st_entry(2, key=["x"], group="g", order=200),
    )
    result = run(book, chat("x"))
    assert uids(result) == [1]
    assert rejected(result)[2] == 'lost inclusion group "g" to uid 1 (group override)'


def test_group_scoring_keeps_the_best_match():
    book = make_book(
        st_entry(0, key=["dragon"], group="g", order=300),
        st_entry(1, key=["dragon", "cave"], group="g"),
    )
    result = run(book, chat("a dragon in a cave"), group_scoring=True)
    assert uids(result) == [1]
    assert rejected(result)[0] == 'lost inclusion group "g" on score (1 < 2)'
    # Per entry: only scored entries can lose on score.
    per_entry = make_book(
        st_entry(0, key=["dragon"], group="g", useGroupScoring=True, order=300),
        st_entry(1, key=["dragon", "cave"], group="g", useGroupScoring=True),
    )
    assert uids(run(per_entry, chat("a dragon in a cave"))) == [1]


def test_entry_in_two_groups():
    book = make_book(
        st_entry(0, key=["x"], group="a, b", groupOverride=True, order=300, content="Zero."),
        st_entry(1, key=["x"], group="a"),
        st_entry(2, key=["x"], group="b"),
        st_entry(3, key=["x"], group="c"),
    )
    assert uids(run(book, chat("x"), recursive=False)) == [0, 3]
    # SillyTavern's "group already active" test compares the whole `group` text ("a, b" is
    # not "a"), so in the recursion step the two losers come back, and win.
    assert uids(run(book, chat("x"))) == [0, 1, 2, 3]


def test_group_already_filled_in_an_earlier_step():
    book = make_book(
        st_entry(0, key=["alpha"], group="g", content="Alpha meets beta."),
        st_entry(1, key=["beta"], group="g", content="Beta."),
    )
    result = run(book, chat("alpha"))
    assert uids(result) == [0]
    assert rejected(result)[1] == 'inclusion group "g" already active (uid 0)'


def test_sticky_member_keeps_its_group():
    book = make_book(
        st_entry(0, key=["fog"], group="weather", sticky=3, content="Fog."),
        st_entry(1, key=["sun"], group="weather", groupOverride=True, content="Sun."),
    )
    first = run(book, chat("fog"), chat_length=1)
    assert uids(first) == [0]
    second = run(book, chat("fog", "sun now"), chat_length=2, timed_state=first.timed_state)
    assert uids(second) == [0]
    assert rejected(second)[1] == 'lost inclusion group "weather" to sticky uid 0'
