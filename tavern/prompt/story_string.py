"""A context preset's story string (Handlebars) translated to sandboxed Jinja source.

Called by :func:`tavern.prompt.st_presets.context_preset_to_story_template`, whose
:class:`~tavern.prompt.st_presets.StoryTemplate` compiles and renders the result over an ``F``
dict of fields. The subset is what SillyTavern's story strings use: ``{{x}}``, ``{{{x}}}``,
``{{#if x}}``, ``{{#unless x}}``, ``{{else}}``, ``{{else if x}}``, ``{{/if}}``, comments, ``~``
whitespace control and Handlebars' standalone-line rule. ``{{trim}}`` and any other
``{{macro}}`` (a name the caller does not give, or no Handlebars name at all) are kept as
written, for macro substitution, as SillyTavern's ``helperMissing`` does. Anything else raises
:class:`~tavern.errors.PresetError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tavern.errors import PresetError

_HB_TOKEN = re.compile(r"\{\{\{(~?)\s*(.*?)\s*(~?)\}\}\}|\{\{(~?)(!--.*?--|![^}]*?|.*?)(~?)\}\}", re.DOTALL)
_HB_IDENT = re.compile(r"[^\s!\"#%-,./;->@\[-^`{-~]+")  # Handlebars' ID token


def jinja_literal(text: str) -> str:
    """A Jinja string literal for ``text`` (Jinja decodes literals with unicode-escape)."""
    return "'" + text.encode("unicode_escape").decode("ascii").replace("'", "\\'") + "'"


@dataclass
class _HbTag:
    kind: str  # "var", "if", "unless", "elif", "else", "end", "comment"
    arg: str
    raw: str
    strip_before: bool
    strip_after: bool

    @property
    def is_block(self) -> bool:
        return self.kind in ("if", "unless", "elif", "else", "end", "comment")


def translate_story_string(story: str, where: str) -> str:
    """Handlebars story string -> Jinja source over a ``F`` dict of fields; ``where`` names the
    preset in errors."""
    texts, tags = _split(story, where)
    _standalone_lines(texts, tags)
    _strip_whitespace(texts, tags)
    return _emit(texts, tags, where)


def _split(story: str, where: str) -> tuple[list[str], list[_HbTag]]:
    """The text around the tags and the tags: text ``k`` comes before tag ``k``, one more text
    after the last tag."""
    texts: list[str] = []
    tags: list[_HbTag] = []
    pos = 0
    for match in _HB_TOKEN.finditer(story):
        texts.append(story[pos : match.start()])
        tags.append(_parse_hb_tag(match, where))
        pos = match.end()
    texts.append(story[pos:])
    return texts, tags


def _parse_hb_tag(match: re.Match[str], where: str) -> _HbTag:
    raw = match.group(0)
    if match.group(2) is not None:  # {{{x}}}: same as {{x}} (SillyTavern renders without escaping)
        return _HbTag("var", match.group(2).strip(), raw, bool(match.group(1)), bool(match.group(3)))
    before, body, after = bool(match.group(4)), match.group(5).strip(), bool(match.group(6))
    if body.startswith("!"):
        return _HbTag("comment", "", raw, before, after)
    head, _, rest = body.partition(" ")
    rest = rest.strip()
    if head == "#if" or head == "#unless":
        if not _HB_IDENT.fullmatch(rest):
            raise PresetError(f"{where}: '{raw}' needs one field name")
        return _HbTag(head[1:], rest, raw, before, after)
    if head == "else":
        if not rest:
            return _HbTag("else", "", raw, before, after)
        cond, _, name = rest.partition(" ")
        if cond != "if" or not _HB_IDENT.fullmatch(name.strip()):
            raise PresetError(f"{where}: unsupported '{raw}' (only {{{{else}}}} and {{{{else if x}}}})")
        return _HbTag("elif", name.strip(), raw, before, after)
    if head in ("/if", "/unless"):
        return _HbTag("end", head[1:], raw, before, after)
    if head.startswith(("#", "/", ">", "^")):
        raise PresetError(f"{where}: Handlebars helper '{raw}' is not supported in story strings")
    return _HbTag("var", body, raw, before, after)


def _standalone_lines(texts: list[str], tags: list[_HbTag]) -> None:
    """Handlebars' standalone rule: a block tag alone on its line takes the line with it."""
    last = len(tags) - 1
    for k, tag in enumerate(tags):
        if not tag.is_block:
            continue
        prev, nxt = texts[k], texts[k + 1]
        prev_line = prev.rsplit("\n", 1)[-1]
        next_line = nxt.split("\n", 1)[0]
        starts_line = ("\n" in prev or k == 0) and prev_line.strip(" \t") == ""
        ends_line = ("\n" in nxt or k == last) and next_line.strip(" \t\r") == ""
        if starts_line and ends_line:
            texts[k] = prev[: len(prev) - len(prev_line)]
            texts[k + 1] = nxt.split("\n", 1)[1] if "\n" in nxt else ""


def _strip_whitespace(texts: list[str], tags: list[_HbTag]) -> None:
    """``~`` whitespace control: ``{{~x}}`` strips the text before, ``{{x~}}`` the text after."""
    for k, tag in enumerate(tags):
        if tag.strip_before:
            texts[k] = texts[k].rstrip()
        if tag.strip_after:
            texts[k + 1] = texts[k + 1].lstrip()


def _emit(texts: list[str], tags: list[_HbTag], where: str) -> str:
    """The Jinja source: texts as literals, tags as lookups in ``F`` and ``if`` blocks."""
    out: list[str] = []
    depth = 0
    for k, tag in enumerate(tags):
        if texts[k]:
            out.append("{{ " + jinja_literal(texts[k]) + " }}")
        depth = _emit_tag(tag, depth, out, where)
    if texts[-1]:
        out.append("{{ " + jinja_literal(texts[-1]) + " }}")
    if depth:
        raise PresetError(f"{where}: story string has an unclosed {{{{#if}}}} block")
    return "".join(out)


def _emit_tag(tag: _HbTag, depth: int, out: list[str], where: str) -> int:
    """Append the Jinja of one tag to ``out``; the ``if`` depth after it."""
    if tag.kind == "var" and not _HB_IDENT.fullmatch(tag.arg):
        # Not a Handlebars field name ({{random::a::b}} is one; {{roll 1d6}} or
        # {{ ''.x }} are not): keep the text as written, for macro substitution.
        out.append("{{ " + jinja_literal(tag.raw) + " }}")
    elif tag.kind == "var":
        key = tag.arg
        # A field the caller gave -> its value; anything else ({{trim}}, {{random::a::b}},
        # {{user}} when not given...) stays as a macro for substitution, as SillyTavern's
        # helperMissing does.
        out.append(
            "{{ F["
            + jinja_literal(key)
            + "] if "
            + jinja_literal(key)
            + " in F else "
            + jinja_literal("{{" + key + "}}")
            + " }}"
        )
    elif tag.kind == "if":
        depth += 1
        out.append("{% if F.get(" + jinja_literal(tag.arg) + ") %}")
    elif tag.kind == "unless":
        depth += 1
        out.append("{% if not F.get(" + jinja_literal(tag.arg) + ") %}")
    elif tag.kind in ("elif", "else"):
        if depth == 0:
            raise PresetError(f"{where}: '{tag.raw}' outside an {{{{#if}}}} block")
        out.append("{% elif F.get(" + jinja_literal(tag.arg) + ") %}" if tag.kind == "elif" else "{% else %}")
    elif tag.kind == "end":
        if depth == 0:
            raise PresetError(f"{where}: '{tag.raw}' closes no block")
        depth -= 1
        out.append("{% endif %}")
    return depth
