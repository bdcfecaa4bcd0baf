"""Loop detection (tavern/loops.py) on real SmolLM2-135M replies and synthetic cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tavern.loops import (
    LoopLimits,
    ReplyLoopDetector,
    compare_replies,
    describe,
    find_in_reply_loop,
    words,
)

DATA = json.loads((Path(__file__).parents[1] / "data" / "smollm2_loops.json").read_text(encoding="utf-8"))
REAL = DATA["replies"]


@pytest.mark.parametrize("case", [c for c in REAL if c["label"] == "loop"], ids=lambda c: f"{c['character']}-{c['message']}")
def test_real_smollm2_run_ons_are_found_and_the_cut_keeps_one_copy(case: dict) -> None:
    found = find_in_reply_loop(case["reply"])
    assert found is not None
    kept = case["reply"][: found.cut]
    assert len(kept) <= len(case["reply"]) - 2 * len(found.unit)  # the repeated copies go
    assert kept.count(found.unit) == 1 or kept.endswith(found.unit)
    assert kept[-1] in ".!?", kept[-60:]  # ends on a sentence end, not mid-phrase
    assert find_in_reply_loop(kept) is None


@pytest.mark.parametrize("case", [c for c in REAL if c["label"] == "varied"], ids=lambda c: f"{c['character']}-{c['message']}")
def test_real_smollm2_replies_without_a_run_on_are_left_alone(case: dict) -> None:
    # These include "I'm happy, I'm happy, and I'm happy" and "they make money, they make money".
    assert find_in_reply_loop(case["reply"]) is None


@pytest.mark.parametrize("case", [c for c in REAL if c["label"] in ("near", "phrase")], ids=lambda c: f"{c['character']}-{c['message']}")
def test_a_phrase_written_three_times_apart_is_cut_before_the_third(case: dict) -> None:
    # Not back to back, so no run-on: "They were wearing a red suit, and they were wearing a red
    # hat. They were wearing a red suit..."; "a ship that can carry a million people" four times.
    reply = case["reply"]
    found = find_in_reply_loop(reply)
    assert found is not None and found.kind == "phrase"
    kept = reply[: found.cut]
    assert kept.casefold().count(found.unit.casefold()) == 2  # the third copy and what follows go
    assert kept[-1] in ".!?\"", kept[-60:]  # a whole sentence is kept, not half of one
    assert len(kept) >= len(reply) / 2  # the reply keeps its body
    assert find_in_reply_loop(kept) is None


def test_the_blacksmith_loop_is_trimmed_to_its_first_copy() -> None:
    reply = next(c["reply"] for c in REAL if "blacksmith" in c["reply"])
    found = find_in_reply_loop(reply)
    assert found is not None and found.kind == "phrase"
    assert found.unit == "He was a blacksmith, and he made swords."
    assert reply[: found.cut].endswith("he was wearing a sword. He was a blacksmith, and he made swords.")


@pytest.mark.parametrize(
    ("text", "kind", "kept"),
    [
        ("Hello aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "chars", "Hello aaa"),
        ("Well!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", "chars", "Well!!!"),
        ("Hahahahahahahahahahahahahahahahahahaha", "chars", "Haha"),
        ("Привет, привет. Да-да-да. Ну ну ну ну ну ну ну ну ну ну ну ну ну ну ну ну", "chars", None),
        ("Yes. " + "I will go. " * 6, "phrase", "Yes. I will go."),
        ("A\n" + "The end.\n" * 8, "phrase", "A\nThe end."),
    ],
)
def test_synthetic_spam(text: str, kind: str, kept: str | None) -> None:
    found = find_in_reply_loop(text)
    assert found is not None and found.kind == kind
    if kept is not None:
        assert text[: found.cut] == kept


@pytest.mark.parametrize(
    "text",
    [
        "No, no, no. I won't go.",
        "Very, very, very good.",
        "Ha! Ha ha. That's a good one.",
        "Wait... wait... wait. Listen.",
        "The sea is grey.\n\n\n\nThe sky is grey too.",
        "She counted: one, two, three, four, five, six, seven, eight, nine, ten.",
        "*Mira nods.* \"Aye.\" *She nods again.* \"Aye, that's right.\"",
    ],
)
def test_ordinary_emphasis_is_not_a_loop(text: str) -> None:
    assert find_in_reply_loop(text) is None


def test_the_detector_fires_while_streaming_and_stops_reading() -> None:
    detector = ReplyLoopDetector()
    fired_at = None
    deltas = ["He", " was", " a", " smith", "."] * 20
    for i, delta in enumerate(deltas):
        if detector.feed(delta) is not None:
            fired_at = i
            break
    assert fired_at is not None and fired_at < 20  # on the third copy, not at the end
    assert detector.feed(" more") is detector.found


_VOCAB = (
    "the a sea ship wind storm harbour lantern rope sail captain mira town night morning rain "
    "old young quiet loud dark bright cold warm she he they we walked said looked poured laughed "
    "opened closed waited under over near far beside through again slowly quickly never always "
    "and but because while when if then so of to in on at with from"
).split()


@st.composite
def prose(draw: st.DrawFn) -> str:
    """Varied prose: sentences of random words, no sentence twice."""
    sentences = draw(
        st.lists(st.lists(st.sampled_from(_VOCAB), min_size=4, max_size=14), min_size=1, max_size=12, unique_by=tuple)
    )
    out = []
    for ws in sentences:
        # a word never twice in a row: "the the" is itself a (tiny) repetition
        ws = [w for i, w in enumerate(ws) if i == 0 or w != ws[i - 1]]
        out.append(" ".join(ws).capitalize() + draw(st.sampled_from([".", "!", "?", ",", "\n"])))
    return " ".join(out)


@settings(max_examples=50, deadline=None)
@given(prose())
def test_varied_prose_is_never_flagged(text: str) -> None:
    assert find_in_reply_loop(text) is None


@settings(max_examples=50, deadline=None)
@given(prose(), prose(), prose())
def test_unrelated_replies_do_not_repeat_each_other(a: str, b: str, c: str) -> None:
    if words(a)[:5] in (words(b)[:5], words(c)[:5]):
        return  # the same opening by chance is a real (if accidental) repetition
    result = compare_replies(a, [b, c])
    assert "ngrams" not in result.reasons or result.overlap >= 0.3
    assert "opening" not in result.reasons


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=400), st.lists(st.integers(1, 30), min_size=1, max_size=40))
def test_any_chunking_finds_the_same_loop(text: str, sizes: list[int]) -> None:
    text = text + " " + "oh my word. " * 5
    whole = find_in_reply_loop(text)
    detector = ReplyLoopDetector()
    i = 0
    k = 0
    while i < len(text) and detector.found is None:
        n = sizes[k % len(sizes)]
        detector.feed(text[i : i + n])
        i, k = i + n, k + 1
    streamed = detector.found or detector.feed("\n")
    assert (whole is None) == (streamed is None)
    if whole is not None:
        assert streamed is not None and streamed.cut == whole.cut


def test_a_reply_that_repeats_the_opening_of_a_recent_one() -> None:
    earlier = [
        "Aye, the sea is calm tonight, and the gulls are quiet.",
        "Well, I never. Sit down.",
    ]
    result = compare_replies("Aye, the sea is calm tonight, but the wind rises.", earlier)
    assert result.reasons == ["opening"]
    assert result.opening == "Aye, the sea is calm"
    assert not compare_replies("Aye, the wind rises tonight.", earlier)


def test_a_reply_that_copies_long_stretches_of_an_earlier_one() -> None:
    earlier = ["The Kestrel is a light cargo skyship with a crew of seven, and she runs mail and medicine north."]
    reply = "I told you. The Kestrel is a light cargo skyship with a crew of seven, and she runs mail and medicine north."
    result = compare_replies(reply, earlier)
    assert result.reasons == ["ngrams"] and result.overlap > 0.5


def test_a_post_template_three_times_in_a_row() -> None:
    template = "*Mira {0}.*\n\"{1}\"\n*She {2}.*"
    earlier = [
        template.format("wipes the bar", "Stew's hot tonight, friend.", "smiles"),
        template.format("pours a cider", "The storm kept the boats in.", "shrugs"),
    ]
    reply = template.format("looks at the door", "Someone's coming up the hill.", "frowns")
    assert compare_replies(reply, earlier).reasons == ["structure"]
    assert not compare_replies(reply, earlier[-1:])  # two posts alike are not yet a template
    assert not compare_replies("A single line of speech.", ["Another line.", "And one more."])


def test_history_limit_only_looks_at_the_last_replies() -> None:
    old = "Aye, the sea is calm tonight, friend."
    assert compare_replies(old, [old, "b c d e f", "g h i j k", "l m n o p"], LoopLimits(history=3)).reasons == []


def test_describe_says_what_was_done() -> None:
    assert describe({}) == ""
    text = describe({"in_reply": {"unit": "He was a blacksmith, and he made swords."}})
    assert text.startswith("loop: stopped a run-on") and "blacksmith" in text
    text = describe({"across": {"reasons": ["opening"]}, "regenerated": True, "still_repeats": False})
    assert text == "loop: reply repeated the last ones (opening): regenerated with DRY"
    text = describe({"across": {"reasons": ["ngrams"]}, "regenerated": True, "dropped_chars": 80})
    assert text == "loop: reply repeated the last ones (ngrams): regenerated with DRY, dropped the sentences it still copied"


# Mira's replies on SmolLM2-135M at temperature 0 (the Loops benchmark's third chat).
MIRA_LAST = (
    "I've lost some good people, and I've lost a lot of good people. I've lost a couple of my own family "
    "members, and I've lost a lot of friends."
)
MIRA_OTHER = "I've been doing this job for a long time now."


def test_a_rewrite_that_still_copies_the_last_reply_loses_the_copied_sentences() -> None:
    from tavern.loops import drop_copied

    rewrite = MIRA_OTHER + "\nI've lost a couple of my own family members, and I've lost a lot of friends."
    assert "ngrams" in compare_replies(rewrite, [MIRA_LAST]).reasons
    kept = drop_copied(rewrite, [MIRA_LAST])
    assert kept == MIRA_OTHER
    assert not compare_replies(kept, [MIRA_LAST])
    # Nothing copied: unchanged; everything copied: unchanged too (an empty reply is worse).
    assert drop_copied(MIRA_OTHER, [MIRA_LAST]) == MIRA_OTHER
    assert drop_copied(MIRA_LAST, [MIRA_LAST]) == MIRA_LAST
