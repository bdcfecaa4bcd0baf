"""`PromptBuilder`: the prompt for one chat's next reply, from the store's state.

It reads the chat's tail (more of it only when all of it fitted), scans the lorebooks, expands
macros, adds the rolling summary, the author's note and what long-term memory recalls, assembles
the whole within the token budget (tavern.prompt.assemble) and builds the CFG negative prompt.
A built prompt is a preview: only `commit` (called once the turn is sent) moves the chat's state
forward (the notes anchors and window floor, the lore's timers, the macro variables), so
previewing never changes the next turn.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tavern.chat.host import PromptHost
from tavern.chat.layout import ChatLayout
from tavern.chat.memory_link import SessionLink
from tavern.prompt.assemble import AssembledPrompt, assemble_prompt
from tavern.prompt.inputs import AuthorNote, CardFields, HistoryMessage, PromptInputs
from tavern.prompt.token_counter import TokenCounter
from tavern.store.metadata import ChatMeta

if TYPE_CHECKING:
    from tavern.cards.model import Card
    from tavern.lore import Lorebook, ScanMessage, ScanResult
    from tavern.prompt.macro_context import MacroContext
    from tavern.store.chatfile import Chat

Macro = Callable[[str], str]


class MacroFn:
    """SillyTavern's macros with one context for a whole prompt: the expansion limits are
    shared by every text it substitutes, and `warnings` says which limits were reached."""

    def __init__(self, ctx: MacroContext, substitute: Callable[[str, MacroContext], str]):
        self._ctx = ctx
        self._substitute = substitute

    @property
    def warnings(self) -> list[str]:
        return list(self._ctx.warnings)

    def __call__(self, text: str) -> str:
        # Most text has no macro at all: skip the parser for it (it runs on every card field
        # and lore entry, every turn).
        if not text or ("{{" not in text and "<" not in text):
            return text
        return self._substitute(text, self._ctx)
Books = list[tuple[str, "Lorebook"]]


@dataclass
class BuiltPrompt:
    """A prompt and the state it would move the chat to once it is sent."""

    prompt: AssembledPrompt
    timed_state: dict[str, object] | None
    variables: dict[str, object]
    lore: ScanResult | None = None
    negative: str | None = None
    """The CFG negative prompt, formatted like `prompt` (None: guidance off)."""
    guidance_scale: float = 1.0

    def recurring(self) -> list[str]:
        """The parts of the prompt that may leave and come back on a later turn: its notes
        (lore entries, the summary, recalled messages) and the lore entries it holds."""
        texts = dict.fromkeys(text for _anchor, text in self.prompt.note_anchors.values())
        for entry in self.lore.activated if self.lore is not None else ():
            texts.setdefault(entry.content)
        return [t for t in texts if t.strip()]


@dataclass
class PromptBuilder:
    host: PromptHost
    key: str
    card: Card
    chat: Chat
    layout: ChatLayout = field(default_factory=ChatLayout)
    last: BuiltPrompt | None = None
    """The last prompt built (the inspector shows it; a preview too)."""

    @property
    def link(self) -> SessionLink:
        """This chat as long-term memory sees it."""
        return SessionLink(self.host, self.key, self.chat, self.card.name)

    @property
    def meta(self) -> ChatMeta:
        return ChatMeta(self.chat)

    @property
    def user_name(self) -> str:
        return self.host.settings.chat.user_name

    # -- history ---------------------------------------------------------------------------------

    def history(self, limit: int | None = None, upto: int | None = None) -> list[HistoryMessage]:
        """The last `limit` messages before index `upto` (default: the whole chat)."""
        end = len(self.chat) if upto is None else upto
        start = 0 if limit is None else max(0, end - limit)
        msgs = self.chat.tail(len(self.chat) - start)[: end - start]
        return [
            HistoryMessage(m.name, m.mes, m.is_user, m.is_system, index=start + i) for i, m in enumerate(msgs)
        ]

    # -- the prompt ------------------------------------------------------------------------------

    def build(self, mode: str = "normal", upto: int | None = None, explain: bool = False) -> BuiltPrompt:
        """The prompt for the next reply; `upto` leaves later messages out (a new swipe).
        `explain` records why each lorebook entry stayed out (for the inspector; slower on big
        books)."""
        engines = self.host.engines
        n_ctx = engines.load().context_size
        # Read only the chat's tail (a 10,000-message chat must not be parsed every turn), and
        # more of it only when all of that tail fitted in the budget.
        end = len(self.chat) if upto is None else upto
        limit = max(128, n_ctx // 32)  # about what fits when messages average 32+ tokens
        history = self.history(limit=limit, upto=upto)
        count = engines.counter()
        variables = self.meta.variables()
        macro = self.macro_fn(history, variables)
        lore = self._scan_lore(history, n_ctx, count, macro, explain)
        note = self._author_note()
        while True:
            prompt, inputs = self._assemble(history, lore, note, macro, mode, count, n_ctx)
            oldest = next((h.index for h in history if not h.is_system), None)
            if len(history) >= end or oldest is None or prompt.first_message_index != oldest:
                break
            limit *= 4
            history = self.history(limit=limit, upto=upto)
        if lore is not None:
            for b in lore.broken:
                prompt.warnings.append(f"lore entry broken: {b}")
        prompt.warnings.extend(w for w in macro.warnings if w not in prompt.warnings)
        built = BuiltPrompt(prompt, lore.timed_state if lore is not None else None, variables, lore)
        scale, negative, depth = self.cfg()
        if scale != 1.0 and negative.strip():
            from tavern.prompt.assemble import with_negative

            built.negative = with_negative(prompt, engines.prompt_format(), inputs, macro(negative), depth)
            built.guidance_scale = scale
        self.last = built
        return built

    def commit(self, built: BuiltPrompt) -> None:
        """A turn was sent: what its prompt decided becomes the chat's state (notes anchors, the
        lore's sticky/cooldown timers, variables set by macros)."""
        self.layout = ChatLayout(dict(built.prompt.note_anchors), self.layout.window_floor)
        if built.prompt.first_message_index >= 0:
            self.layout.window_floor = built.prompt.first_message_index
        self.host.layouts.remember(self.chat.path, self.layout)
        meta = self.meta
        meta.update(meta.turn_changes(built.timed_state, built.variables))

    def _author_note(self) -> AuthorNote | None:
        note = self.meta.note
        if not note.text:
            return None
        return AuthorNote(text=note.text, depth=note.depth, frequency=note.interval, role=note.role_name)

    def cfg(self) -> tuple[float, str, int]:
        """(guidance scale, negative text, insertion depth): the chat's SillyTavern CFG keys win,
        then the character's `tavern_cfg` extension, then the settings."""
        g = self.host.settings.cfg
        scale, negative, depth = g.guidance_scale, g.negative_prompt, g.insertion_depth
        for layer in (self.card.cfg, self.meta.cfg):  # the later one wins
            if layer.guidance_scale is not None:
                scale = layer.guidance_scale
            if layer.negative_prompt is not None:
                negative = layer.negative_prompt
            if layer.insertion_depth is not None:
                depth = layer.insertion_depth
        return scale, negative, depth

    def _assemble(
        self,
        history: list[HistoryMessage],
        lore: ScanResult | None,
        note: AuthorNote | None,
        macro: Macro,
        mode: str,
        count: TokenCounter,
        n_ctx: int,
    ) -> tuple[AssembledPrompt, PromptInputs]:
        s = self.host.settings
        engines = self.host.engines
        engine = engines.load()
        inputs = PromptInputs(
            card=CardFields.from_card(self.card),
            user_name=self.user_name,
            history=history,
            persona=s.chat.persona,
            system_prompt=s.prompt.system_prompt,
            lore=lore,
            summary=self.meta.summary_for_prompt,
            author_note=note,
            mode=mode,  # type: ignore[arg-type]  # checked by the callers' fixed set of modes
            names_in_history=s.prompt.names_in_history,
            layout=s.prompt.layout,
            trim_step=s.prompt.trim_step,
            macro=macro,
            note_anchors=self.layout.note_anchors,
            return_lapsed=engine.capabilities.keeps_removed_text,
            depth_lore_drift=s.lore.linger if s.lore.cache_aware else 0,
            window_floor=self.layout.window_floor,
            story=engines.context_preset() if s.prompt.layout == "sillytavern" else None,
        )
        fmt = engines.prompt_format()
        prompt = assemble_prompt(inputs, fmt, count, n_ctx, s.generation.max_tokens)
        recalled = self._recall(history, prompt, count)
        if recalled:  # again with the recalled messages (they take budget, the window may shrink)
            inputs.recalled = recalled
            prompt = assemble_prompt(inputs, fmt, count, n_ctx, s.generation.max_tokens)
        memory = self.host.memory
        warning = memory.take_warning() if memory is not None else None
        if warning:
            prompt.warnings.append(warning)
        return prompt, inputs

    def _recall(self, history: list[HistoryMessage], prompt: AssembledPrompt, count: TokenCounter) -> list[str]:
        """Old messages outside this prompt's window that match the latest ones (vector memory)."""
        memory = self.host.memory
        if memory is None or not history:
            return []
        start = prompt.first_message_index if prompt.first_message_index >= 0 else history[-1].index + 1
        latest = [h for h in history if not h.is_system][-memory.settings.query_messages :]
        queries = [f"{h.name}: {h.text}" for h in reversed(latest)]
        return [r.text for r in memory.recall(self.link, queries, start, count)]

    def macro_fn(self, history: list[HistoryMessage], variables: dict[str, object]) -> MacroFn:
        """SillyTavern's macros over this chat (`variables`: the copy this prompt may change)."""
        from tavern.prompt.macro_context import MacroContext
        from tavern.prompt.macros import substitute

        card = self.card
        s = self.host.settings
        last = next((h for h in reversed(history)), None)
        last_user = next((h for h in reversed(history) if h.is_user), None)
        last_char = next((h for h in reversed(history) if not h.is_user), None)
        ctx = MacroContext(
            char=card.name,
            user=self.user_name,
            description=card.description,
            personality=card.personality,
            scenario=card.scenario,
            persona=s.chat.persona,
            mes_examples=card.mes_example,
            original=s.prompt.system_prompt,
            last_message=last.text if last else "",
            last_user_message=last_user.text if last_user else "",
            last_char_message=last_char.text if last_char else "",
            chat_id=self.chat.name,
            variables=variables,
        )

        return MacroFn(ctx, substitute)

    # -- lore ------------------------------------------------------------------------------------

    def scan_lore(self, books: Books | None = None, explain: bool = True) -> ScanResult | None:
        """The lorebook scan the next prompt runs (`books`: instead of the chat's own), with the
        model's tokenizer and the chat's timed state: what `tavern lore scan --character` shows."""
        history = self.history(limit=200)
        # A copy: {{setvar}} in lore content must not touch the chat's variables from a scan.
        macro = self.macro_fn(history, self.meta.variables())
        engines = self.host.engines
        return self._scan_lore(history, engines.load().context_size, engines.counter(), macro, explain, books)

    def _scan_lore(
        self,
        history: list[HistoryMessage],
        n_ctx: int,
        count: TokenCounter,
        macro: Macro,
        explain: bool,
        books: Books | None = None,
    ) -> ScanResult | None:
        books = self.lorebooks() if books is None else books
        if not books:
            return None
        from tavern.lore import ScanMessage, scan_lore

        msgs = [ScanMessage(h.name, h.text, h.is_user) for h in history if not h.is_system]
        if self.host.engines.load().capabilities.counts_joined:
            # A server that counts many texts in one request: every entry's cost at once, not a
            # round trip per activated entry (content with macros is counted as it comes).
            texts = [e.content for _s, b in books for e in b.entries
                     if e.content and not e.disable and "{{" not in e.content][:1000]
            count.prime([t + "\n" for t in texts] + texts)  # the scan's cost, the slot's count
        result = scan_lore(
            books,
            msgs,
            self.host.settings.lore,
            context_size=n_ctx,
            count_tokens=count,
            timed_state=self.meta.timed_world_info,
            chat_length=history[-1].index + 1 if history else 0,
            rng_seed=hash_seed(self.chat.name, len(self.chat)),
            character_name=self.card.name,
            character_tags=list(self.card.tags),
            substitute_macros=macro,
            explain=explain,
        )
        self._vector_lore(result, books, msgs, count, macro)
        return result

    def _vector_lore(self, result: ScanResult, books: Books, msgs: list[ScanMessage], count: TokenCounter,
                     macro: Macro) -> None:
        """Lorebook entries marked `vectorized` activate by similarity too (tavern.memory)."""
        memory = self.host.memory
        if memory is None or not memory.enabled:
            return
        from tavern.memory.lore_vectors import activate_by_similarity, vectorized_entries

        if not vectorized_entries(books):
            return
        queries = [f"{m.name}: {m.text}" for m in msgs[-memory.settings.query_messages :]]
        try:
            activate_by_similarity(memory, result, books, queries, count, macro)
        except Exception as err:  # the embedder failed: keys alone decide, said once
            memory._fail(err)

    def lorebooks(self) -> Books:
        """(kind, Lorebook) for the chat's, the character's (embedded and linked) and global books."""
        from tavern.lore import load_lorebook_cached as load_lorebook
        from tavern.lore import lorebook_from_character_book_cached as lorebook_from_character_book

        books: Books = []
        find = self.host.lorebooks.find
        chat_world = self.meta.world_info
        if chat_world:
            path = find(chat_world)
            if path:
                books.append(("chat", load_lorebook(path)))
        if self.card.character_book:
            books.append(
                ("character", lorebook_from_character_book(self.card.character_book, self.card.name))
            )
        world = (self.card.extensions or {}).get("world")
        if world:
            path = find(str(world))
            if path:
                books.append(("character", load_lorebook(path)))
        for name in self.host.settings.lore.global_books:
            path = find(name)
            if path:
                books.append(("global", load_lorebook(path)))
        return books


def hash_seed(*parts: object) -> int:
    """A seed that is the same for the same chat state (probability rolls repeat on a preview)."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode()) & 0x7FFFFFFF
