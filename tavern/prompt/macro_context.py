"""What SillyTavern's macros can see and what they may spend: :class:`MacroContext` and its limits.

Who calls it: :func:`tavern.prompt.macros.substitute` and its macro families
(:mod:`~tavern.prompt.macro_variables`, :mod:`~tavern.prompt.macro_random`,
:mod:`~tavern.prompt.macro_time`, :mod:`~tavern.prompt.macro_scan`) read and charge one context;
the prompt builder, the summary and the library fill one in. It lives apart from
:mod:`~tavern.prompt.macros` so that the families, which :mod:`~tavern.prompt.macros` imports,
need nothing from it: the dependency points one way. The limits are explained in the docstring
of :mod:`tavern.prompt.macros`.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from datetime import datetime

from tavern.prompt.macro_js import js_str

__all__ = [
    "MAX_DRAWS",
    "MAX_EXPANSION_CHARS",
    "MAX_VARIABLES_CHARS",
    "MAX_VARIABLE_CHARS",
    "MAX_VARIABLE_WORK",
    "MacroContext",
]

MAX_VARIABLE_CHARS = 1 << 20  # one variable's value
MAX_VARIABLES_CHARS = 8 << 20  # all the variables of one store (the chat's, or the globals)
MAX_EXPANSION_CHARS = 4 << 20  # what macros may add to the texts of one MacroContext
MAX_VARIABLE_WORK = 64 << 20  # what variable macros may read (numbers, JSON lists) per MacroContext
MAX_DRAWS = 20_000  # dice rolled, {{random}} and {{pick}} drawn, per MacroContext
_MAX_WARNINGS = 16


@dataclass
class _Spent:
    """What one MacroContext has used of the limits (all the texts it substitutes share them)."""

    added: int = 0
    work: int = 0
    draws: int = 0
    stopped: bool = False  # expansion hit its limit: from then on variables keep their values
    totals: dict[int, int] = field(default_factory=dict)  # id(store) -> the size of its values


@dataclass
class MacroContext:
    """What macros can see. ``variables`` (the chat's ``chat_metadata.variables``) and
    ``global_variables`` are changed in place by ``{{setvar}}`` and friends; ``banned_words``
    collects ``{{banned "word"}}``. ``now`` fixes the clock (tests); ``last_user_time`` is when
    the user's message before the latest one was sent (``{{idle_duration}}``). ``rng_seed``
    makes ``{{random}}`` and ``{{roll}}`` repeatable. ``original`` is substituted once, and only
    when given (``None`` leaves ``{{original}}`` as written, as SillyTavern does).
    ``instruct`` maps instruct/system-prompt macro names (``systemPrompt``, ``instructInput``,
    ``exampleSeparator``, ``chatStart``...) to values; known ones that are missing become "".
    ``extra`` adds more ``{{name}}`` macros. ``warnings`` collects one line per limit a macro
    ran into (see the module docstring); ``max_expansion`` is how many characters macros may add
    to the texts of this context, all together."""

    char: str
    user: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    persona: str = ""
    mes_examples: str = ""
    original: str | None = None
    last_message: str = ""
    last_user_message: str = ""
    last_char_message: str = ""
    chat_id: str = ""
    variables: dict[str, object] = field(default_factory=dict)
    global_variables: dict[str, object] = field(default_factory=dict)
    now: datetime | None = None
    last_user_time: datetime | None = None
    model: str = ""
    rng_seed: int | None = None
    group: str | None = None
    char_prompt: str = ""
    char_jailbreak: str = ""
    char_version: str = ""
    input: str = ""
    max_prompt: int | None = None
    last_message_id: int | None = None
    first_included_message_id: int | None = None
    last_swipe_id: int | None = None
    current_swipe_id: int | None = None
    chat_id_hash: int | None = None
    instruct: dict[str, str] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)
    banned_words: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    max_expansion: int = MAX_EXPANSION_CHARS
    _rng: _random.Random | None = field(default=None, init=False, repr=False, compare=False)
    _spent: _Spent = field(default_factory=_Spent, init=False, repr=False, compare=False)

    def rng(self) -> _random.Random:
        if self._rng is None:
            self._rng = _random.Random(self.rng_seed) if self.rng_seed is not None else _random.SystemRandom()
        return self._rng

    def clock(self) -> datetime:
        return self.now if self.now is not None else datetime.now()

    def warn(self, message: str) -> None:
        """Adds a one-line warning, once, and no more than a few of them."""
        if message not in self.warnings and len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)

    def fits(self, matched: str, value: str) -> bool:
        """Whether replacing ``matched`` by ``value`` keeps within ``max_expansion`` (counted if so)."""
        grow = len(value) - len(matched)
        if grow <= 0:
            return True
        if self._spent.added + grow > self.max_expansion:
            self._spent.stopped = True
            self.warn(
                f"macros: stopped expanding at {self.max_expansion:,} added characters; "
                "the macros left stay as written and variables keep their values"
            )
            return False
        self._spent.added += grow
        return True

    def draw(self, count: int = 1) -> bool:
        """Counts ``count`` random draws (dice, ``{{random}}``, ``{{pick}}``: a pick seeds its own
        generator, 0.1 ms); False (and a warning) past :data:`MAX_DRAWS`."""
        if self._spent.draws + count > MAX_DRAWS:
            self.warn(
                f"macros: stopped drawing at {MAX_DRAWS:,} dice and random picks; the ones left stay as written"
            )
            return False
        self._spent.draws += count
        return True

    def store_variable(self, store: dict[str, object], name: str, value: object, macro: str) -> bool:
        """``store[name] = value``, unless that goes over a limit: then the variable keeps its
        last value, a warning says why, and this returns False."""
        if self._spent.stopped:  # expansion stopped: what would be stored is text left half-expanded
            return False
        totals = self._spent.totals
        if id(store) not in totals:
            totals[id(store)] = sum(_var_size(v) for v in store.values())
        size, old = _var_size(value), (_var_size(store[name]) if name in store else 0)
        total = totals[id(store)] + size - old
        if size > MAX_VARIABLE_CHARS:
            self.warn(
                f"macros: {{{{{macro}::{_short(name)}}}}} not done: {size:,} characters is over the "
                f"{MAX_VARIABLE_CHARS:,} a variable may hold; it keeps its last value"
            )
            return False
        if size > old and total > MAX_VARIABLES_CHARS:
            self.warn(
                f"macros: {{{{{macro}::{_short(name)}}}}} not done: the variables would hold {total:,} "
                f"characters, over the {MAX_VARIABLES_CHARS:,} allowed; it keeps its last value"
            )
            return False
        store[name] = value
        totals[id(store)] = total
        return True

    def afford(self, chars: int) -> bool:
        """Counts ``chars`` of work for a variable macro; False (and a warning) past the limit."""
        if self._spent.work + chars > MAX_VARIABLE_WORK:
            self.warn(
                f"macros: variable macros stopped after reading {MAX_VARIABLE_WORK:,} characters; "
                "the ones left stay as written"
            )
            return False
        self._spent.work += chars
        return True


def _var_size(value: object) -> int:
    return len(value) if isinstance(value, str) else len(js_str(value))


def _short(name: str) -> str:
    return name if len(name) <= 40 else name[:39] + "…"
