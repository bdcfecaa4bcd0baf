"""`ReplyWriter`: one reply, from the built prompt to the saved message.

It turns the prompt into a `GenerationRequest`, streams the engine's events through the loop
guard (passing on `PromptProgress` while the prompt is read, for the fronts to show), keeps
the reply in progress in the chat's sidecar file (a kill mid-reply never touches
the chat file, and the next open recovers the partial text), and saves the result the way its
mode asks: a new message, a new swipe, text appended to the last message (continue), or nothing
(impersonate: the text goes to the user, who edits it). A cancelled reply keeps its partial
text, as SillyTavern does; an empty one saves nothing (the user's message is already on disk).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from tavern.chat.prompt_builder import BuiltPrompt, PromptBuilder
from tavern.engines.base import Finished, GenerationRequest, PromptProgress, Token
from tavern.loop_guard import Restart

if TYPE_CHECKING:
    from tavern.store import ChatMessage

Event = Token | Finished


def now_date() -> str:
    from tavern.store import format_send_date

    return format_send_date(datetime.now())


class ReplyWriter:
    def __init__(self, builder: PromptBuilder):
        self.builder = builder

    def reply(self, mode: str, cancel: threading.Event | None) -> Iterator[Event]:
        """mode: normal (a new reply), swipe (a new swipe of the last reply), continue or
        impersonate."""
        b = self.builder
        chat = b.chat
        cancel = cancel or threading.Event()
        swipe_of = None
        if mode == "swipe":
            swipe_of = len(chat) - 1
            built = b.build("normal", upto=len(chat) - 1)
        else:
            built = b.build(mode)
        request = self._request(built)
        started = now_date()
        streaming = mode == "normal"
        final = yield from self._stream(request, cancel, mode, swipe_of, streaming, started)
        text = final.text if mode == "continue" else final.text.strip()
        if mode == "impersonate":
            yield final
            return
        if not text.strip():
            # Nothing written (an error, or Esc before the first token): nothing to save; the
            # user's message is already safe on disk.
            if streaming:
                chat.discard_reply()
            yield final
            return
        self._save(mode, text, swipe_of, started, self._extra(final, built))
        b.commit(built)
        final.text = text
        yield final

    def _request(self, built: BuiltPrompt) -> GenerationRequest:
        prompt = built.prompt
        host = self.builder.host
        return GenerationRequest(
            prompt=prompt.text,
            max_tokens=host.settings.generation.max_tokens,
            stop=prompt.stop,
            sampler=host.sampler_settings(),
            add_bos=prompt.add_bos,
            messages=prompt.messages,
            negative_prompt=built.negative,
            guidance_scale=built.guidance_scale,
            recurring=built.recurring(),
            report_progress=True,
        )

    def _stream(
        self, request: GenerationRequest, cancel: threading.Event, mode: str, swipe_of: int | None,
        streaming: bool, started: str,
    ) -> Generator[Event, None, Finished]:
        """Yields the tokens; returns the Finished event (not yielded: the caller fixes its text)."""
        from tavern.store import ChatMessage

        chat, name = self.builder.chat, self.builder.card.name
        final: Finished | None = None
        if streaming:
            chat.begin_reply(ChatMessage(name=name, is_user=False, mes="", gen_started=started))
        so_far = ""
        try:
            for event in self._guarded(request, cancel, mode, swipe_of):
                if isinstance(event, Finished):
                    final = event
                elif isinstance(event, PromptProgress):
                    yield event  # how far the prompt is read: for the front, not the reply
                else:
                    so_far = "" if isinstance(event, Restart) else so_far + event.text
                    if streaming:
                        chat.update_partial(so_far)
                    yield event
        finally:
            if final is None and streaming:  # the consumer stopped early: keep what we have
                if so_far.strip():
                    chat.finish_reply(ChatMessage(name=name, is_user=False, mes=so_far.strip(), gen_started=started))
                else:
                    chat.discard_reply()
        assert final is not None
        return final

    def _guarded(
        self, request: GenerationRequest, cancel: threading.Event, mode: str, upto: int | None
    ) -> Iterator[Event]:
        """The engine's events with loop detection (tavern/loop_guard.py): a run-on is stopped
        and trimmed; a new reply that repeats the last ones is written again once."""
        from tavern.loop_guard import guarded_generate

        b = self.builder
        settings = b.host.settings.loops
        earlier: list[str] = []
        if mode in ("normal", "swipe"):  # a continuation or an impersonation has no "last ones"
            recent = b.history(limit=4 * settings.history, upto=upto)
            earlier = [h.text for h in recent if not h.is_user and not h.is_system][-settings.history :]
        return guarded_generate(b.host.engines.load(), request, cancel, settings, earlier)

    def _extra(self, final: Finished, built: BuiltPrompt) -> dict[str, object]:
        """What is stored with the reply: SillyTavern's api/model/token_count, Tavern's stats."""
        engines = self.builder.host.engines
        engine = engines.load()
        stats: dict[str, object] = {**final.stats.as_dict(), "prompt_tokens_budget": built.prompt.budget}
        if final.error:
            stats["error"] = final.error
        return {
            "api": engine.name if engines.backend_name else "llama.cpp",
            "model": engine.model_name,
            **final.extra,
            "token_count": final.stats.gen_tokens,
            "tavern": stats,
        }

    def _save(self, mode: str, text: str, swipe_of: int | None, started: str, extra: dict[str, object]) -> None:
        from tavern.store import ChatMessage

        chat, name = self.builder.chat, self.builder.card.name
        if mode == "continue" and len(chat) and not chat[-1].is_user:
            msg: ChatMessage = chat[-1]
            msg.mes = msg.mes + text
            if msg.swipes is not None and msg.swipe_id is not None:
                msg.swipes[msg.swipe_id] = msg.mes
            chat.replace(len(chat) - 1, msg)
        elif swipe_of is not None:
            msg = chat[swipe_of]
            msg.add_swipe(
                text,
                {"send_date": now_date(), "gen_started": started, "gen_finished": now_date(), "extra": extra},
            )
            msg.extra = extra
            chat.replace(swipe_of, msg)
        else:
            chat.finish_reply(
                ChatMessage(
                    name=name, is_user=False, mes=text, send_date=now_date(), extra=extra,
                    gen_started=started, gen_finished=now_date(),
                )
            )
