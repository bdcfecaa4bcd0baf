"""Helpers for the lorebook tests: entries shaped exactly as SillyTavern writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tavern.lore import LoreSettings, ScanMessage, ScanResult, lorebook_from_dict, scan_lore
from tavern.lore.model import Lorebook

DATA = Path(__file__).resolve().parent.parent / "data" / "lore"
BUNDLED = Path(__file__).resolve().parent.parent.parent / "lorebooks"

# SillyTavern's `newWorldInfoEntryTemplate` (public/scripts/world-info.js, Sep 2024), the
# fields of every entry its editor creates, in its order; `uid` first, `displayIndex` last.
ST_TEMPLATE: dict[str, Any] = {
    "key": [],
    "keysecondary": [],
    "comment": "",
    "content": "",
    "constant": False,
    "vectorized": False,
    "selective": True,
    "selectiveLogic": 0,
    "addMemo": False,
    "order": 100,
    "position": 0,
    "disable": False,
    "excludeRecursion": False,
    "preventRecursion": False,
    "delayUntilRecursion": 0,
    "probability": 100,
    "useProbability": True,
    "depth": 4,
    "group": "",
    "groupOverride": False,
    "groupWeight": 100,
    "scanDepth": None,
    "caseSensitive": None,
    "matchWholeWords": None,
    "useGroupScoring": None,
    "automationId": "",
    "role": 0,
    "sticky": None,
    "cooldown": None,
    "delay": None,
}


def st_entry(uid: int, **fields: Any) -> dict[str, Any]:
    """A world-file entry as SillyTavern writes it, with `fields` (ST names) changed."""
    entry = {"uid": uid, **ST_TEMPLATE}
    for name, value in fields.items():
        assert name in entry or name in ("displayIndex", "characterFilter"), name
        entry[name] = value
    entry.setdefault("displayIndex", uid)
    return entry


def make_book(*entries: dict[str, Any], name: str = "world") -> Lorebook:
    return lorebook_from_dict({"entries": {str(e["uid"]): e for e in entries}}, name)


def words(text: str) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def chat(*lines: str | tuple[str, str]) -> list[ScanMessage]:
    """Messages oldest first; a plain string alternates User / Mira starting with User."""
    out = []
    for i, line in enumerate(lines):
        if isinstance(line, tuple):
            name, text = line
        else:
            name, text = ("User", line) if i % 2 == 0 else ("Mira", line)
        out.append(ScanMessage(name=name, text=text, is_user=name == "User"))
    return out


def run(
    books: Lorebook | list[tuple[str, Lorebook]],
    messages: list[ScanMessage],
    context: int = 8192,
    timed_state: dict[str, Any] | None = None,
    chat_length: int | None = None,
    seed: int | None = 0,
    **settings: Any,
) -> ScanResult:
    if isinstance(books, Lorebook):
        books = [("character", books)]
    return scan_lore(
        books,
        messages,
        lore_settings(**settings),
        context,
        words,
        timed_state=timed_state,
        chat_length=chat_length,
        rng_seed=seed,
    )


def uids(result: ScanResult) -> list[int]:
    return sorted(item.uid for item in result.activated)


def rejected(result: ScanResult) -> dict[int, str]:
    return {item.uid: item.reason for item in result.rejected}


def lore_settings(**settings) -> LoreSettings:
    """LoreSettings from keyword values; `cache_aware_linger=N` is [lore] cache_aware on with
    linger N (0: off), as the scan sees it."""
    linger = settings.pop("cache_aware_linger", 0)
    if linger:
        settings.update(cache_aware=True, linger=linger)
    return LoreSettings(**settings)
