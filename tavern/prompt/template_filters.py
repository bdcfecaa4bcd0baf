"""The sandbox's Jinja filters: the built-in ones that can allocate without bound, replaced by
size-checked versions, HF's ``tojson``, and a guard around every filter.

Who calls it: :func:`tavern.prompt.template_sandbox.compile_template`'s environment is built
with :func:`wrap_filters` once, at import.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable

import jinja2
from jinja2.nodes import EvalContext

from tavern.prompt.template_guards import (
    MAX_RANGE,
    LimitReached,
    check_printf,
    check_size,
    check_text,
    check_value,
    guarded_iter,
    tick,
)

# Filters written in Python loops, many times slower per character than the rest.
_SLOW_FILTER_CHARS = {"urlize": 100_000, "wordwrap": 100_000}
# Filters that never turn a list or dict argument into text (the others may: `|string`, `|join`,
# `|tojson`, `|trim` on a list...), so their arguments need no size estimate.
_NON_TEXT_FILTERS = frozenset(
    "abs attr batch count d default dictsort first float groupby int items last length list map "
    "max min random reject rejectattr reverse round select selectattr slice sort sum unique".split()
)


def _tojson(
    value: object,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # HF's tojson filter (no HTML escaping, unlike Jinja's built-in one).
    if isinstance(indent, int) and indent > 64:
        raise LimitReached("tojson indent is too large")
    check_text(value)
    out = json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    check_size(len(out))
    return out


def wrap_filters(env: jinja2.Environment) -> None:
    """Replace the built-in filters that can be made to allocate without bound."""
    f = env.filters
    orig_center, orig_indent, orig_replace = f["center"], f["indent"], f["replace"]
    orig_join, orig_format, orig_batch, orig_slice = f["join"], f["format"], f["batch"], f["slice"]
    orig_wordwrap = f["wordwrap"]

    def center(value: object, width: int = 80) -> str:
        check_size(int(width))
        return str(orig_center(value, width))

    def indent(s: object, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        w = len(width) if isinstance(width, str) else int(width)
        check_size((str(s).count("\n") + 1) * (w + 1) + len(str(s)))
        return str(orig_indent(s, width, first, blank))

    def format_(value: object, *args: object, **kwargs: object) -> str:
        if isinstance(value, str):
            check_printf(value)
        return str(orig_format(value, *args, **kwargs))

    def batch(value: object, linecount: int, fill_with: object = None) -> object:
        if int(linecount) > MAX_RANGE:
            raise LimitReached("batch() size is too large")
        return orig_batch(value, linecount, fill_with)

    def slice_(value: object, slices: int, fill_with: object = None) -> object:
        if int(slices) > MAX_RANGE:
            raise LimitReached("slice() count is too large")
        return orig_slice(value, slices, fill_with)

    def wordwrap(s: str, width: int = 79, *args: object, **kwargs: object) -> str:
        check_size(len(str(s)) * 2)
        return str(orig_wordwrap(env, s, width, *args, **kwargs))

    def replace(eval_ctx: EvalContext, s: object, old: object, new: object, count: int | None = None) -> str:
        text, o, n = str(s), str(old), str(new)
        hits = text.count(o) if o else len(text) + 1
        check_size(len(text) + hits * max(len(n) - len(o), 0))
        return str(orig_replace(eval_ctx, s, old, new, count))

    def join(eval_ctx: EvalContext, value: Iterable[object], d: str = "", attribute: str | int | None = None) -> str:
        items = list(guarded_iter(value))
        check_size(sum(len(x) if isinstance(x, str) else 16 for x in items) + len(d) * len(items))
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


def _guard_filter(name: str, func: Callable[..., object]) -> Callable[..., object]:
    """Every filter call is a step (so the cancel flag and the step limit see a loop of
    filter calls), its list or dict arguments are size-checked before a filter prints them,
    and what it returns counts as built."""
    text_args = name not in _NON_TEXT_FILTERS
    slow_limit = _SLOW_FILTER_CHARS.get(name)
    # Jinja passes the context / environment first to some filters: not template values.
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps jinja_pass_arg
    def guarded(*args: object, **kwargs: object) -> object:
        tick()
        values = args[skip:]
        if text_args:
            for value in values:
                if type(value) is not str:  # the usual case: a string filter on a string
                    check_text(value)
            for value in kwargs.values():
                check_text(value)
        if slow_limit is not None and values and len(str(values[0])) > slow_limit:
            raise LimitReached(f"{name} filter on over {slow_limit} characters")
        result = func(*args, **kwargs)
        check_value(result)
        return result

    return guarded
