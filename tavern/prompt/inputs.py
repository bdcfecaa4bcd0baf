"""What the prompt assembler is given: the card's fields, the chat's messages, the author's note,
the lorebook scan (as protocols over tavern.lore's types) and the options of one turn.

Who calls it: the chat session's prompt builder (behind the app and `tavern prompt`) fills in a
:class:`PromptInputs` for :func:`tavern.prompt.assemble.assemble_prompt`; its steps
(:mod:`~tavern.prompt.system_block`, :mod:`~tavern.prompt.lore_placement`,
:mod:`~tavern.prompt.injections`, :mod:`~tavern.prompt.history_window`) read it. It lives apart
from :mod:`~tavern.prompt.assemble` so that the steps, which the assembler imports, need nothing
from the assembler: the dependency points one way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from tavern.prompt.st_presets import StoryTemplate

Mode = Literal["normal", "continue", "impersonate"]

#: One role-tagged message of a prompt: {"role": ..., "content": ...}.
PromptMessage = dict[str, str]


@dataclass
class HistoryMessage:
    name: str
    text: str
    is_user: bool
    is_system: bool = False
    index: int = -1
    """Position in the chat file; kept so the inspector can say which messages were dropped."""


@dataclass
class AuthorNote:
    text: str = ""
    depth: int = 4
    frequency: int = 1
    """Insert every N user turns (0 = never), as SillyTavern's note_interval."""
    role: str = "system"


class CardLike(Protocol):
    """What the assembler reads of a character card (tavern.cards.Card)."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def personality(self) -> str: ...
    @property
    def scenario(self) -> str: ...
    @property
    def mes_example(self) -> str: ...
    @property
    def system_prompt(self) -> str: ...
    @property
    def post_history_instructions(self) -> str: ...
    @property
    def depth_prompt(self) -> tuple[str, int, str] | None: ...


class LoreNote(Protocol):
    """An activated lorebook entry, as the assembler reads it (tavern.lore.ActivatedEntry)."""

    @property
    def book(self) -> str: ...
    @property
    def uid(self) -> int: ...
    @property
    def content(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def order(self) -> float: ...


class LoreRejection(Protocol):
    """An entry a rule kept out (tavern.lore.Rejection)."""

    @property
    def uid(self) -> int: ...
    @property
    def comment(self) -> str: ...
    @property
    def reason(self) -> str: ...


class LoreScan(Protocol):
    """What the assembler reads of a lorebook scan (tavern.lore.ScanResult)."""

    @property
    def activated(self) -> Sequence[LoreNote]: ...
    @property
    def rejected(self) -> Sequence[LoreRejection]: ...
    def by_position(self) -> Mapping[int, object]:
        """Text per insertion position; key 4: a list of (depth, role, text)."""
        ...


@dataclass
class CardFields:
    """What the assembler needs of a card, with macros not yet substituted."""

    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    mes_example: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    depth_prompt: tuple[str, int, str] | None = None

    @classmethod
    def from_card(cls, card: CardLike) -> CardFields:
        return cls(
            name=card.name,
            description=card.description,
            personality=card.personality,
            scenario=card.scenario,
            mes_example=card.mes_example,
            system_prompt=card.system_prompt,
            post_history_instructions=card.post_history_instructions,
            depth_prompt=card.depth_prompt,
        )


@dataclass
class PromptInputs:
    card: CardFields
    user_name: str
    history: Sequence[HistoryMessage]
    persona: str = ""
    system_prompt: str = ""
    """The user's system prompt; a card's own system_prompt replaces it ({{original}} keeps it)."""
    lore: LoreScan | None = None
    """A tavern.lore.ScanResult, or None."""
    summary: str = ""
    recalled: Sequence[str] = ()
    author_note: AuthorNote | None = None
    mode: Mode = "normal"
    names_in_history: bool = True
    layout: Literal["cache_friendly", "sillytavern"] = "cache_friendly"
    pin_examples: bool | None = None
    """None: pinned in the cache-friendly layout (dropping examples rewrites the prompt's top)."""
    trim_step: float = 0.0
    macro: Callable[[str], str] = staticmethod(lambda s: s)
    """Macro substitution for card fields, lore and notes (tavern.prompt.macros.substitute)."""
    story: StoryTemplate | None = None
    """The context preset (st_presets.StoryTemplate) of the sillytavern layout; None: SillyTavern's
    default one."""
    note_anchors: dict[str, tuple[int, str]] | None = None
    """Notes unit key -> (chat index, text) from the last sent turn: a unit whose text is
    unchanged stays before the same message, so the engine's cache keeps it."""
    return_lapsed: bool = False
    """The engine keeps text that left the prompt (Engine.keeps_removed_text): a unit that
    lapsed and fires again goes back to its place. Off, it goes before the newest message, the
    only place where any cache (llama-server's) evaluates nothing but its tokens."""
    depth_lore_drift: int = 0
    """Tavern's cache-aware lore mode (`[lore] cache_aware`; 0 = off, SillyTavern's rule): an
    @depth lore block that stays unchanged keeps its place instead of moving with the newest
    message every turn (each move re-evaluates it), until it has drifted this many messages past
    its depth; then it goes back to its depth once."""
    window_floor: int | None = None
    """Cache-friendly layout: the oldest message of the last sent prompt. Older messages stay
    out even when the notes shrink and would leave room: bringing one back means evaluating it
    again at the top of the window (SillyTavern refills the window; Tavern lets it run ahead).
    Unless more than half the budget would stay empty (the user deleted the newest messages):
    then the window refills."""
