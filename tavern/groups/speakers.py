"""Who speaks next in a group chat, by SillyTavern's rules (public/scripts/group-chats.js).

`choose_speakers` is `generateGroupWrapper`'s choice of `activatedMembers`, as a pure function:
the group, the cards of its members (`Member`: avatar file name, name, talkativeness), the chat
so far (`Spoken`), the activating text and a `random.Random`. Every random draw is made in the
order SillyTavern makes its `Math.random()` calls, so a seeded generator gives one answer.

The rules, in SillyTavern's order of precedence:

- no members at all: nobody (ST posts its "empty group" notice);
- a forced member (the member list's "speak" button, `/trigger`): that one, even when muted;
- quiet generation: the last character who spoke (system messages count), else the first member;
- swipe and continue: the speaker of the last message (`activateSwipe`);
- impersonate: one member at random, muted ones included (only their card frames the reply);
- otherwise the group's activation strategy, over its unmuted members:
  natural (`activateNaturalOrder`), list (`activateListOrder`), pooled (`activatePooledOrder`),
  manual (one random member when the turn was not started by the user's text, else nobody).

Nobody chosen means the user's message is posted with no reply, as in SillyTavern.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from tavern.groups.jsvalues import js_number
from tavern.groups.model import ActivationStrategy, Group

TALKATIVENESS_DEFAULT = 0.5
"""script.js `talkativeness_default`: a card without the setting speaks half the time."""
NARRATOR = "narrator"
"""`extra.type` of a /sys narrator message (`system_message_types.NARRATOR`)."""

_ASCII_WORD = re.compile(r"\w+", re.ASCII)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Member:
    """A group member's card, as far as choosing speakers goes."""

    avatar: str
    """The card's file name (`Mira.png`): what `members` and `original_avatar` hold."""
    name: str
    talkativeness: float = TALKATIVENESS_DEFAULT


@dataclass(frozen=True)
class Spoken:
    """A chat message, as far as choosing speakers goes."""

    name: str
    is_user: bool
    is_system: bool = False
    original_avatar: str = ""
    """The card file name of the character who wrote it (group chats set it on every reply)."""
    is_narrator: bool = False
    mes: str = ""

    @classmethod
    def from_message(cls, message: Mapping[str, object]) -> Spoken:
        """From a chat line as SillyTavern writes it."""
        extra = message.get("extra")
        avatar = message.get("original_avatar")
        text = message.get("mes")
        name = message.get("name")
        return cls(
            name=name if isinstance(name, str) else "",
            is_user=bool(message.get("is_user")),
            is_system=bool(message.get("is_system")),
            original_avatar=avatar if isinstance(avatar, str) else "",
            is_narrator=isinstance(extra, dict) and extra.get("type") == NARRATOR,
            mes=text if isinstance(text, str) else "",
        )


class Turn(StrEnum):
    """The kind of generation (ST's `type`); anything else, auto mode included, is NORMAL."""

    NORMAL = "normal"
    SWIPE = "swipe"
    CONTINUE = "continue"
    QUIET = "quiet"
    IMPERSONATE = "impersonate"


def talkativeness_of(card: Mapping[str, object]) -> float:
    """A card's talkativeness as SillyTavern reads it (characters.js `readFromV2`, then
    group-chats.js `isNaN(x) ? 0.5 : Number(x)`): a V2/V3 card's `data.extensions.talkativeness`
    (a string such as "0.5"; missing is 0.5), a V1 card's top-level `talkativeness`. So "" and
    null are 0 and "often" is 0.5."""
    if "spec" in card and "data" in card:
        data = card["data"]
        extensions = data.get("extensions") if isinstance(data, dict) else None
        if not isinstance(extensions, dict) or "talkativeness" not in extensions:
            return TALKATIVENESS_DEFAULT
        return parse_talkativeness(extensions["talkativeness"])
    if "talkativeness" not in card:
        return TALKATIVENESS_DEFAULT
    return parse_talkativeness(card["talkativeness"])


def parse_talkativeness(value: object) -> float:
    """A talkativeness value that is present (JSON null included, which JavaScript reads as 0)."""
    number = js_number(value)
    return TALKATIVENESS_DEFAULT if number != number else number


def extract_words(text: str, *, ascii_words: bool = True) -> list[str]:
    """utils.js `extractAllWords`: runs of word characters, lower-cased. SillyTavern's `\\w` is
    ASCII-only, so "Séraphina" is the words "s" and "raphina" and a Cyrillic name has none;
    `ascii_words=False` uses Unicode word characters instead (a Tavern option, not ST's rule)."""
    pattern = _ASCII_WORD if ascii_words else _WORD
    return [word.lower() for word in pattern.findall(text)]


def activation(user_input: str, messages: Sequence[Spoken], *, by_auto_mode: bool = False) -> tuple[str, bool]:
    """(the activating text, whether it is the user's input): what the user typed, unless auto
    mode started the turn or nothing was typed; then the last message's text (none if it is a
    system message)."""
    if user_input and not by_auto_mode:
        return user_input, True
    last = messages[-1] if messages else None
    return (last.mes if last is not None and not last.is_system else ""), False


def choose_speakers(
    group: Group,
    members: Sequence[Member],
    messages: Sequence[Spoken],
    text: str,
    rng: random.Random,
    *,
    is_user_input: bool,
    turn: Turn = Turn.NORMAL,
    force: str | None = None,
    ascii_words: bool = True,
) -> list[str]:
    """The avatars of the members who reply, in order.

    `members`: the cards at hand (a member without one is skipped, as ST skips a missing
    character); `messages`: the chat so far, oldest first, at least back to the user's last
    message (pooled order counts who spoke since); `text` and `is_user_input`: see `activation`.
    """
    cards = {member.avatar: member for member in members}
    everyone = list(group.members)
    if not everyone:
        return []
    if force is not None:
        return [force] if force in cards else []
    if turn is Turn.QUIET:
        return _swipe(everyone, cards, messages, rng, allow_system=True)[:1] or _list(everyone[:1], cards)
    if turn in (Turn.SWIPE, Turn.CONTINUE):
        return _swipe(everyone, cards, messages, rng, allow_system=False)
    if turn is Turn.IMPERSONATE:
        return _known([everyone[_index(rng, len(everyone))]], cards)
    return _by_strategy(group, cards, messages, text, rng, is_user_input, ascii_words)


def _by_strategy(
    group: Group,
    cards: Mapping[str, Member],
    messages: Sequence[Spoken],
    text: str,
    rng: random.Random,
    is_user_input: bool,
    ascii_words: bool,
) -> list[str]:
    enabled = list(group.enabled_members)
    strategy = group.activation_strategy
    if strategy == ActivationStrategy.NATURAL:
        last = messages[-1] if messages else None
        return _natural(enabled, cards, text, last, group.allow_self_responses, is_user_input, rng, ascii_words)
    if strategy == ActivationStrategy.LIST:
        return _list(enabled, cards)
    if strategy == ActivationStrategy.POOLED:
        return _pooled(enabled, cards, messages, is_user_input, rng)
    if strategy == ActivationStrategy.MANUAL and not is_user_input:
        return _known(js_shuffle(enabled, rng)[:1], cards)
    # Manual with the user's text, or a strategy this release does not know: nobody.
    return []


def _natural(
    enabled: list[str],
    cards: Mapping[str, Member],
    text: str,
    last: Spoken | None,
    allow_self_responses: bool,
    is_user_input: bool,
    rng: random.Random,
    ascii_words: bool,
) -> list[str]:
    # The last speaker may not answer themself unless the group allows it; the user's own
    # message in between lifts the ban. ST compares names, not avatars.
    banned = None
    if not is_user_input and last is not None and not last.is_user and not allow_self_responses:
        banned = last.name or None
    chosen = _mentioned(enabled, cards, text, banned, ascii_words)
    chatty: list[str] = []
    for avatar in js_shuffle(enabled, rng):
        card = cards.get(avatar)
        if card is None or card.name == banned:
            continue
        # One roll per member, mentioned or not (ST draws them all).
        if card.talkativeness >= rng.random():
            chosen.append(avatar)
        if card.talkativeness > 0:
            chatty.append(avatar)
    # Nobody: one at random, from those who ever talk if any do. That pool is every enabled
    # member otherwise, the banned one included: ST's quirk, kept.
    pool = chatty or enabled
    tries = 0
    while not chosen and tries < len(pool):
        tries += 1
        pick = pool[_index(rng, len(pool))]
        if pick in cards:
            chosen.append(pick)
    return list(dict.fromkeys(chosen))


def _mentioned(
    enabled: list[str], cards: Mapping[str, Member], text: str, banned: str | None, ascii_words: bool
) -> list[str]:
    """Members named in `text`, in the order of the words: each word wakes the first member
    (in list order) that has it as one of the words of their name."""
    found: list[str] = []
    if not text:
        return found
    names = {a: extract_words(c.name, ascii_words=ascii_words) for a, c in cards.items()}
    for word in extract_words(text, ascii_words=ascii_words):
        for avatar in enabled:
            card = cards.get(avatar)
            if card is None or card.name == banned:
                continue
            if word in names[avatar]:
                found.append(avatar)
                break
    return found


def _list(enabled: Sequence[str], cards: Mapping[str, Member]) -> list[str]:
    """Every enabled member once, in list order."""
    return _known(list(dict.fromkeys(enabled)), cards)


def _pooled(
    enabled: list[str], cards: Mapping[str, Member], messages: Sequence[Spoken], is_user_input: bool,
    rng: random.Random,
) -> list[str]:
    """One member who has not spoken since the user's last message; when all have, anyone but
    the last speaker. The user's new text starts a new round."""
    spoken: set[str] = set()
    if not is_user_input:
        for message in reversed(messages):
            if message.is_user:
                break
            if message.is_system or message.is_narrator:
                continue
            if message.original_avatar:
                spoken.add(message.original_avatar)
    waiting = [avatar for avatar in enabled if avatar not in spoken]
    if waiting:
        return _known([waiting[_index(rng, len(waiting))]], cards)
    last = messages[-1] if messages else None
    last_avatar = last.original_avatar if len(enabled) > 1 and last is not None and not last.is_user else ""
    pool = [avatar for avatar in enabled if avatar != last_avatar] if last_avatar else enabled
    return _known([pool[_index(rng, len(pool))]], cards) if pool else []


def _swipe(
    everyone: list[str], cards: Mapping[str, Member], messages: Sequence[Spoken], rng: random.Random,
    *, allow_system: bool,
) -> list[str]:
    """`activateSwipe`: whoever wrote the last message. When that is the user's (or a system
    message), the last character who spoke before it, else a random member, and then, as ST
    does, also the character matched by the last message's own name or avatar."""
    if not messages:
        return []
    last = messages[-1]

    def passed_over(message: Spoken) -> bool:
        return message.is_user or (message.is_system and not allow_system) or message.is_narrator

    chosen: list[str] = []
    if passed_over(last):
        chosen = [m.original_avatar for m in reversed(messages) if not passed_over(m) and m.original_avatar][:1]
        if not chosen and everyone:
            chosen = [js_shuffle(everyone, rng)[0]]
    if last.original_avatar:
        chosen.append(last.original_avatar)
    else:
        # Chats from before `original_avatar`: the member whose card has the message's name.
        chosen.extend([a for a, c in cards.items() if c.name == last.name and a in everyone][:1])
    return _known(chosen, cards)


def _known(avatars: Sequence[str], cards: Mapping[str, Member]) -> list[str]:
    return [avatar for avatar in avatars if avatar in cards]


def _index(rng: random.Random, size: int) -> int:
    """`Math.floor(Math.random() * size)`."""
    return int(rng.random() * size)


def js_shuffle(items: Sequence[str], rng: random.Random) -> list[str]:
    """utils.js `shuffle` (Fisher-Yates from the end), on a copy: the same draws in the same order."""
    result = list(items)
    index = len(result)
    while index:
        other = _index(rng, index)
        index -= 1
        result[index], result[other] = result[other], result[index]
    return result


__all__ = [
    "Member",
    "NARRATOR",
    "Spoken",
    "TALKATIVENESS_DEFAULT",
    "Turn",
    "activation",
    "choose_speakers",
    "extract_words",
    "js_shuffle",
    "parse_talkativeness",
    "talkativeness_of",
]
