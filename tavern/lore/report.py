"""Human and JSON views of a `ScanResult`, for `tavern lore scan` and the TUI.

Callers: the CLI (`tavern lore scan LOREBOOK ... [--json]`) and tests. Plain text only: no
rich/textual here, the CLI decides how to print.
"""

from __future__ import annotations

from collections.abc import Sequence

from tavern.lore.scan import ScanResult

__all__ = ["format_scan_report", "scan_result_to_json"]

_POSITION_NAMES = {
    0: "before char",
    1: "after char",
    2: "AN top",
    3: "AN bottom",
    4: "@depth",
    5: "examples top",
    6: "examples bottom",
}
_ROLE_NAMES = {0: "system", 1: "user", 2: "assistant"}


def _where(position: int, depth: int, role: int) -> str:
    if position == 4:
        return f"@depth {depth} {_ROLE_NAMES.get(role, str(role))}"
    return _POSITION_NAMES.get(position, str(position))


def _title(book: str, uid: int, comment: str) -> str:
    label = f"{book}#{uid}"
    return f"{label} {comment}" if comment else label


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns; the last column is free text and not padded."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.append("  ".join([*cells, row[-1]]).rstrip())
    return out


def format_scan_report(result: ScanResult) -> str:
    """A readable report: activated entries with why, rejected ones with the rule, problems."""
    summary = (
        f"Activated {len(result.activated)} entries, {result.tokens_used} of {result.budget} budget tokens."
    )
    lines = [summary]
    if result.activated:
        lines.append("")
        lines.append("ACTIVATED")
        rows: list[tuple[str, ...]] = [("entry", "order", "where", "why")]
        for item in result.activated:
            rows.append(
                (
                    _title(item.book, item.uid, item.comment),
                    _order(item.order),
                    _where(item.position, item.depth, item.role),
                    item.reason,
                )
            )
        lines.extend("  " + line for line in _table(rows))
    if result.rejected:
        lines.append("")
        lines.append("KEPT OUT")
        rule_rows: list[tuple[str, ...]] = [("entry", "rule")]
        for rej in result.rejected:
            rule_rows.append((_title(rej.book, rej.uid, rej.comment), rej.reason))
        lines.extend("  " + line for line in _table(rule_rows))
    if result.broken:
        lines.append("")
        lines.append("PROBLEMS")
        for bad in result.broken:
            lines.append(f"  {_title(bad.book, bad.uid, bad.comment)}: {bad.message}")
    if not result.activated and not result.rejected and not result.broken:
        lines.append("No entry matched.")
    return "\n".join(lines)


def _order(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def scan_result_to_json(result: ScanResult) -> dict[str, object]:
    """The result as plain JSON-ready data (the `--json` output)."""
    return {
        "activated": [
            {
                "book": item.book,
                "source": item.kind,
                "uid": item.uid,
                "comment": item.comment,
                "position": item.position,
                "depth": item.depth,
                "role": item.role,
                "order": item.order,
                "reason": item.reason,
                "content": item.content,
            }
            for item in result.activated
        ],
        "rejected": [
            {
                "book": rej.book,
                "source": rej.kind,
                "uid": rej.uid,
                "comment": rej.comment,
                "reason": rej.reason,
            }
            for rej in result.rejected
        ],
        "broken": [
            {"book": bad.book, "uid": bad.uid, "comment": bad.comment, "message": bad.message}
            for bad in result.broken
        ],
        "tokens_used": result.tokens_used,
        "budget": result.budget,
        "timed_state": result.timed_state,
    }
