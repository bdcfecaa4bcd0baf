"""The needle workload of issue #28: a long chat of small talk that looks alike, with a few facts
said once each far outside the prompt window, and the questions a user asks about them later.

Shared by tests/memory/test_needle.py and benchmarks/bench_recall.py (which puts this folder on
sys.path), so the benchmark measures what the test asserts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CHAR = "Mira"
USER = "User"

WALKS = [
    "We walk on through the trees, talking about the weather and the long road ahead.",
    "We walk on under the trees, talking about the weather, the clouds and the wind.",
    "We keep walking through the trees and talk about the weather for a while.",
    "We walk on through the woods, chatting about the weather and the birds.",
    "We walk on between the trees, talking about the weather and where to rest tonight.",
    "The trees thin out a little as we walk on, still talking about the weather.",
    "We walk on through the trees; you say the weather might turn, and I agree.",
    "We walk on through the forest, talking about the rain that may come later.",
]
REPLIES = [
    "Yes, the weather looks fine for now. Let us keep walking.",
    "I think the clouds will clear soon. The trees give us some shade.",
    "The road is long, but the weather is kind to us today.",
    "I like walking under these trees. The wind is gentle.",
    "Maybe it will rain tonight. We should find a place to rest.",
    "The birds are loud this morning. The weather must be changing.",
]

DETAILS = [
    "The path is soft with old leaves.", "A crow calls somewhere to the left.",
    "The light is grey between the branches.", "Our boots are wet from the grass.",
    "The air smells of moss and pine.", "A stream runs somewhere nearby.",
    "The sun comes and goes behind the clouds.", "The wind moves the tops of the trees.",
]
"""Added to the small talk, so that no two filler messages are the same text (the index keeps
one chunk per distinct text): hundreds of distinct vectors that all look alike."""


@dataclass(frozen=True)
class Needle:
    said: str
    """The message that states the fact (said once, by the character)."""
    asked: str
    """The user's question about it, many messages later."""


NEEDLES = [
    Needle("My sister Ilvana lives in Dunmarrow, past the salt marshes, in a house with a red door.",
           "Where does your sister live?"),
    Needle("I keep the spare key to the tower hidden under the blue flowerpot by the gate.",
           "Where did you hide the spare key to the tower?"),
    Needle("My father was a lighthouse keeper on the isle of Carrow until the big storm.",
           "What did your father do for a living?"),
    Needle("I cannot eat honey; it makes my throat swell and I have to lie down.",
           "Is there any food you cannot eat?"),
    Needle("The old sword on my back was forged by a smith named Brannoc in the winter of the flood.",
           "Who forged your old sword?"),
]

NEWS = [
    f"{ask} from the {place}? {answer}"
    for ask in ("Any news", "Have you had any news", "Is there news", "What news")
    for place in ("village", "valley", "coast", "harbour", "mill", "market", "capital", "north")
    for answer in ("None yet; the messenger is late.", "I have heard nothing.", "No news this week.", "People say it is quiet.")
]
"""Small talk about news: the embedding of a question about news from someone finds these."""

RARE = Needle("Ilvana sent word with the carter: the harvest was thin this year.",
              "Any news from Ilvana?")
"""A rare name said once more: the question names her and little else."""


@dataclass(frozen=True)
class Message:
    index: int
    name: str
    is_user: bool
    text: str


def needle_chat(
    n: int = 600, seed: int = 5, needles: list[Needle] | None = None, news: bool = False
) -> tuple[list[Message], dict[str, int]]:
    """`n` messages of look-alike small talk (index 0 = the greeting slot: a filler reply) with
    each needle said once in the first half; returns the messages and needle text -> index.
    `news`: every other user message asks about news instead (the rare-name workload)."""
    rng = random.Random(seed)
    needles = NEEDLES if needles is None else needles
    places = sorted(rng.sample(range(20, n // 2, 2), len(needles)))  # even: the character's turns
    at = dict(zip(places, needles))
    out: list[Message] = []
    where: dict[str, int] = {}
    used: set[str] = set()
    for i in range(n):
        is_user = i % 2 == 1
        if i in at:
            text = at[i].said
            where[text] = i
        else:
            if news and i % 4 == 1:  # each of these is distinct already: no details to dilute it
                text = _distinct(rng, NEWS, used, details=False)
            else:
                text = _distinct(rng, WALKS if is_user else REPLIES, used)
        out.append(Message(i, USER if is_user else CHAR, is_user, text))
    return out, where


def _distinct(rng: random.Random, pool: list[str], used: set[str], details: bool = True) -> str:
    """A line of `pool` with one to three details, never given before."""
    while True:
        details_ = rng.sample(DETAILS, rng.choice((1, 2, 3))) if details else []
        text = " ".join([rng.choice(pool), *details_])
        if text not in used:
            used.add(text)
            return text
