"""The embedded engine: llama.cpp through llama-cpp-python, one GGUF file, streamed.

It runs its own decode loop over `llama_decode` instead of `create_completion` because it needs
what the wrapper doesn't give: several sequences in one context (the chat, a CFG negative
prompt, a background job such as a summary, each with its own cache), the KV-cache reuse of
`lowlevel.plan_align` (removed and inserted text both cost only what changed), saved states in
host memory (`prompt_cache`), a sampler chain with DRY, XTC, top-a and a repetition penalty that
sees the prompt (`samplers.TokenSampler`), and exact per-turn stats. `llama_cpp` is imported in
`load()`, not at module import: `tavern --help` and the TUI's first frame must not pay for it.

The context is created with a unified KV cache of `n_ctx + side_ctx` cells: the chat's window
plus room for the side sequences. Sequence 3 is scratch space for inserting text mid-sequence;
sequence 4 holds the bank of text that left the prompt (`cell_bank`), in whatever side cells
are free.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tavern.engines.base import SEQ_BACKGROUND, SEQ_CFG, SEQ_CHAT, Finished, GenerationRequest, Token, TurnStats
from tavern.engines.gguf_info import read_gguf
from tavern.engines.gpu import Offload, step_down
from tavern.engines.lowlevel import (
    AbortFlag,
    BatchDecoder,
    DecodeError,
    KVCache,
    ReusePlan,
    align_cuts,
    common_prefix,
    plan_align,
    plan_reuse,
    silence_llama_logs,
    token_piece,
)
from tavern.engines.cell_bank import CellBank, Match
from tavern.engines.own_tokens import OwnTokens
from tavern.engines.prompt_cache import PromptStateCache
from tavern.errors import EngineError, ModelLoadError

SEQ_SCRATCH = 3
SEQ_BANK = 4
"""Cells of text that left a prompt (tavern/engines/cell_bank.py)."""
N_SEQ = 5
RESTORE_MARGIN = 64
"""A saved state must save this many more tokens than the live one to be worth restoring."""


class LocalEngine:
    name = "llama.cpp"
    supports_raw_prompt = True
    supports_kv_shift = True

    def __init__(
        self,
        model_path: Path | str,
        n_ctx: int = 4096,
        n_threads: int = 0,
        n_gpu_layers: int = -1,
        n_batch: int = 512,
        flash_attn: bool = False,
        type_k: str = "f16",
        type_v: str = "f16",
        rope_freq_base: float = 0.0,
        cache_reuse: int = 32,
        side_ctx: int = -1,
        cache_ram_mib: int = 1024,
        insert_reuse: bool = True,
        gpu_step_down: bool = False,
        bank_cells: int = -1,
    ):
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        """The chat's window: what the prompt plus the reply must fit in."""
        self.side_ctx = side_cells(n_ctx, side_ctx)
        """Extra KV cells for the side sequences (CFG, background); 0 = they borrow the chat's,
        whose state is saved in host memory meanwhile."""
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_gpu_layers = n_gpu_layers
        self.gpu_step_down = gpu_step_down
        """Free VRAM unknown: if llama.cpp refuses `n_gpu_layers`, try fewer (`gpu.step_down`)."""
        self.offload: Offload | None = None
        """What the last load put on the GPU, when it had to find out by trying."""
        self.n_batch = n_batch
        self.flash_attn = flash_attn
        self.type_k = type_k
        self.type_v = type_v
        self.rope_freq_base = rope_freq_base
        self.cache_reuse = cache_reuse
        self.insert_reuse = insert_reuse
        """Reuse cached text after an insertion too (`plan_align`); False: llama-server's walk."""
        self.states = PromptStateCache(cache_ram_mib * 1024 * 1024)
        self.bank_cells = bank_size(self.side_ctx, bank_cells, cache_reuse, insert_reuse)
        """Cells the bank of removed text may hold; 0 = off."""
        self.bank: CellBank | None = None
        self.own_tokens = OwnTokens()
        """The token runs this engine generated: a prompt that quotes them gets the same tokens."""
        self._kinds: dict[int, tuple[bool, bool]] = {}
        """Per token: (its text ends a line, it is a control token such as <|im_end|>)."""
        self._llama: Any = None
        self._kv: KVCache | None = None
        self._decoder: BatchDecoder | None = None
        self._abort: AbortFlag | None = None
        self._vocab: Any = None
        self._lock = threading.Lock()
        self.load_seconds = 0.0
        self._gpu_layers_max = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def keeps_removed_text(self) -> bool:
        """The bank is on (and, once loaded, the model can shift its cells)."""
        return self.bank_cells > 0 and (self._kv is None or self._kv.can_shift)

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    @property
    def context_size(self) -> int:
        return self.n_ctx

    @property
    def kv_cells(self) -> int:
        return self.n_ctx + self.side_ctx

    @property
    def model_name(self) -> str:
        return self.model_path.name

    def load(self) -> None:
        if self._llama is not None:
            return
        path = self.model_path
        # A missing, truncated or foreign file: one clear line, before llama.cpp's noise.
        self._gpu_layers_max = read_gguf(path).n_layers + 1  # repeating layers + the output head
        t0 = time.perf_counter()
        try:
            import llama_cpp  # deferred: ~0.2 s and 55 MB
        except ImportError as err:  # a broken install is a user-facing problem, not a crash
            raise ModelLoadError(f"llama-cpp-python is not installed or broken: {err}") from None
        silence_llama_logs()
        kwargs: dict[str, Any] = dict(
            model_path=str(path),
            n_ctx=self.kv_cells,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            n_batch=self.n_batch,
            n_gpu_layers=self.n_gpu_layers,
            flash_attn=self.flash_attn,
            verbose=False,
        )
        if self.rope_freq_base:
            kwargs["rope_freq_base"] = self.rope_freq_base
        types = {"f16": 1, "f32": 0, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7}
        for name in ("type_k", "type_v"):
            value = getattr(self, name)
            if value != "f16":
                if value not in types:
                    raise ModelLoadError(f"unknown KV cache type {value!r} (use one of {', '.join(types)})")
                kwargs[name] = types[value]
        def try_load(n_layers: int) -> Any:
            with _several_sequences(llama_cpp):
                return llama_cpp.Llama(**{**kwargs, "n_gpu_layers": n_layers})

        self.offload = None
        try:
            if self.gpu_step_down and self.n_gpu_layers > 0:
                self._llama, self.offload = step_down(self.n_gpu_layers, try_load)
            else:
                self._llama = try_load(self.n_gpu_layers)
        except Exception as err:  # llama.cpp reports every load failure as ValueError/RuntimeError
            raise ModelLoadError(f"{path}: cannot load model: {err}") from None
        ctx = self._llama._ctx.ctx
        self._kv = KVCache(ctx, SEQ_SCRATCH)
        if self.bank_cells and self._kv.can_shift:
            base = max(self.n_ctx, self.side_ctx) + 1  # past every live sequence's positions
            self.bank = CellBank(self._kv, SEQ_BANK, base, self.bank_cells, self.cache_reuse)
        self._decoder = BatchDecoder(ctx, self.n_batch)
        self._abort = AbortFlag(self._llama)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llama._model.model)
        self.load_seconds = time.perf_counter() - t0

    @property
    def load_info(self) -> dict[str, Any]:
        """How the model was loaded: the backend and what is on the GPU (for status and tests)."""
        from tavern.engines.gpu import backend_devices, offload_supported

        gpu = offload_supported()
        if self.offload is not None:
            layers = self.offload.layers
        else:  # llama.cpp caps n_gpu_layers at the model's; -1 means all of them
            total = self._gpu_layers_max
            layers = 0 if not gpu else (total if self.n_gpu_layers < 0 else min(self.n_gpu_layers, total))
        devices = [d for d in backend_devices() if d.kind != "CPU"] if gpu and layers else []
        return {
            "backend": ", ".join(d.name for d in devices) if devices else "CPU",
            "gpu_offload": gpu,
            "n_gpu_layers_requested": self.n_gpu_layers,
            "gpu_layers": layers,
            "note": self.offload.note if self.offload is not None else "",
        }

    def unload(self) -> None:
        with self._lock:
            if self._decoder is not None:
                self._decoder.close()
            if self._llama is not None:
                self._llama.close()
            self.states.clear()
            self.own_tokens.clear()
            self._kinds.clear()
            self._llama = self._kv = self._abort = self._vocab = self._decoder = self.bank = None

    def _require(self) -> Any:
        if self._llama is None:
            self.load()
        return self._llama

    # -- tokens ------------------------------------------------------------------------------

    @property
    def bos_token(self) -> str:
        llama = self._require()
        bos = llama.token_bos()
        return token_piece(self._vocab, bos).decode("utf-8", "replace") if bos >= 0 else ""

    def adds_bos(self) -> bool:
        """Whether the model wants a BOS token prepended (GGUF `add_bos_token`)."""
        return bool(self._require()._model.add_bos_token())

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        llama = self._require()
        # special=True: the template's control tokens (<|im_start|>) must become single tokens.
        return llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text)) if text else 0

    def _prompt_tokens(
        self, text: str, add_bos: bool, window: int, recurring: Sequence[str] = ()
    ) -> list[int]:
        """`text` as tokens, with the model's own tokens where it quotes a reply the model wrote
        (`own_tokens`; not inside the `recurring` texts, which the bank knows by the tokenizer's
        tokens): its cells hold those, not the tokenizer's. Used only where the result spells
        the same bytes as the plain tokens and fits the window."""
        plain = self.tokenize(text, add_bos=add_bos)
        spliced = self.own_tokens.splice(
            text, lambda part, bos: self.tokenize(part, add_bos=bos), add_bos, avoid=recurring
        )
        if spliced is None or spliced == plain or len(spliced) >= window:
            return plain
        llama = self._llama
        if llama.detokenize(spliced, special=True) != llama.detokenize(plain, special=True):
            return plain
        return spliced

    def metadata(self) -> dict[str, str]:
        return dict(self._require().metadata)

    @property
    def cached_tokens(self) -> list[int]:
        return list(self._kv.tokens(SEQ_CHAT)) if self._kv else []

    # -- generation --------------------------------------------------------------------------

    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[Token | Finished]:
        if request.seq_id not in (SEQ_CHAT, SEQ_CFG, SEQ_BACKGROUND):
            raise EngineError(f"no sequence {request.seq_id}: use SEQ_CHAT, SEQ_CFG or SEQ_BACKGROUND")
        cancel = cancel or threading.Event()
        with self._lock:
            yield from self._generate(request, cancel)

    def _seq_for(self, seq: int) -> int:
        # Without room for side sequences they borrow the chat's; its state goes to host memory
        # first (the plan below discards it) and comes back on the next chat turn.
        return seq if self.side_ctx > 0 else SEQ_CHAT

    def _plan(self, cached: list[int], tokens: list[int]) -> ReusePlan:
        kv = self._kv
        assert kv is not None
        if self.cache_reuse <= 0 or not kv.can_shift:
            return ReusePlan(common_prefix(cached, tokens))
        if self.insert_reuse:
            return align_cuts(plan_align(cached, tokens, self.cache_reuse), cached, tokens, self._clean_cut)
        return plan_reuse(cached, tokens, self.cache_reuse)

    def _clean_cut(self, before: int, after: int) -> bool:
        """A cut between these tokens is where a line or a message starts."""
        return self._kind(before)[0] or self._kind(after)[1]

    def _kind(self, token: int) -> tuple[bool, bool]:
        if (kind := self._kinds.get(token)) is None:
            import llama_cpp

            ends_line = token_piece(self._vocab, token).endswith(b"\n")
            kind = self._kinds[token] = (ends_line, bool(llama_cpp.llama_vocab_is_control(self._vocab, token)))
        return kind

    def _prepare(self, seq: int, tokens: list[int], stats: TurnStats) -> tuple[ReusePlan, bool]:
        """Pick the cheapest starting state for `seq` (live or saved), saving the live one
        when most of it is about to be thrown away. Also says whether the plan lets most cells
        go and a saved state holds them (the user opened another chat): the bank then keeps
        only what this prompt wants of them, so that they do not push out text no state holds
        (an entry that lapsed in the chat left behind)."""
        kv = self._kv
        assert kv is not None
        live = kv.tokens(seq)
        plan = self._plan(live, tokens)
        bank = self._bank_for(seq)
        bank = bank if bank is not None and bank.chunks else None

        def served(p: ReusePlan) -> int:
            """Prompt tokens the plan serves without evaluating them: its kept cells, and what the
            bank holds of the text it inserts (a saved state that keeps more cells may still
            cost more: the entries it keeps in place would have come back from the bank)."""
            if bank is None:
                return p.n_past
            return p.n_past + sum(m.n for m in bank.find(tokens, self._to_serve(tokens, p.gaps(), p.end)))

        best: tuple[ReusePlan, Any] | None = None
        candidates = self.states.candidates(tokens)
        top = served(plan) if candidates else plan.n_past  # no bank lookup without a rival
        for state in candidates:
            alt = self._plan(state.tokens, tokens)
            if (value := served(alt)) > top + RESTORE_MARGIN:
                best, top = (alt, state), value
        lost = len(live) - plan.n_past
        if (best is not None or lost >= max(256, len(live) // 4)) and len(live) >= 256:
            if not self.states.holds(live):
                with contextlib.suppress(RuntimeError, MemoryError):
                    self.states.add(*kv.save(seq))
        if best is not None:
            alt, state = best
            if self._bank_for(seq) is not None and self.states.holds(live):
                self._bank_wanted(seq, tokens, alt)
            restored = kv.restore(seq, state.tokens, state.data)
            if not restored and self.bank is not None and self.bank.chunks:
                self.bank.clear()  # its cells may be the room the state needs
                restored = kv.restore(seq, state.tokens, state.data)
            if restored:
                self.states.take(state)
                stats.restored_state = state.label
                plan = alt
            else:
                plan = self._plan(kv.tokens(seq), tokens)
        # Another chat's turn: most cells go, and a saved state holds them (the live one just
        # saved, or the one restored). Not the window sliding in this chat: the entries that
        # lapse there come back piece by piece, which only the bank can serve.
        cells = kv.tokens(seq)
        return plan, plan.n_past < len(cells) // 2 and self.states.holds(cells)

    def _bank_for(self, seq: int) -> CellBank | None:
        """The bank, for the sequences whose text may come back: not a background job's (a
        summary's prompt never comes back)."""
        return None if seq == SEQ_BACKGROUND else self.bank

    def _bank_wanted(self, seq: int, tokens: list[int], plan: ReusePlan) -> None:
        """The live cells are about to be replaced by a saved state's, and a saved state holds
        them too; but text that `tokens` inserts into the restored cells may be among them (a
        lore entry that fired in the chat the user leaves and lapsed in the one they come back
        to: both characters share the world's book). Those parts go to the bank first."""
        bank, kv = self.bank, self._kv
        assert bank is not None and kv is not None
        bank.want(tokens, self._to_serve(tokens, plan.gaps(), plan.end))
        live = kv.tokens(seq)
        bank.put(seq, 0, len(live), live, wanted_only=True)
        kv.truncate(seq, 0)

    def _generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[Token | Finished]:
        import numpy as np

        from tavern.engines.samplers import SamplerSettings, TokenSampler

        stats = TurnStats()
        text = ""
        t_start = time.perf_counter()
        seq = self._seq_for(req.seq_id)
        try:
            llama = self._require()
            kv, decoder = self._kv, self._decoder
            assert kv is not None and decoder is not None and self._abort is not None
            add_bos = req.add_bos and self.adds_bos()
            window = self.n_ctx if seq == SEQ_CHAT else self.side_ctx
            tokens = self._prompt_tokens(req.prompt, add_bos, window, req.recurring)
            stats.prompt_tokens = len(tokens)
            if not tokens:
                yield Finished("", stats, error="empty prompt")
                return
            if len(tokens) >= window:
                stats.stop_reason = "error"
                yield Finished("", stats, error=f"prompt is {len(tokens)} tokens; the context holds {window}")
                return

            neg_tokens: list[int] = []
            neg_logits = None
            guided = bool(req.negative_prompt) and req.guidance_scale != 1.0
            if guided and (seq != SEQ_CHAT or self.side_ctx <= 0):
                raise EngineError("a negative prompt (CFG) needs side cells: set [model] side_ctx to -1 or more")
            self._abort.should_abort = False
            watcher = _CancelWatcher(cancel, self._abort)
            try:
                if guided:
                    # The negative sequence first: its last logits are kept before the chat's
                    # own prompt overwrites the context's output buffer.
                    neg_tokens = self._prompt_tokens(req.negative_prompt or "", add_bos, self.side_ctx)
                    if len(neg_tokens) >= self.side_ctx:
                        raise EngineError(
                            f"the negative prompt is {len(neg_tokens)} tokens; the side cells hold {self.side_ctx}"
                        )
                    neg_stats = TurnStats()
                    self._load(SEQ_CFG, neg_tokens, cancel, neg_stats)
                    stats.cfg_prompt_tokens = len(neg_tokens)
                    stats.cfg_evaluated_tokens = neg_stats.evaluated_tokens
                    if not cancel.is_set():
                        neg_logits = np.ctypeslib.as_array(
                            llama_cpp_logits(self._llama, -1), shape=(llama.n_vocab(),)
                        ).copy()
                bank = self._bank_for(seq)
                if bank is not None and req.recurring:
                    bank.expect([self.tokenize(text) for text in req.recurring])
                self._load(seq, tokens, cancel, stats)
            except DecodeError as err:
                if not (cancel.is_set() or err.code == 2):
                    raise
            finally:
                watcher.stop()
            t_prompt = time.perf_counter()
            stats.prompt_ms = (t_prompt - t_start) * 1000
            if cancel.is_set() or len(kv.tokens(seq)) < len(tokens):
                stats.stop_reason = "cancelled"
                stats.total_ms = (time.perf_counter() - t_start) * 1000
                self._state_stats(stats)
                yield Finished("", stats)
                return

            settings = req.sampler if req.sampler is not None else SamplerSettings()
            decoder_utf8 = codecs.getincrementaldecoder("utf-8")("replace")
            stops = [s for s in req.stop if s]
            hold = max((len(s) for s in stops), default=1) - 1
            emitted = 0
            t_first = None
            max_new = min(req.max_tokens, window - len(tokens))
            stats.stop_reason = "length"
            first_guided = True
            made: list[int] = []  # the tokens decoded into the cells, and their bytes
            pieces: list[bytes] = []

            with TokenSampler(llama, settings, tokens) as sampler:  # it keeps its own range of them
                stats.seed = sampler.seed
                for _ in range(max_new):
                    if cancel.is_set():
                        stats.stop_reason = "cancelled"
                        break
                    if neg_logits is None:
                        tok = sampler.sample()
                    else:
                        # After the prompt the chat's logits are the last row; after a pair
                        # decode they are row 0 (the negative's row 1 was copied).
                        row = -1 if first_guided else 0
                        pos_logits = np.ctypeslib.as_array(llama_cpp_logits(llama, row), shape=(llama.n_vocab(),))
                        tok = sampler.sample_from(neg_logits + req.guidance_scale * (pos_logits - neg_logits))
                        first_guided = False
                    sampler.accept(tok)
                    if t_first is None:
                        t_first = time.perf_counter()
                        stats.ttft_ms = (t_first - t_start) * 1000
                    if _is_eog(self._vocab, tok):
                        stats.stop_reason = "eos"
                        break
                    stats.gen_tokens += 1
                    piece = token_piece(self._vocab, tok)
                    text += decoder_utf8.decode(piece)
                    cut = _find_stop(text, stops, emitted - hold)
                    if cut is not None:
                        text = text[:cut]
                        stats.stop_reason = "stop"
                        if cut > emitted:
                            yield Token(text[emitted:cut])
                        emitted = len(text)
                        break
                    safe = len(text) - hold if stops else len(text)
                    if safe > emitted:
                        yield Token(text[emitted:safe])
                        emitted = safe
                    mirror = kv.tokens(seq)
                    if len(mirror) >= window:
                        break
                    if neg_logits is None:
                        self._decode_at(seq, [tok], len(mirror))
                    else:
                        neg_mirror = kv.tokens(SEQ_CFG)
                        if len(neg_mirror) >= self.side_ctx:
                            break
                        decoder.decode_each(tok, [(seq, len(mirror)), (SEQ_CFG, len(neg_mirror))])
                        mirror.append(tok)
                        neg_mirror.append(tok)
                        neg_logits = np.ctypeslib.as_array(llama_cpp_logits(llama, 1), shape=(llama.n_vocab(),)).copy()
                    made.append(tok)
                    pieces.append(piece)
            self.own_tokens.add(made, pieces)
            text += decoder_utf8.decode(b"", final=True) if stats.stop_reason != "stop" else ""
            if len(text) > emitted:
                yield Token(text[emitted:])
            t_end = time.perf_counter()
            if t_first is not None and stats.gen_tokens:
                stats.gen_tps = stats.gen_tokens / max(t_end - t_prompt, 1e-9)
            stats.total_ms = (t_end - t_start) * 1000
            self._state_stats(stats)
            yield Finished(text, stats)
        except Exception as err:  # never take the app down: report, keep what we have
            if self._kv is not None and self._llama is not None:
                self._kv.clear(seq)  # the cache may be half-written; start clean next turn
            stats.stop_reason = "error"
            stats.total_ms = (time.perf_counter() - t_start) * 1000
            yield Finished(text, stats, error=f"{type(err).__name__}: {err}")

    def _load(self, seq: int, tokens: list[int], cancel: threading.Event, stats: TurnStats) -> None:
        """Bring `seq`'s cells to hold `tokens`, evaluating only what the cache lacks; fills the
        cache fields of `stats`. Raises DecodeError when cancelled midway."""
        kv = self._kv
        assert kv is not None
        plan, spared = self._prepare(seq, tokens, stats)
        bank = self._bank_for(seq)
        if bank is not None:
            bank.want(tokens, self._to_serve(tokens, plan.gaps(), plan.end))

        def drop(a: int, b: int, t: list[int]) -> None:
            assert bank is not None
            bank.put(seq, a, b, t, top=a == plan.prefix, wanted_only=spared)

        gaps = kv.apply(plan, seq, tokens, drop=None if bank is None else drop)
        n_past = len(kv.tokens(seq))
        if n_past >= len(tokens):  # fully cached: evaluate the last token again for its logits
            n_past = len(tokens) - 1
            kv.truncate(seq, n_past)
        spans = self._to_serve(tokens, gaps, n_past)
        found = bank.find(tokens, spans) if bank else []
        inserted = sum(b - a for a, b in gaps)
        stats.banked_tokens = sum(m.n for m in found)
        stats.cached_tokens = n_past - inserted + stats.banked_tokens
        stats.shifted_tokens = plan.shifted if kv.can_shift and plan.moves else 0
        stats.evaluated_tokens = len(tokens) - stats.cached_tokens
        for a, b in gaps:
            self._decode_gap(seq, tokens, a, b, cancel, [m for m in found if a <= m.at < b])
        self._decode_tail(seq, tokens, cancel, [m for m in found if m.at >= n_past])

    def _to_serve(self, tokens: list[int], gaps: list[tuple[int, int]], tail: int) -> list[tuple[int, int]]:
        """The spans of the prompt the bank may serve: the inserted text and the tail from `tail`,
        except near the end: the newest tokens, which the reply reads most closely, are always
        evaluated in their context."""
        end = len(tokens) - max(1, self.cache_reuse)
        return [(a, min(b, end)) for a, b in [*gaps, (tail, len(tokens))] if min(b, end) > a]

    def _state_stats(self, stats: TurnStats) -> None:
        stats.saved_states = len(self.states)
        stats.saved_state_mib = round(self.states.bytes_used / 2**20, 1)

    def _decode_at(self, seq: int, part: list[int], pos: int) -> None:
        """Decode tokens at the end of `seq`; when the KV cache is full, the side sequences
        (which can be rebuilt) make room for the chat."""
        kv = self._kv
        assert kv is not None
        self._decode_with_room(part, seq, pos)
        kv.tokens(seq).extend(part)

    def _decode_with_room(self, part: list[int], seq: int, pos: int) -> None:
        """When the KV cache is full, the other side sequences (which can be rebuilt) give up
        their cells: the chat first, then CFG, then a background job."""
        kv, decoder = self._kv, self._decoder
        assert kv is not None and decoder is not None
        try:
            decoder.decode(part, seq, pos)
        except DecodeError as err:
            bank = self.bank
            if err.code == 1 and bank is not None and bank.chunks:
                # Only ever a cache: its cells go first, least likely to come back first.
                while bank.chunks:
                    bank.drop_oldest()
                    try:
                        decoder.decode(part, seq, pos)
                        return
                    except DecodeError as again:
                        if again.code != 1:
                            raise
            others = [s for s in (SEQ_BACKGROUND, SEQ_CFG) if s != seq and kv.tokens(s)]
            if err.code != 1 or not others or seq == SEQ_BACKGROUND:
                raise
            for i, side in enumerate(others):
                kv.clear(side)
                try:
                    decoder.decode(part, seq, pos)
                    return
                except DecodeError as again:
                    if again.code != 1 or i == len(others) - 1:
                        raise

    def _decode_tail(self, seq: int, tokens: list[int], cancel: threading.Event, banked: Sequence[Match] = ()) -> None:
        kv = self._kv
        assert kv is not None
        start = len(kv.tokens(seq))
        for a, b, match in self._pieces(start, len(tokens), banked):
            if match is not None:
                if self._take(match, seq):
                    kv.tokens(seq).extend(tokens[a:b])
                    continue
            for i in range(a, b, self.n_batch):
                if cancel.is_set():
                    return
                try:
                    self._decode_at(seq, tokens[i : min(b, i + self.n_batch)], i)
                except DecodeError:
                    kv.truncate(seq, i)  # an aborted batch leaves no cells behind
                    raise

    def _decode_gap(
        self, seq: int, tokens: list[int], a: int, b: int, cancel: threading.Event, banked: Sequence[Match] = ()
    ) -> None:
        """Decode inserted text at positions a..b while the cells after it wait on the scratch
        sequence (they are already at their final positions)."""
        kv = self._kv
        assert kv is not None
        kept = kv.tokens(seq)[:]  # the mirror already spans the gap
        kv.park(seq, a)
        ok = False
        try:
            for x, y, match in self._pieces(a, b, banked):
                if match is not None and self._take(match, seq):
                    continue
                for i in range(x, y, self.n_batch):
                    if cancel.is_set():
                        raise DecodeError(2)
                    self._decode_with_room(tokens[i : min(y, i + self.n_batch)], seq, i)
            ok = True
        finally:
            kv.unpark(seq, a, 0)
            if ok:
                kv.mirrors[seq] = kept
            else:
                kv.truncate(seq, a)

    @staticmethod
    def _pieces(a: int, b: int, banked: Sequence[Match]) -> Iterator[tuple[int, int, Match | None]]:
        """[a, b) cut into spans to decode (None) and spans the bank serves, in order."""
        at = a
        for m in sorted(banked, key=lambda m: m.at):
            if m.at > at:
                yield at, m.at, None
            yield m.at, m.at + m.n, m
            at = m.at + m.n
        if b > at:
            yield at, b, None

    def _take(self, match: Match, seq: int) -> bool:
        bank = self.bank
        return bank is not None and bank.take(match, seq)


def side_cells(n_ctx: int, side_ctx: int) -> int:
    """KV cells for the side sequences: `[model] side_ctx`, where -1 means one more window."""
    return n_ctx if side_ctx < 0 else side_ctx


def bank_size(side: int, bank_cells: int, cache_reuse: int, insert_reuse: bool) -> int:
    """Cells for the bank of removed text: `[model] bank_cells`, where -1 means all the side
    cells (given back whenever a sequence needs them). Off without chunk reuse after
    insertions, which is what brings banked text back."""
    if cache_reuse <= 0 or not insert_reuse:
        return 0
    return side if bank_cells < 0 else bank_cells


@contextlib.contextmanager
def _several_sequences(llama_cpp: Any) -> Iterator[None]:
    """`Llama()` offers no way to ask for several sequences in a unified KV cache; it builds
    its context parameters from `llama_context_default_params`, so adjust those for the call."""
    module = llama_cpp.llama_cpp
    original = module.llama_context_default_params

    def params() -> Any:
        p = original()
        p.n_seq_max = N_SEQ
        p.kv_unified = True
        return p

    module.llama_context_default_params = params
    try:
        yield
    finally:
        module.llama_context_default_params = original


def llama_cpp_logits(llama: Any, i: int) -> Any:
    """Row i of the last decode's logits (-1: the last row)."""
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llama._ctx.ctx, i)
    if not ptr:
        raise EngineError("no logits to sample from")
    return ptr


def _is_eog(vocab: Any, token: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(vocab, token))


def _find_stop(text: str, stops: list[str], start: int) -> int | None:
    """Earliest position of any stop string that ends in the not-yet-emitted tail."""
    best = None
    for s in stops:
        i = text.find(s, max(0, start))
        if i != -1 and (best is None or i < best):
            best = i
    return best


class _CancelWatcher:
    """Turns a cancel Event into llama.cpp's abort flag while a prompt batch is decoding, so Esc
    stops a long prompt evaluation within milliseconds instead of after the batch."""

    def __init__(self, cancel: threading.Event, abort: AbortFlag):
        self._cancel = cancel
        self._abort = abort
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            if self._cancel.wait(0.02):
                self._abort.should_abort = True
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._abort.should_abort = False
