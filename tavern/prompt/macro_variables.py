"""Variable macros: ``{{getvar::x}}``, ``{{setvar::x::1}}``, ``{{addvar::x::1}}``,
``{{incvar::x}}``, ``{{decvar::x}}`` and their ``global`` twins, over the chat's
``chat_metadata.variables`` and the global store, with SillyTavern's JavaScript arithmetic.

Who calls it: :func:`tavern.prompt.macros.substitute` runs :func:`variable_line` over each line
(SillyTavern's ``replaceVariableMacros``). What a variable may hold is bounded by
:meth:`~tavern.prompt.macro_context.MacroContext.store_variable`, what reading them may cost by
:meth:`~tavern.prompt.macro_context.MacroContext.afford`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from tavern.prompt.macro_js import js_number, js_str
from tavern.prompt.macro_scan import delimited, to_brace, to_pair

if TYPE_CHECKING:
    from tavern.prompt.macro_context import MacroContext


def _get_var(store: dict[str, object], name: str) -> object:
    value = store.get(name)
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.strip() == "":
            return value
        number = js_number(value)
        if number is None:
            return value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    number = js_number(value)
    return value if number is None else number


def _json_list(current: object) -> list[object] | None:
    text = current if isinstance(current, str) else js_str(current)
    if not text.lstrip().startswith("["):  # only a JSON array is appended to: skip the parse
        return None
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # "[[[[…" a hundred thousand deep
        return None
    return parsed if isinstance(parsed, list) else None


def _add_var(ctx: MacroContext, store: dict[str, object], name: str, value: object, macro: str) -> object:
    """SillyTavern's ``addLocalVariable``: append to a JSON list, add numbers, else concatenate.
    Returns the new value (the old one when a limit refused it)."""
    current = _get_var(store, name) or 0
    parsed = _json_list(current)
    new: object = None
    result: object = None
    if parsed is not None:
        parsed.append(value)
        try:
            new, result = json.dumps(parsed, ensure_ascii=False, separators=(",", ":")), parsed
        except RecursionError:  # as deep as json.loads could just read
            new = None
    if new is None:
        increment = js_number(value)
        current_number = js_number(current)
        if increment is None or current_number is None:
            new = result = js_str(current or "") + js_str(value)
        else:
            total = current_number + increment
            new = result = int(total) if total.is_integer() and abs(total) < 2**53 else total
    return result if ctx.store_variable(store, name, new, macro) else current


def _read_cost(store: dict[str, object], name: str) -> int:
    value = store.get(name)
    return len(value) if isinstance(value, str) else 8


def _get_step(store: dict[str, object], ctx: MacroContext) -> Callable[[re.Match[str]], str]:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1).strip()
        if not ctx.afford(_read_cost(store, name)):
            return m.group(0)
        value = js_str(_get_var(store, name))
        return value if ctx.fits(m.group(0), value) else m.group(0)

    return repl


def _set_step(store: dict[str, object], ctx: MacroContext, macro: str) -> Callable[[re.Match[str]], str]:
    def repl(m: re.Match[str]) -> str:
        ctx.store_variable(store, m.group(1).strip(), m.group(2), macro)
        return ""

    return repl


def _add_step(
    store: dict[str, object], ctx: MacroContext, macro: str, by: int | None
) -> Callable[[re.Match[str]], str]:
    """addvar (``by`` None: the macro's second argument, and it leaves nothing) or inc/decvar."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1).strip()
        value: str | int = m.group(2) if by is None else by
        cost = _read_cost(store, name) + (len(value) if isinstance(value, str) else 0)
        if not ctx.afford(cost):
            return m.group(0)
        result = js_str(_add_var(ctx, store, name, value, macro))
        if by is None:
            return ""
        return result if ctx.fits(m.group(0), result) else m.group(0)

    return repl


# SillyTavern's order on each line: get, set, add, inc, dec; local then global.
VARIABLE_MACROS = [
    (
        scope,
        kind,
        delimited(rf"\{{\{{{kind}{scope}var::([^}}]+)\}}\}}", rf"\{{\{{{kind}{scope}var::", to_brace)
        if kind in ("get", "inc", "dec")
        else delimited(
            rf"\{{\{{{kind}{scope}var::([^:]+)::([^}}]+)\}}\}}", rf"\{{\{{{kind}{scope}var::", to_pair
        ),
    )
    for scope in ("", "global")
    for kind in ("get", "set", "add", "inc", "dec")
]


def variable_line(line: str, ctx: MacroContext) -> str:
    """The variable macros of one line replaced, in SillyTavern's order."""
    for scope, kind, macro in VARIABLE_MACROS:
        store = ctx.global_variables if scope else ctx.variables
        name = f"{kind}{scope}var"
        if kind == "get":
            repl = _get_step(store, ctx)
        elif kind == "set":
            repl = _set_step(store, ctx, name)
        else:
            repl = _add_step(store, ctx, name, {"add": None, "inc": 1, "dec": -1}[kind])
        line = macro.sub(repl, line)
    return line
