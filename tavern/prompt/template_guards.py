"""The limits every chat template renders under, and the checks that enforce them.

Who calls it: the sandbox (:mod:`tavern.prompt.template_sandbox`) runs these checks on every
operator, call and loop step of a template, its filters (:mod:`tavern.prompt.template_filters`)
on every filter call, and :mod:`tavern.prompt.template_render` sets up one :class:`Budget` per
render and waits at most ``MAX_SECONDS`` for it.

Why two kinds of limit: one step (a filter call, an operator) can take long on a big value
(``s|wordcount`` on 14 MB took half a second, so a 1,000-iteration loop ran 537 s between two
clock checks). So the sizes of the values a template builds are bounded, which bounds what one
step can cost, and the wall clock is enforced every step and from outside (see
:mod:`tavern.prompt.template_render`). ``MAX_STEPS`` and ``MAX_SECONDS`` are read from this
module at each use (the render's wait too), so a test may lower them here.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Iterable, Iterator

import jinja2
from jinja2.utils import Namespace

# Limits. Real chat templates stay far below every one of them: a 500-message chat renders in
# a few thousand steps and its prompt is well under a megabyte.
MAX_SOURCE_CHARS = 1_000_000  # template text
MAX_STEPS = 1_000_000  # loop iterations + calls + intercepted operators, per render
MAX_RANGE = 100_000  # items in one range()
# Any one string a template builds, in characters (or twice the chat's text, if more): the
# biggest single step, `s|title` or `s|wordcount` on it, then takes well under a second.
MAX_STR = 2_000_000
MAX_ITEMS = 200_000  # items in any list a template builds
MAX_BUILT = 64_000_000  # characters of all the values one render builds (plus 16x the chat's)
MAX_OUTPUT = 16_000_000  # characters of rendered output
MAX_INT_BITS = 4096  # size of integers a template may compute
MAX_SECONDS = 5.0  # wall time per render, enforced by the caller (see template_render)


class LimitReached(jinja2.TemplateError):
    """A render went over one of the limits above."""

    #: The template ran away (steps, time): remembered, its next renders fail at once.
    poisons = False


class _Runaway(LimitReached):
    poisons = True


class Budget:
    """Step counter, deadline and size allowances for one render (held in a context variable).

    ``input_chars``: the text of the chat rendered; a long chat is allowed proportionally bigger
    values, so a legitimate template never fails on a big message."""

    __slots__ = ("built", "cancelled", "deadline", "max_built", "max_str", "steps")

    def __init__(self, input_chars: int = 0) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + MAX_SECONDS
        self.cancelled = False  # set by the caller when it stops waiting
        self.max_str = max(MAX_STR, 2 * input_chars)
        self.max_built = MAX_BUILT + 16 * input_chars
        self.built = 0

    def tick(self) -> None:
        self.steps += 1
        if self.cancelled:
            raise _Runaway(f"template ran longer than {MAX_SECONDS:g} s")
        if self.steps > MAX_STEPS:
            raise _Runaway(f"template ran more than {MAX_STEPS} steps")
        # Every step: one step can cost a good part of a second, so checking every thousand
        # let a loop of slow steps run for minutes. The clock costs ~50 ns, a step microseconds.
        if time.monotonic() > self.deadline:
            raise _Runaway(f"template ran longer than {MAX_SECONDS:g} s")


BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "tavern_template_budget", default=None
)


def tick() -> None:
    budget = BUDGET.get()
    if budget is not None:
        budget.tick()


def check_size(n: int, what: str = "string") -> None:
    """Refuse a string of ``n`` characters (``what="list"``: a list of ``n`` items), before it
    is built where the size is known in advance."""
    if what == "list":
        limit, unit = MAX_ITEMS, "items"
    else:
        budget = BUDGET.get()
        limit, unit = (budget.max_str if budget is not None else MAX_STR), "characters"
    if n > limit:
        raise LimitReached(f"template built a {what} of {n} {unit} (limit {limit})")


def check_value(value: object) -> None:
    """A string or list the template just built: within the size limits, and counted against
    the render's total (values can be kept in lists and namespaces, so what one render holds
    is bounded by what it built)."""
    # Runs after every operator and call: the budget is read once, the limits inline.
    if type(value) is str or isinstance(value, (str, bytes)):  # bytes: "x".encode() * 10**9
        kind, limit = "string", MAX_STR
    elif isinstance(value, (list, tuple)):
        kind, limit = "list", MAX_ITEMS
    else:
        return
    n = len(value)
    budget = BUDGET.get()
    if budget is None:
        if n > limit:
            check_size(n, kind)  # raises, with the message
        return
    if n > (budget.max_str if kind == "string" else limit):
        check_size(n, kind)
    budget.built += n
    if budget.built > budget.max_built:
        raise LimitReached(f"template built more than {budget.max_built} characters in all")


def seq_kind(seq: object) -> str:
    """What :func:`check_size` calls a sequence: "string" (text, bytes) or "list"."""
    return "string" if isinstance(seq, (str, bytes)) else "list"


def _text_size(value: object, limit: int) -> int:
    """About how many characters ``str(value)`` (or its JSON) has, counted up to just past
    ``limit``: a list of a million references to one big string is small to build but huge
    to print. Each item visited adds at least one, so the walk stops after ``limit`` items
    (and ends on self-referencing namespaces)."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, bytes):
            total += 4 * len(item) + 3  # b'\xff' per byte at worst
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, Namespace):
            total += 12
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        else:
            total += 24  # numbers (ints are bounded), None, Undefined, macros: short reprs
    return total


def check_text(value: object) -> None:
    """Refuse turning a non-string value into text when the text would be over the limit."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return
    budget = BUDGET.get()
    limit = budget.max_str if budget is not None else MAX_STR
    if _text_size(value, limit) > limit:
        raise LimitReached(f"template would write a value of over {limit} characters")


def _check_int(value: object) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise LimitReached(f"template computed an integer over {MAX_INT_BITS} bits")


# printf-style and str.format widths/precisions big enough to allocate gigabytes, and widths
# taken from arguments ("%*d", "{:{}}"), are refused before formatting.
_BIG_NUMBER = re.compile(r"\d{7,}")
_PRINTF_SPEC = re.compile(r"%[-#0 +()\w.*]*?[a-zA-Z%]")
_FORMAT_SPEC = re.compile(r"\{[^{}]*:([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")


def check_printf(fmt: str) -> None:
    for spec in _PRINTF_SPEC.findall(fmt):
        if "*" in spec or _BIG_NUMBER.search(spec):
            raise LimitReached("template used a huge or argument-supplied format width")


def check_format_string(fmt: str) -> None:
    for spec in _FORMAT_SPEC.findall(fmt):
        if "{" in spec or _BIG_NUMBER.search(spec):
            raise LimitReached("template used a huge or argument-supplied format width")


def check_str_method(s: str, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    """Refuse string method calls whose result would be huge, before they allocate it."""
    first = args[0] if args else None
    if name in ("center", "ljust", "rjust", "zfill") and isinstance(first, int):
        check_size(first)
    elif name == "expandtabs":
        size = first if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            check_size(len(s) * max(size, 1))
    elif name == "replace" and len(args) >= 2 and isinstance(first, str) and isinstance(args[1], str):
        count = s.count(first) if first else len(s) + 1
        check_size(len(s) + count * max(len(args[1]) - len(first), 0))
    elif name == "join" and isinstance(first, (list, tuple)):
        check_size(sum(len(x) for x in first if isinstance(x, str)) + len(s) * len(first))
    # str.format / format_map are checked in the sandbox's wrap_str_format.


def safe_range(*args: int) -> range:
    """The template's ``range()``: no huge integers, at most ``MAX_RANGE`` items."""
    for a in args:
        _check_int(a)
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise LimitReached(f"range() of {len(r)} items is over the limit of {MAX_RANGE}")
    return r


def guarded_iter(iterable: Iterable[object]) -> Iterator[object]:
    """Every ``{% for %}`` iterates through this, so nested loops share one step budget."""
    budget = BUDGET.get()
    for item in iterable:
        if budget is not None:
            budget.tick()
        yield item


def guarded_concat(parts: list[object]) -> str:
    """The ``~`` operator: size-checked before the join allocates."""
    tick()
    for part in parts:
        check_text(part)
    strs = [p if isinstance(p, str) else str(p) for p in parts]
    check_size(sum(len(s) for s in strs))
    out = "".join(strs)
    check_value(out)
    return out


def finalize(value: object) -> object:
    """Every ``{{ expression }}`` value before it is printed: a list or namespace that would
    print as gigabytes is refused first."""
    if type(value) is not str:  # the usual case first: this runs for every printed value
        check_text(value)
    return value
