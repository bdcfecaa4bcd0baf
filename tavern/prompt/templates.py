"""Instruct formats: the chat templates that turn a list of messages into one prompt string.

Who calls it: the prompt assembler (``tavern/prompt/assemble.py``) and the CLI pick a format with
:func:`select_format` (or :func:`get_format`) and render conversations with
:meth:`PromptFormat.render`; :mod:`tavern.prompt.st_presets` builds formats from SillyTavern
instruct presets; the engine reads :attr:`PromptFormat.template_adds_bos` and
:attr:`PromptFormat.stop`.

A format is an HF-style Jinja chat template (variables ``messages``, ``add_generation_prompt``,
``bos_token``, ``eos_token``) plus metadata. The bundled ones live in ``prompt_templates/``
(``<id>.jinja`` and ``formats.toml``). Every template, bundled or not (a GGUF's
``tokenizer.chat_template``, an imported preset), is rendered in one hardened sandbox:
Jinja's ``ImmutableSandboxedEnvironment`` (no ``__class__``/``__globals__`` walks, no mutating
builtins) plus limits on loop iterations, calls, string and number sizes, output length and
wall time, so a hostile template ends in one :class:`~tavern.errors.TemplateError` line instead
of running code, eating memory or hanging.

Why two kinds of limit: one step (a filter call, an operator) can take long on a big value
(``s|wordcount`` on 14 MB took half a second, so a 1,000-iteration loop ran 537 s between two
clock checks). So the sizes of the values a template builds are bounded, which bounds what one
step can cost, and the wall clock is enforced from outside: a foreign template (a GGUF's, a server's)
renders on a worker thread and the caller stops waiting at ``MAX_SECONDS``. A thread, not a
process: templates render on every turn (tens of microseconds each) and a process would add
pickling and a round trip to each, plus a start per app run; a thread cannot be killed, but the
abandoned render stops at its next step (every step checks a cancel flag and the clock), within
one bounded step. Tavern's own templates (bundled, and those built from SillyTavern presets,
whose user text is only data) render on the caller's thread without the hand-off, still under
every limit and the per-step clock. A template that ran into the clock or the step limit is
remembered, so the next renders of it (``select_format`` tries dozens) fail at once instead of
each taking the whole limit again.

Special tokens come out of templates as text (``<|im_start|>``, ``<s>``); the engine must
tokenize prompts with special-token parsing on, and add a BOS token itself only when
``template_adds_bos`` is false (and the model wants one). Give a format the model's own token
texts with :meth:`PromptFormat.with_tokens` (``select_format`` does it when told them).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import json
import queue
import re
import threading
import time
import tomllib
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

from tavern.errors import TemplateError
from tavern.paths import bundled_dir

__all__ = [
    "TEMPLATES_DIR",
    "PromptFormat",
    "TemplateRefused",
    "format_from_jinja",
    "get_format",
    "load_bundled_formats",
    "select_format",
]

#: Where the bundled templates and their metadata live (repository root / prompt_templates).
TEMPLATES_DIR = bundled_dir("prompt_templates")  # the repository folder, or tavern/_bundled in a wheel

ROLES = ("system", "user", "assistant")

# ---------------------------------------------------------------------------------------------
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
MAX_SECONDS = 5.0  # wall time per render, enforced by the caller (see the module docstring)
# Formats whose template text is Tavern's own: rendered without the worker thread.
_TRUSTED_ORIGINS = frozenset({"bundled", "st-preset"})
_MACRO_CALL_STEPS = 20
# Filters written in Python loops, many times slower per character than the rest.
_SLOW_FILTER_CHARS = {"urlize": 100_000, "wordwrap": 100_000}
# Filters that never turn a list or dict argument into text (the others may: `|string`, `|join`,
# `|tojson`, `|trim` on a list...), so their arguments need no size estimate.
_NON_TEXT_FILTERS = frozenset(
    "abs attr batch count d default dictsort first float groupby int items last length list map "
    "max min random reject rejectattr reverse round select selectattr slice sort sum unique".split()
)

# Marks the message left open by continue_final / prefill renders. Private-use characters
# survive trim()/strip()/split() in templates and do not occur in real chat text.
_OPEN_MARK = "\ue000tavern-open\ue001"


class _LimitReached(jinja2.TemplateError):
    """A render went over one of the limits above."""

    #: The template ran away (steps, time): remembered, its next renders fail at once.
    poisons = False


class _Runaway(_LimitReached):
    poisons = True


class TemplateRefused(TemplateError):
    """The template itself rejected the conversation (``raise_exception``, or a value it needs
    is missing), as opposed to being broken or hostile."""


class _Budget:
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


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "tavern_template_budget", default=None
)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()


def _check_size(n: int, what: str = "string") -> None:
    """Refuse a string of ``n`` characters (``what="list"``: a list of ``n`` items), before it
    is built where the size is known in advance."""
    if what == "list":
        limit, unit = MAX_ITEMS, "items"
    else:
        budget = _BUDGET.get()
        limit, unit = (budget.max_str if budget is not None else MAX_STR), "characters"
    if n > limit:
        raise _LimitReached(f"template built a {what} of {n} {unit} (limit {limit})")


def _check_value(value: Any) -> None:
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
    budget = _BUDGET.get()
    if budget is None:
        if n > limit:
            _check_size(n, kind)  # raises, with the message
        return
    if n > (budget.max_str if kind == "string" else limit):
        _check_size(n, kind)
    budget.built += n
    if budget.built > budget.max_built:
        raise _LimitReached(f"template built more than {budget.max_built} characters in all")


def _kind(seq: Any) -> str:
    return "string" if isinstance(seq, (str, bytes)) else "list"


def _text_size(value: Any, limit: int) -> int:
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


def _check_text(value: Any) -> None:
    """Refuse turning a non-string value into text when the text would be over the limit."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return
    budget = _BUDGET.get()
    limit = budget.max_str if budget is not None else MAX_STR
    if _text_size(value, limit) > limit:
        raise _LimitReached(f"template would write a value of over {limit} characters")


def _check_int(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise _LimitReached(f"template computed an integer over {MAX_INT_BITS} bits")


# printf-style and str.format widths/precisions big enough to allocate gigabytes, and widths
# taken from arguments ("%*d", "{:{}}"), are refused before formatting.
_BIG_NUMBER = re.compile(r"\d{7,}")
_PRINTF_SPEC = re.compile(r"%[-#0 +()\w.*]*?[a-zA-Z%]")
_FORMAT_SPEC = re.compile(r"\{[^{}]*:([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")


def _check_printf(fmt: str) -> None:
    for spec in _PRINTF_SPEC.findall(fmt):
        if "*" in spec or _BIG_NUMBER.search(spec):
            raise _LimitReached("template used a huge or argument-supplied format width")


def _check_format_string(fmt: str) -> None:
    for spec in _FORMAT_SPEC.findall(fmt):
        if "{" in spec or _BIG_NUMBER.search(spec):
            raise _LimitReached("template used a huge or argument-supplied format width")


def _safe_range(*args: int) -> range:
    for a in args:
        _check_int(a)
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise _LimitReached(f"range() of {len(r)} items is over the limit of {MAX_RANGE}")
    return r


def _guarded_iter(iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this, so nested loops share one step budget."""
    budget = _BUDGET.get()
    for item in iterable:
        if budget is not None:
            budget.tick()
        yield item


def _guarded_concat(parts: list[Any]) -> str:
    """The ``~`` operator: size-checked before the join allocates."""
    _tick()
    for part in parts:
        _check_text(part)
    strs = [p if isinstance(p, str) else str(p) for p in parts]
    _check_size(sum(len(s) for s in strs))
    out = "".join(strs)
    _check_value(out)
    return out


def _finalize(value: Any) -> Any:
    """Every ``{{ expression }}`` value before it is printed: a list or namespace that would
    print as gigabytes is refused first."""
    if type(value) is not str:  # the usual case first: this runs for every printed value
        _check_text(value)
    return value


def _raise_exception(message: Any) -> None:
    # Chat templates call this to refuse a conversation (HF provides it the same way).
    raise jinja2.TemplateError(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(str(fmt))


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: Any = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    # HF's tojson filter (no HTML escaping, unlike Jinja's built-in one).
    if isinstance(indent, int) and indent > 64:
        raise _LimitReached("tojson indent is too large")
    _check_text(value)
    out = json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    _check_size(len(out))
    return out


class _GenerationTag(Extension):
    """HF's ``{% generation %}...{% endgeneration %}`` (marks assistant text for training);
    rendering just outputs the body."""

    tags = frozenset({"generation"})  # type: ignore[assignment]

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return cast(list[nodes.Node], parser.parse_statements(("name:endgeneration",), drop_needle=True))


class _GuardLoops(NodeTransformer):
    """Rewrites the parsed template: every for-loop iterable goes through ``_guarded_iter`` and
    every ``~`` concatenation through ``_guarded_concat``."""

    def __init__(self, environment: jinja2.Environment) -> None:
        self.environment = environment

    def _call(self, name: str, arg: nodes.Expr, lineno: int) -> nodes.Call:
        call = nodes.Call(nodes.Name(name, "load"), [arg], [], None, None)
        call.set_lineno(lineno)
        call.set_environment(self.environment)
        return call

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._call("__tavern_iter", cast(nodes.Expr, node.iter), node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.List(list(node.nodes))
        items.set_lineno(node.lineno)
        items.set_environment(self.environment)
        return self._call("__tavern_concat", items, node.lineno)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The one environment every template renders in."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        return cast(nodes.Template, _GuardLoops(self).visit(tree))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            budget.tick()
        if operator == "+" and type(left) is str and type(right) is str:
            # The common case, kept cheap: chat templates join their markup with `+`.
            n = len(left) + len(right)
            if budget is not None and n <= budget.max_str and budget.built + n <= budget.max_built:
                budget.built += n
                return left + right
            _check_size(n)  # too big: raises before building it
            out = left + right
            _check_value(out)  # over the render's total: raises
            return out
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int):
                    _check_size(len(seq) * max(n, 0), _kind(seq))
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise _LimitReached(f"template computed an integer over {MAX_INT_BITS} bits")
        elif operator == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and abs(left) > 1
                and left.bit_length() * right > MAX_INT_BITS
            ):
                raise _LimitReached(f"template computed an integer over {MAX_INT_BITS} bits")
        elif operator == "+":
            if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
                _check_size(len(left) + len(right), _kind(left))
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
            _check_text(right)
        result = super().call_binop(context, operator, left, right)
        _check_value(result)
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: PYI063 - Jinja's signature
        _tick()
        if isinstance(__obj, Macro):
            # A macro call costs far more than a loop step; count it so, or a recursive
            # macro could run for the whole time limit inside the step budget.
            budget = _BUDGET.get()
            if budget is not None:
                budget.steps += _MACRO_CALL_STEPS
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        _check_value(result)
        return result

    def wrap_str_format(self, value: Any) -> Any:
        # str.format / format_map, checked for huge widths when the method is looked up.
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map"):
            _check_format_string(owner)
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None

        @functools.wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> Any:
            # The arguments, as they will be printed (a list of a big string's references).
            for arg in (*args, *kwargs.values()):
                _check_text(arg)
            return wrapped(*args, **kwargs)

        return checked

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        # Jinja's own version prints as "" and is falsy; this one fails on any use, so a probe
        # like {{ ''.__class__ }} is reported instead of silently ignored.
        return _UnsafeUndefined(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe",
            name=attribute,
            obj=obj,
            exc=SecurityError,
        )


class _UnsafeUndefined(jinja2.StrictUndefined):
    __slots__ = ()


def _check_str_method(s: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse string method calls whose result would be huge, before they allocate it."""
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        _check_size(args[0])
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            _check_size(len(s) * max(size, 1))
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = s.count(args[0]) if args[0] else len(s) + 1
        _check_size(len(s) + count * max(len(args[1]) - len(args[0]), 0))
    elif name == "join" and args:
        items = args[0]
        if isinstance(items, (list, tuple)):
            _check_size(sum(len(x) for x in items if isinstance(x, str)) + len(s) * len(items))
    # str.format / format_map are checked in _Sandbox.wrap_str_format.


def _wrap_filters(env: jinja2.Environment) -> None:
    """Replace the built-in filters that can be made to allocate without bound."""
    f = env.filters
    orig_center, orig_indent, orig_replace = f["center"], f["indent"], f["replace"]
    orig_join, orig_format, orig_batch, orig_slice = f["join"], f["format"], f["batch"], f["slice"]
    orig_wordwrap = f["wordwrap"]

    def center(value: Any, width: int = 80) -> str:
        _check_size(int(width))
        return str(orig_center(value, width))

    def indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> str:
        w = len(width) if isinstance(width, str) else int(width)
        _check_size((str(s).count("\n") + 1) * (w + 1) + len(str(s)))
        return str(orig_indent(s, width, first, blank))

    def format_(value: Any, *args: Any, **kwargs: Any) -> str:
        if isinstance(value, str):
            _check_printf(value)
        return str(orig_format(value, *args, **kwargs))

    def batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        if int(linecount) > MAX_RANGE:
            raise _LimitReached("batch() size is too large")
        return orig_batch(value, linecount, fill_with)

    def slice_(value: Any, slices: int, fill_with: Any = None) -> Any:
        if int(slices) > MAX_RANGE:
            raise _LimitReached("slice() count is too large")
        return orig_slice(value, slices, fill_with)

    def wordwrap(s: str, width: int = 79, *args: Any, **kwargs: Any) -> str:
        _check_size(len(str(s)) * 2)
        return str(orig_wordwrap(env, s, width, *args, **kwargs))

    def replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> str:
        text, o, n = str(s), str(old), str(new)
        hits = text.count(o) if o else len(text) + 1
        _check_size(len(text) + hits * max(len(n) - len(o), 0))
        return str(orig_replace(eval_ctx, s, old, new, count))

    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
        items = list(_guarded_iter(value))
        _check_size(sum(len(x) if isinstance(x, str) else 16 for x in items) + len(d) * len(items))
        return str(orig_join(eval_ctx, items, d, attribute))

    replace.jinja_pass_arg = orig_replace.jinja_pass_arg  # type: ignore[attr-defined]
    join.jinja_pass_arg = orig_join.jinja_pass_arg  # type: ignore[attr-defined]
    f.update(
        center=center,
        indent=indent,
        format=format_,
        batch=batch,
        slice=slice_,
        wordwrap=wordwrap,
        replace=replace,
        join=join,
        tojson=_tojson,
    )
    for name, func in list(f.items()):
        f[name] = _guard_filter(name, func)


def _guard_filter(name: str, func: Any) -> Any:
    """Every filter call is a step (so the cancel flag and the step limit see a loop of
    filter calls), its list or dict arguments are size-checked before a filter prints them,
    and what it returns counts as built."""
    text_args = name not in _NON_TEXT_FILTERS
    slow_limit = _SLOW_FILTER_CHARS.get(name)
    # Jinja passes the context / environment first to some filters: not template values.
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps jinja_pass_arg
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        values = args[skip:]
        if text_args:
            for value in values:
                if type(value) is not str:  # the usual case: a string filter on a string
                    _check_text(value)
            for value in kwargs.values():
                _check_text(value)
        if slow_limit is not None and values and len(str(values[0])) > slow_limit:
            raise _LimitReached(f"{name} filter on over {slow_limit} characters")
        result = func(*args, **kwargs)
        _check_value(result)
        return result

    return guarded


def _make_sandbox() -> _Sandbox:
    # Same settings as transformers' chat-template environment, so GGUF/HF templates render
    # exactly as they do there.
    env = _Sandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, _GenerationTag],
        finalize=_finalize,
    )
    env.globals.pop("lipsum", None)  # lipsum(n=10**9) is an easy memory bomb, and unused
    env.globals.update(
        range=_safe_range,
        raise_exception=_raise_exception,
        strftime_now=_strftime_now,
        __tavern_iter=_guarded_iter,
        __tavern_concat=_guarded_concat,
    )
    _wrap_filters(env)
    return env


_SANDBOX = _make_sandbox()


_COMPILED: dict[str, jinja2.Template] = {}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def compile_template(source: str, label: str) -> jinja2.Template:
    """Compile template text in the sandbox; any problem becomes one TemplateError line.

    ``label`` names the template in messages (a file path, "GGUF chat template of X"...).
    """
    if not isinstance(source, str):
        raise TemplateError(f"{label}: template is not text")
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateError(f"{label}: template is {len(source)} characters (limit {MAX_SOURCE_CHARS})")
    cached = _COMPILED.get(source)
    if cached is not None:
        return cached
    try:
        template = _SANDBOX.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(
            f"{label}: syntax error on line {err.lineno}: {_one_line(err.message or '')}"
        ) from None
    except RecursionError:
        raise TemplateError(f"{label}: template is nested too deeply") from None
    except Exception as err:  # noqa: BLE001 - anything the compiler throws is the template's fault
        raise TemplateError(f"{label}: cannot compile template: {_one_line(str(err))}") from None
    if len(_COMPILED) >= 256:  # copies made by with_tokens() share the compiled template
        _COMPILED.clear()
    _COMPILED[source] = template
    return template


# Templates that ran into the clock or the step limit, with the limits then and the reason.
_POISONED: weakref.WeakKeyDictionary[jinja2.Template, tuple[tuple[int, float], str]] = (
    weakref.WeakKeyDictionary()
)
_POISON_LOCK = threading.Lock()


class _RenderJob:
    """One render handed to a worker thread; the caller waits on ``done`` (a queue: a third of
    the hand-off cost of an Event)."""

    __slots__ = ("budget", "done", "error", "label", "result", "template", "variables")

    def __init__(self, template: jinja2.Template, label: str, variables: dict[str, Any]) -> None:
        self.template = template
        self.label = label
        self.variables = variables
        self.budget = _Budget(_input_chars(variables))
        self.done: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.result: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = _render_here(self.template, self.label, self.variables, self.budget)
        except BaseException as err:  # noqa: BLE001 - handed to the caller, which raises it
            self.error = err
        finally:
            self.done.put(True)


class _RenderThreads:
    """Daemon threads that run renders. A render that overruns keeps its thread until it
    notices the cancel flag; the next render gets another thread, so one stuck render never
    delays the others."""

    _MAX_IDLE = 4

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_RenderJob] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, job: _RenderJob) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # that idle thread takes this job
        self._jobs.put(job)
        if spawn:
            threading.Thread(target=self._serve, name="tavern-template", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            job.run()
            if job.budget.cancelled:
                return  # its caller is gone; the thread is not trusted with more work
            with self._lock:
                if self._idle >= self._MAX_IDLE:
                    return
                self._idle += 1


_THREADS = _RenderThreads()


def _input_chars(variables: dict[str, Any]) -> int:
    """Characters of chat text handed to a render (its message contents and string variables;
    names and roles are short)."""
    total = sum(len(v) for v in variables.values() if isinstance(v, str))
    messages = variables.get("messages")
    if isinstance(messages, list):
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                total += len(content)
    return total


def _limits() -> tuple[int, float]:
    return (MAX_STEPS, MAX_SECONDS)


def _poison(template: jinja2.Template, reason: str) -> None:
    with _POISON_LOCK:
        _POISONED[template] = (_limits(), reason)


def render_template(
    template: jinja2.Template, label: str, variables: dict[str, Any], *, trusted: bool = False
) -> str:
    """Render a compiled sandbox template under the limits; errors become one TemplateError line.

    The render runs on a worker thread, and at ``MAX_SECONDS`` this returns the error whatever
    the render is doing; ``trusted`` (Tavern's own template text) renders on this thread,
    stopped by the per-step clock instead (see the module docstring)."""
    with _POISON_LOCK:
        poisoned = _POISONED.get(template)
    if poisoned is not None and poisoned[0] == _limits():
        raise TemplateError(f"{label}: stopped: {poisoned[1]} (on an earlier render)")
    if trusted:  # no hand-off: a render of a bundled format is tens of microseconds
        return _render_here(template, label, variables, _Budget(_input_chars(variables)))
    job = _RenderJob(template, label, variables)
    _THREADS.submit(job)
    try:
        job.done.get(timeout=MAX_SECONDS)
    except queue.Empty:
        job.budget.cancelled = True
        reason = f"template ran longer than {MAX_SECONDS:g} s"
        _poison(template, reason)
        raise TemplateError(f"{label}: stopped: {reason}")
    if job.error is not None:
        raise job.error
    assert job.result is not None
    return job.result


def _render_here(template: jinja2.Template, label: str, variables: dict[str, Any], budget: _Budget) -> str:
    """The render itself, on this thread, under ``budget``."""
    token = _BUDGET.set(budget)
    try:
        out: list[str] = []
        size = 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise _LimitReached(f"template output is over {MAX_OUTPUT} characters")
            out.append(chunk)
        return "".join(out)
    except _LimitReached as err:
        reason = _one_line(str(err))
        if err.poisons:
            _poison(template, reason)
        raise TemplateError(f"{label}: stopped: {reason}") from None
    except SecurityError as err:
        raise TemplateError(f"{label}: blocked unsafe operation: {_one_line(str(err))}") from None
    except jinja2.UndefinedError as err:
        raise TemplateRefused(f"{label}: undefined value: {_one_line(str(err))}") from None
    except jinja2.TemplateError as err:
        # raise_exception() from the template itself lands here.
        raise TemplateRefused(f"{label}: template refused the conversation: {_one_line(str(err))}") from None
    except RecursionError:
        raise TemplateError(f"{label}: stopped: template recursed too deeply") from None
    except MemoryError:
        raise TemplateError(f"{label}: stopped: template ran out of memory") from None
    except Exception as err:  # noqa: BLE001 - a template error of any Python type
        raise TemplateError(f"{label}: render failed: {type(err).__name__}: {_one_line(str(err))}") from None
    finally:
        _BUDGET.reset(token)


# ---------------------------------------------------------------------------------------------
# Messages


def _normalize_messages(messages: Iterable[Any], label: str) -> list[dict[str, Any]]:
    """Copy messages into plain dicts, checking their shape (role, content, optional name)."""
    if isinstance(messages, (str, bytes, dict)):
        raise TemplateError(f"{label}: messages must be a list of {{role, content}} objects")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise TemplateError(f"{label}: message {i} is not an object")
        role = m.get("role")
        if role not in ROLES:
            raise TemplateError(f"{label}: message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        content = m.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TemplateError(f"{label}: message {i} content is not text")
        msg = dict(m)
        msg["content"] = content.replace("\r\n", "\n")
        if msg.get("name") is not None and not isinstance(msg["name"], str):
            raise TemplateError(f"{label}: message {i} name is not text")
        out.append(msg)
    return out


# Conversations used to learn a format's pieces and to compare a GGUF template with the bundled
# ones. Alternating, system first or not, so strict upstream templates accept them.
_PROBE_SYS = {"role": "system", "content": "You are a test."}
_PROBE_CONVERSATIONS: tuple[tuple[dict[str, str], ...], ...] = (
    (_PROBE_SYS, {"role": "user", "content": "Hi"}),
    (
        _PROBE_SYS,
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Who are you?"},
    ),
    ({"role": "user", "content": "Hi"},),
    (
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there."},
        {"role": "user", "content": "Tell me more."},
    ),
)

# Conversations on which the concatenation identity is checked: what the assembler sends
# (system prompt first, greeting first, author's note as a mid-chat system message...).
_IDENTITY_SAMPLES: tuple[tuple[dict[str, str], ...], ...] = (
    (
        _PROBE_SYS,
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And now?"},
    ),
    (
        _PROBE_SYS,
        {"role": "assistant", "content": "*waves* Welcome."},
        {"role": "user", "content": "Thanks."},
    ),
    ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey."}),
    (
        _PROBE_SYS,
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Two"},
        {"role": "system", "content": "[Note: keep it short]"},
        {"role": "user", "content": "Три 🎲"},
    ),
    ({"role": "system", "content": ""}, {"role": "user", "content": ""}),
)


@dataclass(frozen=True)
class PromptFormat:
    """One instruct format: a sandboxed chat template plus what the engine needs around it.

    ``template_adds_bos``: prompts already start with the BOS token text (the template writes
    ``bos_token``, or its first marker is the BOS token, as ``<|im_start|>`` is SmolLM2's), so
    the engine must not add a BOS token again. ``stop``: stop strings for generation. ``system_role``: "system" when the
    format has a system turn, "user_prefix" when the system prompt is folded into the first
    user turn (Gemma, Llama 2, Mistral before v7). ``names``: whether the template prints
    message ``name`` fields ("none" for all HF-style formats; the assembler puts "Name: " in the
    content itself; SillyTavern presets may say "always"/"force"). ``variables``: extra template
    variables (SillyTavern sequences may use ``user_name``/``char_name``).
    """

    id: str
    name: str
    source: str
    stop: list[str] = field(default_factory=list)
    bos_token: str = ""
    eos_token: str = ""
    template_adds_bos: bool = False
    system_role: str = "system"
    upstream: str = ""
    origin: str = "bundled"
    names: str = "none"
    match: list[str] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)

    # Frozen: formats are shared (the bundled ones are cached); derive copies with
    # with_tokens() / with_variables() / dataclasses.replace().

    @cached_property
    def _template(self) -> jinja2.Template:
        # Compiled on first use (loading every bundled format stays cheap); copies share it.
        return compile_template(self.source, self._label)

    def check(self) -> PromptFormat:
        """Compile the template now, so a broken one fails here; returns self."""
        _ = self._template
        return self

    @property
    def _label(self) -> str:
        return f"prompt format '{self.id}'"

    # -- rendering -----------------------------------------------------------------------------

    def _raw(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool,
        continue_final: bool = False,
        prefill_turn: bool = False,
    ) -> str:
        variables = dict(self.variables)
        variables.update(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            # Tavern's own flags (HF templates ignore them): the last message is left open,
            # for a continuation or for a prefilled new turn.
            continue_final=continue_final,
            tavern_prefill=prefill_turn,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        return render_template(
            self._template, self._label, variables, trusted=self.origin in _TRUSTED_ORIGINS
        )

    def _render_open(
        self, history: list[dict[str, Any]], open_message: dict[str, Any], prefill_turn: bool = False
    ) -> str:
        """Render ``history + [open_message]`` with the last message left open: everything up to
        the end of its content, none of its end-of-turn suffix."""
        marked = dict(open_message, content=open_message["content"] + _OPEN_MARK)
        out = self._raw(
            history + [marked], add_generation_prompt=False, continue_final=True, prefill_turn=prefill_turn
        )
        cut = out.rfind(_OPEN_MARK)
        if cut < 0:
            raise TemplateError(
                f"{self._label}: the template does not show the {open_message['role']} "
                "message being written, so it cannot be continued or prefilled"
            )
        return out[:cut]

    def render(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        continue_final: bool = False,
        prefill: str = "",
        *,
        gen_role: str = "assistant",
    ) -> str:
        """The prompt text for ``messages``.

        - ``add_generation_prompt``: end with the opening of a new assistant turn (the
          template's own generation prompt).
        - ``continue_final``: the last message stays open (no end-of-turn text) so the model
          extends it; the generation prompt is not added.
        - ``prefill``: text the new turn starts with ("Mira:"); the turn header is the one the
          template writes for a ``gen_role`` message in history, followed by ``prefill``.
        - ``gen_role``: whose turn is generated ("user" for impersonation).
        """
        msgs = _normalize_messages(messages, self._label)
        if gen_role not in ROLES:
            raise TemplateError(f"{self._label}: cannot generate a {gen_role!r} turn")
        if continue_final:
            if not msgs:
                raise TemplateError(f"{self._label}: there is no message to continue")
            return self._render_open(msgs[:-1], msgs[-1]) + prefill
        if prefill or (add_generation_prompt and gen_role != "assistant"):
            return self._render_open(msgs, {"role": gen_role, "content": ""}, prefill_turn=True) + prefill
        return self._raw(msgs, add_generation_prompt)

    # -- pieces, for incremental token counting ------------------------------------------------

    @cached_property
    def _trailer(self) -> str | None:
        """Text the template appends after the history when no generation prompt is asked for
        (Phi-3 writes eos_token there); None when the two renders do not line up."""
        probe = [{"role": "user", "content": "Hi"}]
        with_gen = self._raw(probe, True)
        without = self._raw(probe, False)
        if with_gen.startswith(without):
            return ""
        if (
            self.eos_token
            and without.endswith(self.eos_token)
            and with_gen.startswith(without[: -len(self.eos_token)])
        ):
            return self.eos_token
        return None

    def _history(self, messages: list[dict[str, Any]]) -> str:
        trailer = self._trailer
        if trailer is None:
            raise TemplateError(f"{self._label}: the format does not render message by message")
        out = self._raw(messages, False)
        if trailer and out.endswith(trailer):
            out = out[: -len(trailer)]
        return out

    def _extension(self, base: list[dict[str, Any]], message: dict[str, Any]) -> str:
        before = self._history(base)
        after = self._history(base + [message])
        if not after.startswith(before):
            raise TemplateError(
                f"{self._label}: adding a {message['role']} message rewrites earlier text; "
                "the format does not render message by message"
            )
        return after[len(before) :]

    def render_message(self, message: dict[str, Any], *, first: bool = False) -> str:
        """The text one message contributes to a rendered conversation.

        ``first=True`` for the conversation's first message: it may carry text a later message
        would not (a default system line, a leading system prompt written without a header).
        Only meaningful when :attr:`is_concatenative`; see there for the identity.
        """
        m = _normalize_messages([message], self._label)[0]
        if first:
            full = self._history([m])
            if not full.startswith(self.prefix):
                raise TemplateError(f"{self._label}: the format does not render message by message")
            return full[len(self.prefix) :]
        base: list[dict[str, Any]] = [{"role": "user", "content": "Hi"}]
        if m["role"] != "assistant":
            base.append({"role": "assistant", "content": "Hello."})
        return self._extension(base, m)

    def generation_prompt(self, role: str = "assistant") -> str:
        """The text that opens a new ``role`` turn after a conversation."""
        probe = [{"role": "user", "content": "Hi"}]
        history = self._history(probe)
        if role == "assistant":
            full = self._raw(probe, True)
        else:
            full = self._render_open(probe, {"role": role, "content": ""}, prefill_turn=True)
        if not full.startswith(history):
            raise TemplateError(f"{self._label}: the generation prompt rewrites earlier text")
        return full[len(history) :]

    @cached_property
    def prefix(self) -> str:
        """Text before the first message whatever its role (often the BOS token text)."""
        fulls, candidates = [], []
        for m in ({"role": "user", "content": "Hi"}, dict(_PROBE_SYS)):
            try:
                full = self._history([m])
                piece = self.render_message(m)
            except TemplateError:
                return ""
            fulls.append(full)
            if piece and full.endswith(piece):
                candidates.append(full[: -len(piece)])
        for candidate in candidates:
            if all(full.startswith(candidate) for full in fulls):
                return candidate
        return ""

    @cached_property
    def is_concatenative(self) -> bool:
        """True when, for the conversations the assembler sends,

        ``render(msgs) == prefix + render_message(msgs[0], first=True)
        + "".join(render_message(m) for m in msgs[1:]) + generation_prompt()``

        so a prompt can be grown and token-counted message by message. False for formats that
        fold the system prompt into a user turn (Llama 2, Mistral v1-v3, Gemma) or rewrite
        earlier text when a message is added; the assembler must then render whole prompts.
        """
        try:
            gen = self.generation_prompt()
            for sample in _IDENTITY_SAMPLES:
                msgs = [dict(m) for m in sample]
                built = self.prefix + self.render_message(msgs[0], first=True)
                built += "".join(self.render_message(m) for m in msgs[1:]) + gen
                if built != self.render(msgs):
                    return False
        except TemplateError:
            return False
        return True

    # -- variants ------------------------------------------------------------------------------

    def with_tokens(self, bos_token: str | None = None, eos_token: str | None = None) -> PromptFormat:
        """A copy using the model's own BOS/EOS token texts.

        ``template_adds_bos`` is worked out again for the new BOS text: a ChatML template starts
        with ``<|im_start|>``, which is SmolLM2's BOS token, so the engine must not add one.
        """
        new = dataclasses.replace(
            self,
            bos_token=self.bos_token if bos_token is None else bos_token,
            eos_token=self.eos_token if eos_token is None else eos_token,
        )
        if new.bos_token != self.bos_token:
            new = dataclasses.replace(new, template_adds_bos=_starts_with_bos(new))
        return new

    def with_variables(self, **variables: Any) -> PromptFormat:
        """A copy with extra template variables (e.g. ``user_name``/``char_name``)."""
        return dataclasses.replace(self, variables={**self.variables, **variables})


def _starts_with_bos(fmt: PromptFormat) -> bool:
    """Whether the format's prompts begin with the BOS token text (tried on the probe chats)."""
    if not fmt.bos_token:
        return False
    seen = False
    for probe in _PROBE_CONVERSATIONS:
        try:
            rendered = fmt.render([dict(m) for m in probe])
        except TemplateError:
            continue
        if not rendered.startswith(fmt.bos_token):
            return False
        seen = True
    return seen


# ---------------------------------------------------------------------------------------------
# Bundled formats


def _read_formats_toml(directory: Path) -> dict[str, Any]:
    path = directory / "formats.toml"
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TemplateError(f"{path}: bundled format list is missing") from None
    except tomllib.TOMLDecodeError as err:
        raise TemplateError(f"{path}: {_one_line(str(err))}") from None
    if not isinstance(data, dict) or not data:
        raise TemplateError(f"{path}: no formats defined")
    return data


_BUNDLED: dict[str, PromptFormat] | None = None


def load_bundled_formats(directory: Path | None = None) -> dict[str, PromptFormat]:
    """All bundled formats, by id, in ``formats.toml`` order (the order selection tries them).

    Loaded once and cached when ``directory`` is the default.
    """
    global _BUNDLED
    if directory is None and _BUNDLED is not None:
        return dict(_BUNDLED)
    base = directory or TEMPLATES_DIR
    meta = _read_formats_toml(base)
    formats: dict[str, PromptFormat] = {}
    for fid, info in meta.items():
        where = f"{base / 'formats.toml'} [{fid}]"
        if not isinstance(info, dict):
            raise TemplateError(f"{where}: expected a table")
        path = base / f"{fid}.jinja"
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as err:
            raise TemplateError(f"{path}: cannot read template: {err.strerror}") from None
        try:
            for pattern in info.get("match", []):
                re.compile(pattern)
            fmt = PromptFormat(
                id=fid,
                name=str(info["name"]),
                source=source,
                stop=[str(s) for s in info.get("stop", [])],
                bos_token=str(info.get("bos_token", "")),
                eos_token=str(info.get("eos_token", "")),
                template_adds_bos=bool(info["bos"]),
                system_role=str(info.get("system_role", "system")),
                upstream=str(info.get("upstream", "")),
                origin="bundled",
                match=[str(p) for p in info.get("match", [])],
            )
        except KeyError as err:
            raise TemplateError(f"{where}: missing key {err.args[0]!r}") from None
        except re.error as err:
            raise TemplateError(f"{where}: bad match pattern: {err}") from None
        if fmt.system_role not in ("system", "user_prefix"):
            raise TemplateError(f"{where}: system_role must be 'system' or 'user_prefix'")
        formats[fid] = fmt
    if directory is None:
        _BUNDLED = formats
    return dict(formats)


def get_format(format_id: str) -> PromptFormat:
    """A bundled format by id."""
    formats = load_bundled_formats()
    try:
        return formats[format_id]
    except KeyError:
        raise TemplateError(f"unknown prompt format '{format_id}'; known: {', '.join(formats)}") from None


def format_from_jinja(
    source: str, bos_token: str, eos_token: str, name: str, stop: list[str] | None = None
) -> PromptFormat:
    """A format from foreign template text (a GGUF's ``tokenizer.chat_template``, a user file).

    Compiled in the sandbox and tried once on a probe conversation, so a broken template fails
    here with one TemplateError line rather than at the first message.
    """
    fmt = PromptFormat(
        id="gguf" if not name else f"custom:{name}",
        name=name or "model's own template",
        source=source,
        stop=list(stop) if stop is not None else ([eos_token] if eos_token else []),
        bos_token=bos_token,
        eos_token=eos_token,
        template_adds_bos=False,
        origin="gguf",
    ).check()
    rendered = None
    last_error = TemplateError(f"{fmt._label}: the template rendered no test conversation")
    for probe in _PROBE_CONVERSATIONS:
        try:
            rendered = fmt.render([dict(m) for m in probe])
            break
        except TemplateRefused as err:  # e.g. "System role not supported": try the next probe
            last_error = err
    if rendered is None:
        raise last_error
    return dataclasses.replace(fmt, template_adds_bos=_starts_with_bos(fmt))


def _renders_like(candidate: PromptFormat, foreign: PromptFormat) -> bool:
    """True when ``candidate`` renders every probe conversation the foreign template accepts
    exactly as it does (with and without a generation prompt), and it accepts at least two."""
    accepted = 0
    for probe in _PROBE_CONVERSATIONS:
        msgs = [dict(m) for m in probe]
        try:
            theirs = (foreign._raw(msgs, True), foreign._raw(msgs, False))
        except TemplateError:
            continue
        try:
            ours = (candidate._raw(msgs, True), candidate._raw(msgs, False))
        except TemplateError:
            return False
        if ours != theirs:
            return False
        accepted += 1
    return accepted >= 2


def _name_match(formats: dict[str, PromptFormat], text: str) -> PromptFormat | None:
    for fmt in formats.values():
        if any(re.search(p, text, re.IGNORECASE) for p in fmt.match):
            return fmt
    return None


def _normalize_ws(text: str) -> str:
    return " ".join(text.split())


def select_format(
    model_name: str,
    gguf_template: str | None,
    override: str | None,
    *,
    bos_token: str = "",
    eos_token: str = "",
) -> tuple[PromptFormat, str]:
    """Choose the format for a model; returns the format and a one-line reason.

    Order: the user's ``override`` (a bundled id, or "gguf" for the model's own template);
    a bundled format that renders exactly like the GGUF template; the GGUF template itself
    (sandboxed); a bundled format whose ``match`` patterns fit the model name; ChatML as a
    guess. ``bos_token``/``eos_token`` are the model's token texts, when known; the returned
    format uses them.
    """
    formats = load_bundled_formats()

    def tokens(fmt: PromptFormat) -> PromptFormat:
        return fmt.with_tokens(bos_token or None, eos_token or None)

    if override:
        if override in ("gguf", "model"):
            if not gguf_template:
                raise TemplateError(
                    f"format override '{override}': the model has no chat template of its own"
                )
            fmt = format_from_jinja(gguf_template, bos_token, eos_token, "")
            return fmt, "chosen by you: the model's own chat template"
        if override not in formats:
            raise TemplateError(f"unknown prompt format '{override}'; known: gguf, {', '.join(formats)}")
        return tokens(formats[override]), f"chosen by you: {formats[override].name}"

    broken = ""
    if gguf_template:
        wanted = _normalize_ws(gguf_template)
        for fmt in formats.values():
            if _normalize_ws(fmt.source) == wanted:
                return tokens(fmt), f"the model's chat template is the bundled {fmt.name} template"
        try:
            # Placeholder token texts when the model's are unknown: both sides get the same.
            foreign = format_from_jinja(gguf_template, bos_token or "<s>", eos_token or "</s>", "")
            own = format_from_jinja(gguf_template, bos_token, eos_token, "")
        except TemplateError as err:
            broken = f" (its own chat template is unusable: {err})"
        else:
            for fmt in formats.values():
                if _renders_like(fmt.with_tokens(foreign.bos_token, foreign.eos_token), foreign):
                    return tokens(
                        fmt
                    ), f"the model's chat template renders like the bundled {fmt.name} format"
            family = _name_match(formats, gguf_template) or _name_match(formats, model_name or "")
            if family is not None:
                own = dataclasses.replace(
                    own, stop=list(dict.fromkeys(family.stop + ([eos_token] if eos_token else [])))
                )
            return own, "using the model's own chat template (sandboxed)"

    if model_name:
        by_name = _name_match(formats, model_name)
        if by_name is not None:
            return tokens(by_name), f"model name '{model_name}' looks like {by_name.name}{broken}"
    if gguf_template:
        return tokens(formats["chatml"]), f"guess: ChatML{broken}"
    return tokens(
        formats["chatml"]
    ), "guess: the model has no chat template and its name matches no known format, so ChatML"
