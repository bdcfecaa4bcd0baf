"""Roleplay Markdown to styled spans: `*actions*`, "speech", **bold**, `code`, code fences,
headings, lists and quotes, as SillyTavern shows them.

`render(text)` returns the text to show and `(start, end, kind)` spans over it; the message
widget maps each kind to a style of the current theme. It is one pass of line splitting and
one regex scan per line (no Markdown library, no tree), so re-rendering a streaming reply on
every batch stays cheap. Markers that are not closed yet (a reply half-way through
`*she turns`) stay as typed until the closing one arrives.
"""

from __future__ import annotations

import re

from tavern.textsafe import terminal_safe

Span = tuple[int, int, str]

KINDS = ("action", "speech", "bold", "code", "code_block", "heading", "quote", "fence")

_INLINE = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|\*\*(?P<bold>[^*\n]+?)\*\*"
    r"|(?<![\w*])\*(?P<action>[^*\n]+?)\*(?!\w)"
    r"|(?<!\w)_(?P<uaction>[^_\n]+?)_(?!\w)"
)
_SPEECH = re.compile(r'"[^"\n]*"|“[^”\n]*”')
_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(?=\S)")
_QUOTE = re.compile(r"^>\s?")


def render(text: str) -> tuple[str, list[Span]]:
    text = terminal_safe(text)  # before the spans are measured: a mark can be longer than its code
    out: list[str] = []
    spans: list[Span] = []
    pos = 0
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if m and (fence is None or m.group(1) == fence):
            if fence is None:
                fence = m.group(1)
                label = f"─ {m.group(2)} " if m.group(2) else "─"
            else:
                fence, label = None, "─"
            pos = _emit(out, spans, pos, label, [(0, len(label), "fence")])
            continue
        if fence is not None:
            pos = _emit(out, spans, pos, line, [(0, len(line), "code_block")] if line else [])
            continue
        shown, line_spans = _render_line(line)
        pos = _emit(out, spans, pos, shown, line_spans)
    return "\n".join(out), spans


def _emit(out: list[str], spans: list[Span], pos: int, line: str, line_spans: list[Span]) -> int:
    spans.extend((pos + a, pos + b, kind) for a, b, kind in line_spans if b > a)
    out.append(line)
    return pos + len(line) + 1


def _render_line(line: str) -> tuple[str, list[Span]]:
    block: str | None = None
    m = _HEADING.match(line)
    if m:
        line, block = line[m.end() :], "heading"
    else:
        m = _QUOTE.match(line)
        if m:
            line, block = "▌ " + line[m.end() :], "quote"
        else:
            m = _BULLET.match(line)
            if m:
                line = m.group(1) + "• " + line[m.end() :]
    shown, spans = _inline(line)
    if block is not None:
        spans.insert(0, (0, len(shown), block))
    return shown, spans


def _inline(line: str) -> tuple[str, list[Span]]:
    """Markers first (code, bold, actions; their markers removed), then "speech" over the
    result, so speech can hold bold words and actions can hold speech."""
    if not any(c in line for c in '`*_"“'):
        return line, []  # most lines of prose: nothing to scan
    parts: list[str] = []
    spans: list[Span] = []
    code: list[tuple[int, int]] = []
    length = 0
    last = 0
    if any(c in line for c in "`*_"):
        for m in _INLINE.finditer(line):
            parts.append(line[last : m.start()])
            length += m.start() - last
            kind = m.lastgroup or ""
            inner = m.group(kind)
            if kind == "uaction":
                kind = "action"
            parts.append(inner)
            spans.append((length, length + len(inner), kind))
            if kind == "code":
                code.append((length, length + len(inner)))
            length += len(inner)
            last = m.end()
    parts.append(line[last:])
    shown = "".join(parts)
    if '"' in shown or "“" in shown:
        for s in _SPEECH.finditer(shown):
            if not any(a <= s.start() < b for a, b in code):
                spans.append((s.start(), s.end(), "speech"))
    return shown, spans
