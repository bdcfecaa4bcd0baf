"""What the chat session does about loops: a wrapper around one engine generation.

`guarded_generate` runs `engine.generate` and passes its events through, with two additions:
- a run-on inside the reply (`tavern.loops.ReplyLoopDetector`) stops the engine within a token
  (through a cancel flag of our own, so the user's own Esc/Ctrl+C flag stays clear) and the
  reply is trimmed to the first copy of what repeated;
- a finished reply that repeats the last replies (`tavern.loops.compare_replies`) is written
  once more with stronger anti-repetition: DRY on (or doubled), and the repeated opening's
  first token banned for the first token of that reply only (the retry draws its first token
  with the ban, then continues without it: a ban over the whole reply would forbid "I").
  A `Restart` event tells the screen that the text shown so far is being replaced. A retry
  that still copies long stretches of a recent reply loses the sentences that do.

What was found and done is `Finished.stats.loop` (a dict, None when nothing was found), which
the session stores in the message's `extra.tavern.loop` and `tavern chat --json` prints.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import fields, replace
from typing import TYPE_CHECKING, TypeAlias

from tavern.config import LoopSettings
from tavern.engines.base import Engine, Finished, GenerationRequest, Token
from tavern.loops import LoopLimits, ReplyLoopDetector, compare_replies, describe, drop_copied

if TYPE_CHECKING:
    from tavern.engines.samplers import SamplerSettings

_FIRST_WORD = re.compile(r"\w+", re.UNICODE)
BAN = -100.0  # far below any logit SmolLM2 or a 70B produces: the token is never drawn

_Attempt: TypeAlias = Generator[Token | Finished, None, tuple[Finished, dict[str, object] | None]]
"""An attempt streams its events, then returns (Finished, in-reply record or None)."""


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


def limits_from(settings: LoopSettings) -> LoopLimits:
    """LoopLimits from the `[loops]` settings section: every threshold the section names (the
    rest, such as `max_period`, keep LoopLimits' own values)."""
    named = {f.name for f in fields(LoopLimits)} & set(type(settings).model_fields)
    return LoopLimits(**{name: getattr(settings, name) for name in named})


def guarded_generate(
    engine: Engine,
    request: GenerationRequest,
    cancel: threading.Event,
    settings: LoopSettings,
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
    record: dict[str, object] = {}
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
            still = compare_replies(final.text, earlier, limits) if not final.error else None
            if still and "ngrams" in still.reasons and not cancel.is_set():
                # Rewritten and still copying a recent reply: keep the sentences that don't.
                kept = drop_copied(final.text, earlier, limits)
                if kept != final.text:
                    record["dropped_chars"] = len(final.text) - len(kept)
                    final.text = kept
                    still = compare_replies(final.text, earlier, limits)
            record["still_repeats"] = bool(still)
    if record:
        record["action"] = _action(record)
        record["message"] = describe(record)
        final.stats.loop = record
    yield final


def _action(record: dict[str, object]) -> str:
    if record.get("regenerated"):
        return "regenerated"
    if record.get("in_reply"):
        return "trimmed"
    return "flagged"


def _attempt(
    engine: Engine, request: GenerationRequest, cancel: threading.Event, limits: LoopLimits, prefix: str = ""
) -> _Attempt:
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
    engine: Engine,
    request: GenerationRequest,
    cancel: threading.Event,
    limits: LoopLimits,
    settings: LoopSettings,
    opening: str,
) -> _Attempt:
    """The second attempt: stronger DRY, and the repeated opening's first word banned until the
    reply's first word has begun (punctuation first, `*` or a quote, then the same word would
    still be the same opening: the opening is compared word by word)."""
    sampler = stronger_sampler(request.sampler, settings)
    banned = _opening_tokens(engine, opening) if opening else []
    raw = engine.capabilities.raw_prompt
    if not banned or not raw or request.max_tokens < 2:
        return (yield from _attempt(engine, replace(request, sampler=sampler), cancel, limits))
    bias = {**sampler.logit_bias, **{t: BAN for t in banned}}
    head_text = ""
    gen_tokens = evaluated = 0
    while True:
        head_req = replace(
            _after(request, head_text), sampler=sampler.with_overrides(logit_bias=bias), max_tokens=1
        )
        head: Finished | None = None
        for event in engine.generate(head_req, cancel):
            if isinstance(event, Finished):
                head = event
            else:
                yield event
        assert head is not None
        head_text += head.text
        gen_tokens += head.stats.gen_tokens
        evaluated += head.stats.evaluated_tokens
        if head.error or not head.text or head.stats.stop_reason != "length" or cancel.is_set():
            head.text = head_text
            return head, None
        if any(ch.isalnum() for ch in head_text) or gen_tokens >= min(_HEAD_TOKENS, request.max_tokens - 1):
            break
    rest_req = replace(_after(request, head_text), sampler=sampler, max_tokens=request.max_tokens - gen_tokens)
    final, inside = yield from _attempt(engine, rest_req, cancel, limits, prefix=head_text)
    final.text = head_text + final.text
    final.stats.gen_tokens += gen_tokens
    final.stats.evaluated_tokens += evaluated
    return final, inside


_HEAD_TOKENS = 4
"""At most this many tokens are drawn with the opening banned (a word begins within them)."""


def _after(request: GenerationRequest, head: str) -> GenerationRequest:
    """`request` continued after `head`, the reply's first tokens. The negative prompt (CFG)
    continues with them too: both sequences must stand at the same place in the reply, or the
    guidance mixes the logits of two different positions."""
    if not head:
        return request
    negative = request.negative_prompt + head if request.negative_prompt else request.negative_prompt
    return replace(request, prompt=request.prompt + head, negative_prompt=negative)


def stronger_sampler(sampler: SamplerSettings | None, settings: LoopSettings) -> SamplerSettings:
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


_LEADS = ("", " ", "*", " *", '"', ' "', "“", " “", "(", "_", "\n")
"""What may come before a reply's first word: nothing, a space, an action's asterisk, a quote."""


def _opening_tokens(engine: Engine, opening: str) -> list[int]:
    """The tokens that would begin the first word of `opening`, in any case, after any of
    `_LEADS` ("*leans" is "*", "le", "ans" where "leans" alone is one token), and the first
    token of `opening` itself."""
    found = _FIRST_WORD.search(opening)
    word = found.group() if found else ""
    out: list[int] = []

    def add(token: int) -> None:
        if token not in out:
            out.append(token)

    try:
        for text in (opening, " " + opening):
            ids = engine.tokenize(text, add_bos=False)
            if ids:
                add(ids[0])
        for variant in dict.fromkeys(v for v in (word, word.lower(), word.capitalize()) if v):
            for lead in _LEADS:
                before = engine.tokenize(lead, add_bos=False) if lead else []
                ids = engine.tokenize(lead + variant, add_bos=False)
                if ids[: len(before)] == before and len(ids) > len(before):
                    add(ids[len(before)])
                elif ids:
                    add(ids[0])  # the lead merged into the word's first token: that token
    except Exception:  # an engine that cannot tokenize: no ban, DRY still applies
        return []
    return out


__all__ = ["Restart", "guarded_generate", "limits_from", "stronger_sampler"]
