"""What the chat session does about loops: a wrapper around one engine generation.

`guarded_generate` runs `engine.generate` and passes its events through, with two additions:
- a run-on inside the reply (`tavern.loops.ReplyLoopDetector`) stops the engine within a token
  (through a cancel flag of our own, so the user's own Esc/Ctrl+C flag stays clear) and the
  reply is trimmed to the first copy of what repeated;
- a finished reply that repeats the last replies (`tavern.loops.compare_replies`) is written
  once more with stronger anti-repetition: DRY on (or doubled), and the repeated opening's
  first token banned for the first token of that reply only (the retry draws its first token
  with the ban, then continues without it: a ban over the whole reply would forbid "I").
  A `Restart` event tells the screen that the text shown so far is being replaced.

What was found and done is `Finished.stats.loop` (a dict, None when nothing was found), which
the session stores in the message's `extra.tavern.loop` and `tavern chat --json` prints.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from tavern.engines.base import Finished, GenerationRequest, Token
from tavern.loops import LoopLimits, ReplyLoopDetector, compare_replies, describe

BAN = -100.0  # far below any logit SmolLM2 or a 70B produces: the token is never drawn


class Restart(Token):
    """The reply streamed so far is dropped; a new attempt follows. `text` is a notice a
    consumer that does not know this event may show (it is replaced by the saved reply)."""


class _LinkedCancel(threading.Event):
    """Set when we set it or when the user's flag is set (the engine only reads it)."""

    def __init__(self, outer: threading.Event) -> None:
        super().__init__()
        self._outer = outer

    def is_set(self) -> bool:
        return super().is_set() or self._outer.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        # The engine waits on the flag only while the prompt decodes, before any text exists,
        # so only the user's flag can be set then.
        return self._outer.wait(timeout) or super().is_set()


def limits_from(settings: Any) -> LoopLimits:
    """LoopLimits from the `[loops]` settings section."""
    return LoopLimits(
        min_repeats=settings.min_repeats,
        min_loop_tokens=settings.min_loop_tokens,
        char_run=settings.char_run,
        opening_words=settings.opening_words,
        overlap=settings.overlap,
        history=settings.history,
    )


def guarded_generate(
    engine: Any,
    request: GenerationRequest,
    cancel: threading.Event,
    settings: Any,
    earlier: Sequence[str] = (),
) -> Iterator[Token | Finished]:
    """`engine.generate(request, cancel)` with loop detection and countermeasures.

    `settings`: the `[loops]` section. `earlier`: the last character replies, oldest first;
    empty means no comparison across replies (continue, impersonate)."""
    if not settings.enabled:
        yield from engine.generate(request, cancel)
        return
    limits = limits_from(settings)
    final, inside = yield from _attempt(engine, request, cancel, limits)
    record: dict[str, Any] = {}
    if inside is not None:
        record["in_reply"] = inside
    across = compare_replies(final.text, earlier, limits) if earlier and not final.error else None
    if across and not cancel.is_set():
        record["across"] = across.as_dict()
        if settings.regenerate:
            yield Restart("\n\n[tavern: this reply repeats the last ones; writing it again]\n\n")
            first_tokens = final.stats.gen_tokens
            final, inside = yield from _retry(engine, request, cancel, limits, settings, across.opening)
            record["regenerated"] = True
            record["first_attempt_tokens"] = first_tokens
            record["in_reply"] = inside
            if inside is None:
                del record["in_reply"]
            record["still_repeats"] = bool(compare_replies(final.text, earlier, limits))
    if record:
        record["action"] = _action(record)
        record["message"] = describe(record)
        final.stats.loop = record
    yield final


def _action(record: dict[str, Any]) -> str:
    if record.get("regenerated"):
        return "regenerated"
    if record.get("in_reply"):
        return "trimmed"
    return "flagged"


def _attempt(
    engine: Any, request: GenerationRequest, cancel: threading.Event, limits: LoopLimits, prefix: str = ""
) -> Iterator[Token | Finished]:
    """One generation with the in-reply detector; returns (Finished, in-reply record or None).
    `prefix`: text already streamed for this reply (the retry's first token)."""
    detector = ReplyLoopDetector(limits)
    if prefix:
        detector.feed(prefix)
    stop = _LinkedCancel(cancel)
    final: Finished | None = None
    for event in engine.generate(request, stop):
        if isinstance(event, Finished):
            final = event
            continue
        yield event
        if detector.feed(event.text) is not None and not stop.is_set():
            stop.set()  # the engine stops within a token; Finished follows
    assert final is not None
    found = detector.found
    if found is None:
        return final, None
    full = prefix + final.text
    kept = full[: found.cut]
    if found.cut < len(full.rstrip()):
        final.text = kept[len(prefix) :] if len(kept) >= len(prefix) else ""
        if final.stats.stop_reason == "cancelled" and not cancel.is_set():
            final.stats.stop_reason = "loop"
    record = found.as_dict()
    record["trimmed_chars"] = len(full) - len(kept)
    return final, record


def _retry(
    engine: Any,
    request: GenerationRequest,
    cancel: threading.Event,
    limits: LoopLimits,
    settings: Any,
    opening: str,
) -> Iterator[Token | Finished]:
    """The second attempt: stronger DRY, and the repeated opening's first token banned for
    the reply's first token."""
    sampler = stronger_sampler(request.sampler, settings)
    banned = _opening_tokens(engine, opening) if opening else []
    raw = getattr(engine, "supports_raw_prompt", True)
    if not banned or not raw or request.max_tokens < 2:
        return (yield from _attempt(engine, replace(request, sampler=sampler), cancel, limits))
    bias = {**sampler.logit_bias, **{t: BAN for t in banned}}
    head_req = replace(request, sampler=sampler.with_overrides(logit_bias=bias), max_tokens=1)
    head: Finished | None = None
    for event in engine.generate(head_req, cancel):
        if isinstance(event, Finished):
            head = event
        else:
            yield event
    assert head is not None
    if head.error or not head.text or head.stats.stop_reason != "length" or cancel.is_set():
        return head, None
    # The negative prompt (CFG) continues with the same first token: both sequences must stand
    # at the same place in the reply, or the guidance mixes logits of two different positions.
    negative = request.negative_prompt + head.text if request.negative_prompt else request.negative_prompt
    rest_req = replace(
        request,
        prompt=request.prompt + head.text,
        negative_prompt=negative,
        sampler=sampler,
        max_tokens=request.max_tokens - 1,
    )
    final, inside = yield from _attempt(engine, rest_req, cancel, limits, prefix=head.text)
    final.text = head.text + final.text
    final.stats.gen_tokens += head.stats.gen_tokens
    final.stats.evaluated_tokens += head.stats.evaluated_tokens
    return final, inside


def stronger_sampler(sampler: Any, settings: Any) -> Any:
    """The retry's samplers: DRY on at `settings.dry_multiplier` (twice the preset's when that
    is higher), penalising any run of 2+ tokens already in the context."""
    from tavern.engines.samplers import SamplerSettings

    base = sampler if sampler is not None else SamplerSettings()
    multiplier = max(settings.dry_multiplier, base.dry_multiplier * 2)
    return base.with_overrides(
        dry_multiplier=min(multiplier, 100.0),
        dry_allowed_length=min(base.dry_allowed_length, 2),
        dry_penalty_last_n=0,
    )


def _opening_tokens(engine: Any, opening: str) -> list[int]:
    """The token(s) a reply starting with `opening` would start with: with and without a
    leading space (the prompt may end with "Name:" or with a newline)."""
    out: list[int] = []
    for text in (opening, " " + opening):
        try:
            ids = engine.tokenize(text, add_bos=False)
        except Exception:  # an engine that cannot tokenize: no ban, DRY still applies
            return []
        if ids and ids[0] not in out:
            out.append(ids[0])
    return out


__all__ = ["Restart", "guarded_generate", "limits_from", "stronger_sampler"]
