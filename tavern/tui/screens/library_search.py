"""The character library's search and the greeting it previews: plain functions, no widgets.

`parse_query` reads the search box (words, `tag:x`, `creator:y`, quotes allowed), `matches`
tests a listed card against it, and `greetings_of` lists the greetings a new chat can start
with, in the order `Chats.new` counts them. Used by the library screen (library.py).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tavern.errors import TavernError

if TYPE_CHECKING:
    from tavern.cards.index import CardEntry
    from tavern.cards.model import Card


@dataclass
class Query:
    words: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    creators: list[str] = field(default_factory=list)


def parse_query(text: str) -> Query:
    """`tag:x creator:y words` -> Query. An unbalanced quote is taken literally."""
    try:
        parts = shlex.split(text)
    except ValueError:
        parts = text.split()
    q = Query()
    for part in parts:
        low = part.casefold()
        if low.startswith("tag:") and len(part) > 4:
            q.tags.append(low[4:])
        elif low.startswith("creator:") and len(part) > 8:
            q.creators.append(low[8:])
        elif low:
            q.words.append(low)
    return q


def matches(entry: CardEntry, q: Query) -> bool:
    """Does a `CardEntry` match? Same fields as `CardLibrary.search`; tags match by prefix
    so the list narrows while the tag is being typed."""
    tags = [t.casefold() for t in entry.tags]
    creator = entry.creator.casefold()
    hay = [entry.name.casefold(), entry.key.casefold(), creator, *tags]
    if any(not any(w in h for h in hay) for w in q.words):
        return False
    if any(not any(t.startswith(want) for t in tags) for want in q.tags):
        return False
    return all(c in creator for c in q.creators)


def greetings_of(card: Card) -> list[str]:
    """The greetings a new chat can start with, in the order `Chats.new` counts them
    (empty ones skipped), so index i here is `greeting_index=i` there."""
    return [g for g in [card.first_mes, *card.alternate_greetings] if g.strip()]


def substitute_greeting(text: str, char: str, user: str) -> str:
    """The greeting as the chat will show it: {{char}} and {{user}} filled in."""
    try:
        from tavern.prompt.macro_context import MacroContext
        from tavern.prompt.macros import substitute

        return substitute(text, MacroContext(char=char, user=user))
    except (ImportError, TavernError):  # no macro module yet, or a bad macro: the everyday ones by hand
        for tag, value in (("{{char}}", char), ("{{user}}", user), ("<BOT>", char), ("<USER>", user)):
            text = text.replace(tag, value).replace(tag.lower(), value).replace(tag.upper(), value)
        return text
