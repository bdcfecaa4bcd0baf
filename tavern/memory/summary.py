"""The rolling summary: what has scrolled out of the prompt window, in a few sentences.

The text lives in the chat's metadata as `tavern_summary` (the assembler's summary slot reads
it); `tavern_summary_meta` holds the range of messages it covers (`end`: the first message not
covered), the prompt override, whether it is switched off, and when it was written. The
summary is extended, never rewritten from scratch: each step gives the model the summary so
far and the next messages after `end`, as many as fit, and stores the result with the new
`end`. Steps run on the engine's background sequence (`SEQ_BACKGROUND`), which has its own KV
cells, so the chat's cache survives; a step is cancelled when a reply starts, and retried.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tavern.engines.base import SEQ_BACKGROUND
from tavern.errors import TavernError

if TYPE_CHECKING:
    from tavern.config import MemorySettings
    from tavern.engines.base import GenerationRequest
    from tavern.memory.ports import ChatHandle, SummarySource
    from tavern.store.chatfile import Chat

TEXT_KEY = "tavern_summary"
META_KEY = "tavern_summary_meta"
MARGIN = 48
"""Tokens kept free beside the summary prompt (template seams, rounding)."""


def summary_meta(chat: Chat) -> dict[str, object]:
    meta = chat.header.chat_metadata.get(META_KEY)
    return dict(meta) if isinstance(meta, dict) else {}


def position(meta: Mapping[str, object], key: str) -> int:
    """A message position the summary's metadata holds (`start`, `end`; 0 when unset). A value
    int() cannot read fails as int() fails: the chat file was edited by hand."""
    value = meta.get(key, 0)
    if isinstance(value, str | int | float):
        return int(value)
    raise TypeError(
        f"int() argument must be a string, a bytes-like object or a real number, not '{type(value).__name__}'"
    )


def summary_for_prompt(chat_metadata: Mapping[str, object]) -> str:
    """The summary text the prompt gets ('' when switched off)."""
    meta = chat_metadata.get(META_KEY)
    if isinstance(meta, dict) and meta.get("off"):
        return ""
    return str(chat_metadata.get(TEXT_KEY, "") or "")


def target_end(chat_len: int, window_start: int, settings: MemorySettings, covered: int) -> int:
    """Up to where the summary should reach: the window's first message, or (with
    summary_every) the whole chat once that many messages are new."""
    target = max(0, window_start)
    if settings.summary_every and chat_len - covered >= settings.summary_every:
        target = chat_len
    return target


def summary_due(source: ChatHandle, window_start: int, settings: MemorySettings) -> bool:
    meta = summary_meta(source.chat)
    if meta.get("off"):
        return False
    covered = position(meta, "end")
    target = target_end(len(source.chat), window_start, settings, covered)
    need = 1 if settings.summary_every and target == len(source.chat) else settings.summary_threshold
    return target - covered >= need


def _instruction(source: SummarySource, settings: MemorySettings, meta: Mapping[str, object]) -> str:
    from tavern.prompt.macro_context import MacroContext
    from tavern.prompt.macros import substitute

    prompt = str(meta.get("prompt") or settings.summary_prompt)
    return substitute(prompt, MacroContext(char=source.char_name, user=source.user_name))


def build_step(
    source: SummarySource, settings: MemorySettings, start: int, end: int, previous: str
) -> tuple[GenerationRequest, int]:
    """(GenerationRequest, new end) summarizing messages [start, new end) onto `previous`:
    as many messages as fit in the background sequence's window."""
    from tavern.engines.base import GenerationRequest

    engine = source.engine()
    count = source.counter()
    fmt = source.prompt_format()
    window = engine.background_context
    budget = window - settings.summary_max_tokens - MARGIN
    system = _instruction(source, settings, summary_meta(source.chat))
    head = f"Summary so far:\n{previous.strip() or '(nothing yet)'}\n\nNew messages:\n"
    tail = "\n\nWrite the updated summary."
    budget -= count(system) + count(head + tail) + 16
    lines: list[str] = []
    i = start
    while i < end:
        m = source.chat[i]
        i += 1
        if m.is_system or not (m.mes or "").strip():
            continue
        line = f"{m.name}: {m.mes.strip()}"
        cost = count(line + "\n")
        if cost > budget:
            if lines:
                i -= 1
                break
            line = line[: max(80, len(line) * max(budget, 1) // cost)]  # one huge message: its start
            cost = budget
        lines.append(line)
        budget -= cost
    messages: list[dict[str, str]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": head + "\n".join(lines) + tail},
    ]
    request = GenerationRequest(
        prompt=fmt.render(messages, add_generation_prompt=True),
        max_tokens=settings.summary_max_tokens,
        stop=list(fmt.stop or []),
        sampler=source.sampler(0.3),
        add_bos=not fmt.template_adds_bos,
        messages=messages,
        seq_id=SEQ_BACKGROUND,
    )
    return request, i


def run_step(
    source: SummarySource, settings: MemorySettings, target: int, cancel: threading.Event | None = None
) -> bool | None:
    """Extend the summary by one step towards `target`. True: more to do; False: done;
    None: cancelled (nothing saved)."""
    from tavern.engines.base import Finished

    chat = source.chat
    meta = summary_meta(chat)
    covered = position(meta, "end")
    if covered >= target:
        return False
    previous = str(chat.header.chat_metadata.get(TEXT_KEY, "") or "")
    request, new_end = build_step(source, settings, covered, target, previous)
    final = None
    for event in source.engine().generate(request, cancel):
        if isinstance(event, Finished):
            final = event
    if final is None or final.stats.stop_reason == "cancelled" or (cancel is not None and cancel.is_set()):
        return None
    if final.error:
        raise TavernError(f"summary failed: {final.error}")
    text = final.text.strip()
    if not text:
        return new_end < target
    meta.update(
        {
            "start": position(meta, "start"),
            "end": new_end,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    chat.update_metadata({TEXT_KEY: text, META_KEY: meta})
    return new_end < target


def summarize_step(payload: tuple[SummarySource, int], settings: MemorySettings, cancel: threading.Event) -> bool:
    """The background job's unit (see MemoryService): True to run again."""
    source, window_start = payload
    meta = summary_meta(source.chat)
    if meta.get("off"):
        return False
    target = target_end(len(source.chat), window_start, settings, position(meta, "end"))
    result = run_step(source, settings, target, cancel)
    return result is None or result


def regenerate(source: SummarySource, settings: MemorySettings, target: int) -> str:
    """Write the summary again from the first message up to `target` (synchronously)."""
    chat = source.chat
    meta = summary_meta(chat)
    meta.update({"start": 0, "end": 0})
    meta.pop("off", None)
    chat.update_metadata({TEXT_KEY: "", META_KEY: meta})
    while run_step(source, settings, target):
        pass
    return str(chat.header.chat_metadata.get(TEXT_KEY, "") or "")


def set_text(chat: Chat, text: str) -> None:
    """The user's own summary text; the covered range stays (new messages extend it)."""
    meta = summary_meta(chat)
    meta["edited"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta.pop("off", None)
    chat.update_metadata({TEXT_KEY: text.strip(), META_KEY: meta})


def set_off(chat: Chat, off: bool) -> None:
    meta = summary_meta(chat)
    if off:
        meta["off"] = True
    else:
        meta.pop("off", None)
    chat.update_metadata({META_KEY: meta})
