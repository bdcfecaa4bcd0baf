"""The one hardened Jinja environment every chat template is compiled in.

Who calls it: :class:`tavern.prompt.templates.PromptFormat` and the story strings of
:mod:`tavern.prompt.st_presets` compile their template text with :func:`compile_template`, then
render it with :func:`tavern.prompt.template_render.render_template`.

Every template, bundled or not (a GGUF's ``tokenizer.chat_template``, an imported preset), is
compiled here: Jinja's ``ImmutableSandboxedEnvironment`` (no ``__class__``/``__globals__`` walks,
no mutating builtins), the parsed template rewritten so every loop and ``~`` goes through the
guards of :mod:`tavern.prompt.template_guards`, every operator, call and filter checked against
the render's limits, and the same settings as transformers' chat-template environment, so
GGUF/HF templates render exactly as they do there. A hostile template ends in one
:class:`~tavern.errors.TemplateError` line instead of running code or eating memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import cast

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from tavern.errors import TemplateError
from tavern.prompt.template_filters import wrap_filters
from tavern.prompt.template_guards import (
    BUDGET,
    MAX_INT_BITS,
    MAX_SOURCE_CHARS,
    LimitReached,
    check_format_string,
    check_printf,
    check_size,
    check_str_method,
    check_text,
    check_value,
    finalize,
    guarded_concat,
    guarded_iter,
    safe_range,
    seq_kind,
    tick,
)

# A macro call costs far more than a loop step (see _Sandbox.call).
_MACRO_CALL_STEPS = 20


def _raise_exception(message: object) -> None:
    # Chat templates call this to refuse a conversation (HF provides it the same way).
    raise jinja2.TemplateError(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(str(fmt))


class _GenerationTag(Extension):
    """HF's ``{% generation %}...{% endgeneration %}`` (marks assistant text for training);
    rendering just outputs the body."""

    tags = frozenset({"generation"})  # type: ignore[assignment]

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _GuardLoops(NodeTransformer):
    """Rewrites the parsed template: every for-loop iterable goes through ``guarded_iter`` and
    every ``~`` concatenation through ``guarded_concat``."""

    def __init__(self, environment: jinja2.Environment) -> None:
        self.environment = environment

    def _call(self, name: str, arg: nodes.Expr, lineno: int) -> nodes.Call:
        call = nodes.Call(nodes.Name(name, "load"), [arg], [], None, None)
        call.set_lineno(lineno)
        call.set_environment(self.environment)
        return call

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        # Jinja types For.iter as any Node; the parser only puts an expression there.
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
        # NodeTransformer.visit is untyped; visiting a Template gives back that Template.
        return cast(nodes.Template, _GuardLoops(self).visit(tree))

    def call_binop(self, context: Context, operator: str, left: object, right: object) -> object:
        budget = BUDGET.get()
        if budget is not None:
            budget.tick()
        if operator == "+" and type(left) is str and type(right) is str:
            # The common case, kept cheap: chat templates join their markup with `+`.
            n = len(left) + len(right)
            if budget is not None and n <= budget.max_str and budget.built + n <= budget.max_built:
                budget.built += n
                return left + right
            check_size(n)  # too big: raises before building it
            out = left + right
            check_value(out)  # over the render's total: raises
            return out
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int):
                    check_size(len(seq) * max(times, 0), seq_kind(seq))
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise LimitReached(f"template computed an integer over {MAX_INT_BITS} bits")
        elif operator == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and abs(left) > 1
                and left.bit_length() * right > MAX_INT_BITS
            ):
                raise LimitReached(f"template computed an integer over {MAX_INT_BITS} bits")
        elif operator == "+":
            if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
                check_size(len(left) + len(right), seq_kind(left))
        elif operator == "%" and isinstance(left, str):
            check_printf(left)
            check_text(right)
        result: object = super().call_binop(context, operator, left, right)
        check_value(result)
        return result

    def call(__self, __context: Context, __obj: object, *args: object, **kwargs: object) -> object:  # noqa: PYI063 - Jinja's signature
        tick()
        if isinstance(__obj, Macro):
            # A macro call costs far more than a loop step; count it so, or a recursive
            # macro could run for the whole time limit inside the step budget.
            budget = BUDGET.get()
            if budget is not None:
                budget.steps += _MACRO_CALL_STEPS
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        result: object = super().call(__context, __obj, *args, **kwargs)
        check_value(result)
        return result

    def wrap_str_format(self, value: object) -> Callable[..., str] | None:
        # str.format / format_map, checked for huge widths when the method is looked up.
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map"):
            check_format_string(owner)
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None

        @functools.wraps(wrapped)
        def checked(*args: object, **kwargs: object) -> str:
            # The arguments, as they will be printed (a list of a big string's references).
            for arg in (*args, *kwargs.values()):
                check_text(arg)
            return wrapped(*args, **kwargs)

        return checked

    def unsafe_undefined(self, obj: object, attribute: str) -> jinja2.Undefined:
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


def _make_sandbox() -> _Sandbox:
    # Same settings as transformers' chat-template environment, so GGUF/HF templates render
    # exactly as they do there.
    env = _Sandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, _GenerationTag],
        finalize=finalize,
    )
    env.globals.pop("lipsum", None)  # lipsum(n=10**9) is an easy memory bomb, and unused
    env.globals.update(
        range=safe_range,
        raise_exception=_raise_exception,
        strftime_now=_strftime_now,
        __tavern_iter=guarded_iter,
        __tavern_concat=guarded_concat,
    )
    wrap_filters(env)
    return env


_SANDBOX = _make_sandbox()


_COMPILED: dict[str, jinja2.Template] = {}


def one_line(text: str) -> str:
    """An error message on one line (Jinja's and tomllib's may span several)."""
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
            f"{label}: syntax error on line {err.lineno}: {one_line(err.message or '')}"
        ) from None
    except RecursionError:
        raise TemplateError(f"{label}: template is nested too deeply") from None
    except Exception as err:  # noqa: BLE001 - anything the compiler throws is the template's fault
        raise TemplateError(f"{label}: cannot compile template: {one_line(str(err))}") from None
    if len(_COMPILED) >= 256:  # copies made by with_tokens() share the compiled template
        _COMPILED.clear()
    _COMPILED[source] = template
    return template
