"""SillyTavern's ``{{macros}}``: ``{{char}}``, ``{{user}}``, ``{{random::a::b}}``, ``{{setvar::x::1}}``...

Who calls it: the prompt assembler runs :func:`substitute` over every piece of card text, lore,
author's note and preset sequence before building a prompt; the story-string renderer in
:mod:`tavern.prompt.st_presets` runs it over the rendered story string; the prompt inspector calls
:func:`volatile_macros` to warn about macros that change the prompt every turn (in a system
prompt they move the first bytes of the prompt and throw away the whole KV cache).

The order and rules follow SillyTavern 1.12's ``evaluateMacros`` (``public/scripts/macros.js``),
``replaceVariableMacros`` (``public/scripts/variables.js``) and ``substituteParams``
(``public/script.js``): legacy ``<USER>``/``<BOT>``; dice; instruct macros; variables, line by
line; ``{{newline}}``, ``{{trim}}``, ``{{noop}}``, ``{{input}}``; the character/user fields
(``{{description}}`` before ``{{user}}``/``{{char}}`` so names inside it are replaced too);
chat macros; ``{{reverse:}}``; ``{{// comments}}``; time macros; ``{{timeDiff}}``;
``{{banned}}``; ``{{random}}`` (a new draw each time); ``{{pick}}`` (stable for a chat). Names are
case-insensitive. Unknown macros stay as written. This module holds the order and the simple
macros; the context and its limits are :mod:`~tavern.prompt.macro_context`'s
(:class:`~tavern.prompt.macro_context.MacroContext`), and the families live beside it:
:mod:`~tavern.prompt.macro_variables`, :mod:`~tavern.prompt.macro_random` (dice, random, pick),
:mod:`~tavern.prompt.macro_time` (moment.js's English formats), on :mod:`~tavern.prompt.macro_js`
(JavaScript's numbers, strings and SillyTavern's hash) and :mod:`~tavern.prompt.macro_scan`
(finding macros).

Hostile text costs linear time and bounded memory. Macros whose body runs to a delimiter are
found in one pass (:class:`~tavern.prompt.macro_scan.Delimited`), not with SillyTavern's
regexes, which rescan the text for each unclosed one. A context may add at most
``max_expansion`` characters to its texts (``{{description}}`` a million times, a line that
doubles a variable), one variable holds at most
:data:`~tavern.prompt.macro_context.MAX_VARIABLE_CHARS` and all of a store
:data:`~tavern.prompt.macro_context.MAX_VARIABLES_CHARS`; past a limit the macro stays as
written (or the variable keeps its last value) and ``MacroContext.warnings`` gets one line saying
so. SillyTavern has no such limits; they are far above what any card uses.
"""

from __future__ import annotations

import re

from tavern.prompt.macro_context import MacroContext
from tavern.prompt.macro_random import RANDOM, ROLL, pick, random_picks, roll_dice
from tavern.prompt.macro_scan import Delimited, const, delimited, to_banned, to_comment, to_reverse
from tavern.prompt.macro_time import DATETIMEFORMAT, time_macros
from tavern.prompt.macro_variables import VARIABLE_MACROS, variable_line

__all__ = [
    "MACRO_NAMES",
    "strip_trim",
    "substitute",
    "volatile_macros",
]


# Instruct macros (``replaceInstructMacros``): name -> aliases, all case-insensitive.
_INSTRUCT_MACROS: dict[str, tuple[str, ...]] = {
    "instructSystemPromptPrefix": (),
    "instructSystemPromptSuffix": (),
    "instructInput": ("instructUserPrefix",),
    "instructUserSuffix": (),
    "instructOutput": ("instructAssistantPrefix",),
    "instructSeparator": ("instructAssistantSuffix",),
    "instructSystemPrefix": (),
    "instructSystemSuffix": (),
    "instructFirstOutput": ("instructFirstAssistantPrefix",),
    "instructLastOutput": ("instructLastAssistantPrefix",),
    "instructStop": (),
    "instructUserFiller": (),
    "instructSystemInstructionPrefix": (),
    "instructFirstInput": ("instructFirstUserPrefix",),
    "instructLastInput": ("instructLastUserPrefix",),
    "systemPrompt": (),
    "defaultSystemPrompt": ("instructSystem", "instructSystemPrompt"),
    "exampleSeparator": (),
    "chatStart": (),
}


def _instruct_value(ctx: MacroContext, name: str, aliases: tuple[str, ...]) -> str:
    lowered = {k.lower(): v for k, v in ctx.instruct.items()}
    for key in (name, *aliases):
        if key.lower() in lowered:
            return str(lowered[key.lower()])
    return ""


def _ci(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_LEGACY = [
    (_ci(r"<USER>"), "user"),
    (_ci(r"<BOT>"), "char"),
    (_ci(r"<CHAR>"), "char"),
    (_ci(r"<CHARIFNOTGROUP>"), "group"),
    (_ci(r"<GROUP>"), "group"),
]
_TRIM = _ci(r"\{\{trim\}\}")
_NEWLINES = re.compile(r"(?:\r?\n)*")
_REVERSE = delimited(r"\{\{reverse:(.+?)\}\}", r"\{\{reverse:", to_reverse)
_COMMENT = delimited(r"\{\{//([\s\S]*?)\}\}", r"\{\{//", to_comment, flags=0)
_BANNED = delimited(r"\{\{banned \"(.*)\"\}\}", r"\{\{banned \"", to_banned)


def _opt_int(value: int | None) -> str:
    return "" if value is None else str(value)


def strip_trim(text: str) -> str:
    """Removes each ``{{trim}}`` with the line breaks around it: SillyTavern's
    ``(?:\\r?\\n)*{{trim}}(?:\\r?\\n)*``, which as a regex retries from every line break of a
    long run of them (20,000 blank lines took 5 s). A story string rendered without a macro
    context gets only this (:meth:`tavern.prompt.st_presets.StoryTemplate.render`)."""
    parts: list[str] = []
    done = 0
    while (m := _TRIM.search(text, done)) is not None:
        start = m.start()
        while start > done and text[start - 1] == "\n":  # the line breaks before, back to the last match
            start -= 2 if start - 2 >= done and text[start - 2] == "\r" else 1
        parts.append(text[done:start])
        after = _NEWLINES.match(text, m.end())  # and after it (a star: it always matches)
        done = after.end() if after else m.end()
    return "".join([*parts, text[done:]]) if parts else text


def _sub_names(text: str, names: list[tuple[str, object]], ctx: MacroContext) -> str:
    """``{{name}}`` -> value, one name after the other (a value's own macros meet later names)."""
    for name, value in names:
        text = re.sub(r"\{\{" + re.escape(name) + r"\}\}", const(ctx, value), text, flags=re.IGNORECASE)
    return text


def substitute(text: str, ctx: MacroContext) -> str:
    """Replace SillyTavern macros in ``text`` (see the module docstring for the order)."""
    if not text:
        return ""
    raw = text
    group = ctx.group if ctx.group is not None else ctx.char
    legacy_values = {"user": ctx.user, "char": ctx.char, "group": group}
    for pattern, key in _LEGACY:
        text = pattern.sub(const(ctx, legacy_values[key]), text)
    if "{{" not in text:
        return text

    text = roll_dice(text, ctx)

    for name, aliases in _INSTRUCT_MACROS.items():
        names = "|".join(re.escape(n) for n in (name, *aliases))
        value = _instruct_value(ctx, name, aliases)
        text = re.sub(r"\{\{(" + names + r")\}\}", const(ctx, value), text, flags=re.IGNORECASE)

    text = "\n".join(
        variable_line(line, ctx) if line and "{{" in line else line for line in text.split("\n")
    )
    text = re.sub(r"\{\{newline\}\}", "\n", text, flags=re.IGNORECASE)
    text = strip_trim(text)
    text = re.sub(r"\{\{noop\}\}", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{input\}\}", const(ctx, ctx.input), text, flags=re.IGNORECASE)
    text = _sub_names(text, _fields(ctx, group), ctx)
    text = _sub_names(text, _chat_values(ctx), ctx)
    text = _REVERSE.sub(lambda m: m.group(1)[::-1], text)
    text = _COMMENT.sub(lambda _m: "", text)
    text = time_macros(text, ctx)

    def banned(m: re.Match[str]) -> str:
        ctx.banned_words.append(m.group(1))
        return ""

    text = _BANNED.sub(banned, text)
    text = random_picks(text, ctx)
    return pick(text, raw, ctx)


def _fields(ctx: MacroContext, group: str) -> list[tuple[str, object]]:
    """The character and user fields, ``{{original}}`` first (it is substituted once)."""
    env: list[tuple[str, object]] = []
    if ctx.original is not None:
        used = [False]

        def original() -> str:
            if used[0]:
                return ""
            used[0] = True
            return ctx.original or ""

        env.append(("original", original))
    env += [
        ("charPrompt", ctx.char_prompt),
        ("charJailbreak", ctx.char_jailbreak),
        ("charInstruction", ctx.char_jailbreak),
        ("description", ctx.description),
        ("personality", ctx.personality),
        ("scenario", ctx.scenario),
        ("persona", ctx.persona),
        ("mesExamples", ctx.mes_examples),
        ("charVersion", ctx.char_version),
        ("char_version", ctx.char_version),
        ("user", ctx.user),
        ("char", ctx.char),
        ("group", group),
        ("charIfNotGroup", group),
        ("model", ctx.model),
    ]
    return env + list(ctx.extra.items())


def _chat_values(ctx: MacroContext) -> list[tuple[str, object]]:
    return [
        ("maxPrompt", _opt_int(ctx.max_prompt)),
        ("lastMessage", ctx.last_message),
        ("lastMessageId", _opt_int(ctx.last_message_id)),
        ("lastUserMessage", ctx.last_user_message),
        ("lastCharMessage", ctx.last_char_message),
        ("firstIncludedMessageId", _opt_int(ctx.first_included_message_id)),
        ("lastSwipeId", _opt_int(ctx.last_swipe_id)),
        ("currentSwipeId", _opt_int(ctx.current_swipe_id)),
    ]


# Macros whose value changes from one turn to the next (or as the chat goes on).
_VOLATILE: list[tuple[str, str | Delimited]] = [
    ("time", r"\{\{time\}\}"),
    ("date", r"\{\{date\}\}"),
    ("weekday", r"\{\{weekday\}\}"),
    ("isotime", r"\{\{isotime\}\}"),
    ("isodate", r"\{\{isodate\}\}"),
    ("datetimeformat", DATETIMEFORMAT),
    ("time_UTC", r"\{\{time_UTC[-+]\d+\}\}"),
    ("idle_duration", r"\{\{idle_duration\}\}"),
    ("random", RANDOM),
    ("roll", ROLL),
    ("lastMessage", r"\{\{lastMessage\}\}"),
    ("lastMessageId", r"\{\{lastMessageId\}\}"),
    ("lastUserMessage", r"\{\{lastUserMessage\}\}"),
    ("lastCharMessage", r"\{\{lastCharMessage\}\}"),
    ("firstIncludedMessageId", r"\{\{firstIncludedMessageId\}\}"),
    ("lastSwipeId", r"\{\{lastSwipeId\}\}"),
    ("currentSwipeId", r"\{\{currentSwipeId\}\}"),
    ("input", r"\{\{input\}\}"),
    ("setvar", r"\{\{set(?:global)?var::"),
    ("addvar", r"\{\{add(?:global)?var::"),
    ("incvar", r"\{\{inc(?:global)?var::"),
    ("decvar", r"\{\{dec(?:global)?var::"),
    ("getvar", r"\{\{get(?:global)?var::"),
]


def volatile_macros(text: str) -> list[str]:
    """Macros in ``text`` whose value can change every turn (time, random, idle time, dice,
    last message, variables...), in order of first appearance. In a system prompt each one
    rewrites the start of the prompt and costs a full re-evaluation of the context.
    (``{{pick}}`` is stable per chat and not listed.)"""
    found: list[tuple[int, str]] = []
    for name, pattern in _VOLATILE:
        m = (
            pattern.search(text or "")
            if isinstance(pattern, Delimited)
            else re.search(pattern, text or "", re.I)
        )
        if m:
            found.append((m.start(), name))
    return [name for _pos, name in sorted(found)]


# Every macro name substitute() knows, as SillyTavern spells them (they are case-insensitive).
MACRO_NAMES: tuple[str, ...] = (
    *(n for name, aliases in _INSTRUCT_MACROS.items() for n in (name, *aliases)),
    *(f"{kind}{scope}var" for scope, kind, _macro in VARIABLE_MACROS),
    *(name for name, _value in _fields(MacroContext(char="", user="", original=""), "")),
    *(name for name, _value in _chat_values(MacroContext(char="", user=""))),
    *("roll", "newline", "trim", "noop", "input", "reverse", "//", "time", "date", "weekday"),
    *("isotime", "isodate", "datetimeformat", "idle_duration", "time_UTC", "timeDiff", "banned"),
    *("random", "pick"),
)
