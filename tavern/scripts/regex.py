"""Running regex scripts on a text, by SillyTavern's rules (`getRegexedString` and
`runRegexScript` in public/scripts/extensions/regex/engine.js).

Which scripts run (`script_applies`), in list order, each on the previous one's output:
- `placement` must hold the placement asked for (1 user input, 2 AI output, 3 slash command,
  5 world info, 6 reasoning).
- The three moments a text is regexed, and what runs at each:
  * `is_markdown` (a message being shown): scripts with `markdownOnly`;
  * `is_prompt` (a message, lore entry or reasoning going into the prompt): `promptOnly`;
  * neither (the message itself when it is received, sent or edited, which changes what the
    chat file keeps): only scripts with neither flag.
  A script with both flags runs when shown and in the prompt, never on the stored text.
- `is_edit` (the user edited a message): a script runs only if it has `runOnEdit`.
- `depth` (0 = the newest message; -1 = the message being continued, SillyTavern's prompt
  counts that way on a continue; None = no depth, e.g. a lore entry not placed at a depth):
  with a depth, a script is skipped when `depth < minDepth` (a minDepth of -1 or more counts)
  or `depth > maxDepth` (a maxDepth of 0 or more counts); null limits are no limit.
- `disabled` scripts, an empty `findRegex` and an empty text do nothing.

One script's run (`run_script`):
1. `findRegex` gets its macros expanded when `substituteRegex` is 1 (as they are) or 2 (each
   macro's value regex-escaped), then is compiled as SillyTavern reads it (`jsregex`).
2. Without the `g` flag only the first match is replaced. For each match the replacement is
   `replaceString` with `{{match}}` (any case) read as `$0`, then every `$N` and `$<name>`
   replaced by that group (an unmatched or empty group is empty text) with each of
   `trimStrings` (macros expanded) removed from it, then the macros of the whole result
   expanded. Nothing else is special: `$&`, `$$`, `` $` `` stay as written, as in SillyTavern
   (which replaces through a function). Tavern's one difference: a `$N` past the last group
   is empty text (SillyTavern inserts the match's offset or the whole input by accident).
3. Matching runs under `timeout` seconds, and the result is bounded: a hostile pattern or a
   runaway replacement leaves the text unchanged with a one-line error, never a hang.

Macros come from the caller (`macros`, text in, text out) so that this package needs nothing
of the prompt's: pass one that knows the message's speaker for `{{char}}` (SillyTavern's
`characterOverride`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from tavern.scripts.jsregex import compile_find_regex
from tavern.scripts.model import RegexScript, SubstituteRegex

Macros = Callable[[str], str]
"""Expands SillyTavern macros (`{{char}}`, `{{user}}`, ...) in a text."""

DEFAULT_TIMEOUT = 0.5
"""Seconds of matching one script may take on one text."""
MAX_OUTPUT_CHARS = 4_000_000
"""A replacement that grows the text past this is stopped (`/x*/g` with a long replacement)."""

_MATCH_MACRO = re.compile(r"\{\{match\}\}", re.IGNORECASE | re.ASCII)
_GROUP_REF = re.compile(r"\$(\d+)|\$<([^>]+)>")
# What SillyTavern's macro engine substitutes one by one: `{{...}}` (innermost) and the legacy
# angle-bracket names.
_MACRO_TOKEN = re.compile(
    r"\{\{(?:(?!\{\{|\}\}).)*\}\}|<(?:USER|BOT|CHARIFNOTGROUP|CHAR|GROUP)>", re.IGNORECASE | re.DOTALL
)
_REGEX_SPECIAL = {"\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v", "\f": r"\f", "\0": r"\0"}
_REGEX_SPECIAL.update({ch: "\\" + ch for ch in ".^$*+?{}[]\\/|()"})


@dataclass(frozen=True)
class RegexRun:
    """What running scripts gave: the text, one-line errors, the names of the scripts that
    changed it (in order)."""

    text: str
    errors: tuple[str, ...] = ()
    changed_by: tuple[str, ...] = ()


class _Pattern(Protocol):
    """What a replacement needs of a compiled pattern (the `regex` package ships no types)."""

    @property
    def groups(self) -> int: ...

    @property
    def groupindex(self) -> Mapping[str, int]: ...


class _Match(Protocol):
    """What a replacement needs of a match."""

    @property
    def re(self) -> _Pattern: ...

    def group(self, key: int | str, /) -> str | None: ...

    def start(self) -> int: ...

    def end(self) -> int: ...


class _TooLong(Exception):
    """Raised from inside a replacement to stop one that grows the text past the bound."""


def script_applies(
    script: RegexScript,
    placement: int,
    *,
    is_markdown: bool,
    is_prompt: bool,
    is_edit: bool,
    depth: int | None,
) -> bool:
    """Whether `script` runs on this text (the module's docstring lists the rules)."""
    md, po = script.markdown_only, script.prompt_only
    at_source = not is_markdown and not is_prompt  # the stored message itself
    if not ((md and is_markdown) or (po and is_prompt) or (not md and not po and at_source)):
        return False
    if is_edit and not script.run_on_edit:
        return False
    if depth is not None:
        if script.min_depth is not None and script.min_depth >= -1 and depth < script.min_depth:
            return False
        if script.max_depth is not None and script.max_depth >= 0 and depth > script.max_depth:
            return False
    return placement in script.placement


def apply_scripts(
    text: str,
    scripts: Iterable[RegexScript],
    placement: int,
    *,
    is_markdown: bool,
    is_prompt: bool,
    is_edit: bool,
    depth: int | None,
    macros: Macros,
    timeout: float = DEFAULT_TIMEOUT,
) -> RegexRun:
    """Run every script that applies, in order, each on the text the previous one left."""
    if not text:
        return RegexRun(text)
    errors: list[str] = []
    changed: list[str] = []
    for script in scripts:
        if not script_applies(
            script, placement, is_markdown=is_markdown, is_prompt=is_prompt, is_edit=is_edit, depth=depth
        ):
            continue
        run = run_script(script, text, macros=macros, timeout=timeout)
        text = run.text
        errors.extend(run.errors)
        changed.extend(run.changed_by)
    return RegexRun(text, tuple(errors), tuple(changed))


def run_script(
    script: RegexScript, text: str, *, macros: Macros, timeout: float = DEFAULT_TIMEOUT
) -> RegexRun:
    """Run one script on `text`, whatever its placement and flags (but not when disabled): what
    SillyTavern's editor test box and `/regex name=...` do."""
    if script.disabled or not script.find_regex or not text:
        return RegexRun(text)
    source = find_regex_source(script, macros)
    if not source:
        return RegexRun(text)  # macros expanded to nothing: SillyTavern skips it silently
    find = compile_find_regex(source)
    if find.pattern is None:
        return RegexRun(text, (f"{_name(script)}: {find.error}",))
    template = _MATCH_MACRO.sub("$0", script.replace_string)
    trims = [trimmed for trimmed in (macros(t) for t in script.trim_strings) if trimmed]
    budget = [MAX_OUTPUT_CHARS - len(text)]

    def replace(match: _Match) -> str:
        out = macros(_fill(template, match, trims))
        budget[0] -= len(out) - (match.end() - match.start())
        if budget[0] < 0:
            raise _TooLong
        return out

    try:
        result: str = find.pattern.sub(replace, text, count=0 if find.replace_all else 1, timeout=timeout)
    except TimeoutError:
        why = f"stopped after {timeout:g} s of matching (the pattern backtracks too much)"
        return RegexRun(text, (f"{_name(script)}: {why}; text left unchanged",))
    except _TooLong:
        why = f"the replacement would make the text over {MAX_OUTPUT_CHARS} characters"
        return RegexRun(text, (f"{_name(script)}: {why}; text left unchanged",))
    return RegexRun(result, (), (script.script_name,) if result != text else ())


def _name(script: RegexScript) -> str:
    return f"regex script {script.script_name!r}" if script.script_name else "regex script"


def _fill(template: str, match: _Match, trims: list[str]) -> str:
    """`$N` and `$<name>` in `template` replaced by the match's groups, trimmed."""
    pattern = match.re

    def group(ref: re.Match[str]) -> str:
        value: str | None = None
        digits, name = ref.group(1), ref.group(2)
        if digits is not None:
            if len(digits.lstrip("0")) <= 6 and int(digits) <= pattern.groups:
                value = match.group(int(digits))
        elif name in pattern.groupindex:
            value = match.group(name)
        if not value:
            return ""
        for trim in trims:
            value = value.replace(trim, "")
        return value

    return _GROUP_REF.sub(group, template)


def find_regex_source(script: RegexScript, macros: Macros) -> str:
    """The findRegex with macros expanded as `substituteRegex` says (other values: none)."""
    if script.substitute_regex == SubstituteRegex.RAW:
        return macros(script.find_regex)
    if script.substitute_regex == SubstituteRegex.ESCAPED:
        return _MACRO_TOKEN.sub(lambda token: _escaped_macro(token.group(0), macros), script.find_regex)
    return script.find_regex


def _escaped_macro(token: str, macros: Macros) -> str:
    value = macros(token)
    return token if value == token else escape_for_regex(value)


def escape_for_regex(value: str) -> str:
    """A macro's value made literal inside a pattern, as SillyTavern's `sanitizeRegexMacro`:
    regex syntax characters get a backslash, control characters become escapes."""
    return "".join(_REGEX_SPECIAL.get(ch, ch) for ch in value)
