"""The embedded engine: llama.cpp through llama-cpp-python, one GGUF file, streamed.

It runs its own decode loop over `llama_decode` instead of `create_completion` because it needs
what the wrapper doesn't give: several sequences in one context (the chat, a CFG negative
prompt, a background job such as a summary, each with its own cache), the KV-cache reuse of
`reuse_plan.plan_align` (removed and inserted text both cost only what changed; `cell_loader`
brings each prompt into the cells), saved states in host memory (`prompt_cache`), a sampler
chain with DRY, XTC, top-a and a repetition penalty that sees the prompt
(`samplers.TokenSampler`), and exact per-turn stats. `llama_cpp` is imported in `load()`, not at
module import: `tavern --help` and the TUI's first frame must not pay for it.

The context is created with a unified KV cache of `n_ctx + side_ctx` cells: the chat's window
plus room for the side sequences. Sequence 3 is scratch space for inserting text mid-sequence;
sequence 4 holds the bank of text that left the prompt (`cell_bank`), in whatever side cells
are free.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

from tavern.engines.base import (
    SEQ_BACKGROUND,
    SEQ_CFG,
    SEQ_CHAT,
    Capabilities,
    Engine,
    Finished,
    GenerationRequest,
    PromptProgress,
    Token,
    TurnStats,
)
from tavern.engines.cell_bank import CellBank
from tavern.engines.cell_loader import CellLoader, KVCacheFull
from tavern.engines.config import EngineChanges, EngineConfig
from tavern.engines.gguf_info import ggml_type_id, read_gguf
from tavern.engines.gpu import Offload, step_down
from tavern.engines.lowlevel.context import (
    AbortFlag,
    BatchDecoder,
    CancelWatcher,
    DecodeError,
    KVCache,
    logits_row,
    several_sequences,
)
from tavern.engines.lowlevel.model import is_eog, silence_llama_logs, token_piece, vocab_of
from tavern.engines.own_tokens import OwnTokens
from tavern.engines.prompt_cache import PromptStateCache
from tavern.engines.turn import Halt, PromptMeter, TextStream, Turn, reported
from tavern.errors import EngineError, ModelLoadError

if TYPE_CHECKING:  # pragma: no cover - typing only; llama_cpp and numpy are imported at load time
    import llama_cpp

    from tavern.engines.lowlevel.model import Vocab
    from tavern.engines.samplers import TokenSampler
    from tavern.engines.turn import Logits

SEQ_SCRATCH = 3
SEQ_BANK = 4
"""Cells of text that left a prompt (tavern/engines/cell_bank.py)."""
N_SEQ = 5
MIN_DISK_TOKENS = 128
"""A chat's cells are written to disk when they hold at least this many tokens (fewer cost
less to evaluate again than to read)."""
KV_TYPES = ("f16", "f32", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
"""The KV cache types `type_k`/`type_v` may name (their ids: gguf_info's GGML type table), in the
order the error for an unknown one lists them."""


class LlamaArgs(TypedDict, total=False):
    """The `llama_cpp.Llama` arguments the engine sets (`LocalEngine._llama_kwargs`)."""

    model_path: str
    n_ctx: int
    n_threads: int
    n_threads_batch: int
    n_batch: int
    n_gpu_layers: int
    flash_attn: bool
    verbose: bool
    rope_freq_base: float
    type_k: int
    type_v: int


class LoadInfo(TypedDict):
    """How the model was loaded (`LocalEngine.load_info`)."""

    backend: str
    gpu_offload: bool
    n_gpu_layers_requested: int
    gpu_layers: int
    note: str


class LocalEngine(Engine):
    name = "llama.cpp"

    def __init__(
        self,
        model_path: Path | str,
        config: EngineConfig | None = None,
        *,
        gpu_step_down: bool = False,
        **changes: Unpack[EngineChanges],
    ):
        """`config` (default: EngineConfig's defaults) with `changes` to any of its fields
        (tests and benchmarks: `LocalEngine(path, n_ctx=1024, side_ctx=0)`). Its `path` and
        `rope_alpha` are the loader's business: `model_path` and `rope_freq_base` are what
        llama.cpp gets."""
        cfg = (config or EngineConfig()).with_changes(**changes)
        self.config = cfg
        n_ctx, n_threads, cache_reuse, insert_reuse = cfg.n_ctx, cfg.n_threads, cfg.cache_reuse, cfg.insert_reuse
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        """The chat's window: what the prompt plus the reply must fit in."""
        self.side_ctx = cfg.side_cells
        """Extra KV cells for the side sequences (CFG, background); 0 = they borrow the chat's,
        whose state is saved in host memory meanwhile."""
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_gpu_layers = cfg.n_gpu_layers
        self.gpu_step_down = gpu_step_down
        """Free VRAM unknown: if llama.cpp refuses `n_gpu_layers`, try fewer (`gpu.step_down`)."""
        self.offload: Offload | None = None
        """What the last load put on the GPU, when it had to find out by trying."""
        self.n_batch = cfg.n_batch
        self.flash_attn = cfg.flash_attn
        self.type_k = cfg.type_k
        self.type_v = cfg.type_v
        self.rope_freq_base = cfg.rope_freq_base
        self.cache_reuse = cache_reuse
        self.insert_reuse = insert_reuse
        """Reuse cached text after an insertion too (`plan_align`); False: llama-server's walk."""
        self.states = PromptStateCache(cfg.cache_ram_mib * 1024 * 1024)
        self.state_dir: Path | None = None
        """Where saved states go on disk (`keep_states_in`); None: host memory only. Set by the
        engine host, never by default: a test's or a benchmark's engine writes nothing."""
        self.bank_cells = cfg.bank_size
        """Cells the bank of removed text may hold; 0 = off."""
        self.bank: CellBank | None = None
        self.own_tokens = OwnTokens()
        """The token runs this engine generated: a prompt that quotes them gets the same tokens."""
        self._llama: llama_cpp.Llama | None = None
        self._kv: KVCache | None = None
        self._decoder: BatchDecoder | None = None
        self._abort: AbortFlag | None = None
        self._vocab: Vocab | None = None
        self._cells: CellLoader | None = None
        """Brings prompts into the cells; built by `load` from the pieces above."""
        self._lock = threading.Lock()
        self.load_seconds = 0.0
        self._gpu_layers_max = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def keeps_removed_text(self) -> bool:
        """The bank is on (and, once loaded, the model can shift its cells)."""
        return self.bank_cells > 0 and (self._kv is None or self._kv.can_shift)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            raw_prompt=True,
            kv_shift=self._kv is None or self._kv.can_shift,
            keeps_removed_text=self.keeps_removed_text,
            counts_joined=False,
            cfg=self.side_ctx > 0,
            token_ids=True,
        )

    @property
    def background_context(self) -> int:
        return self.side_ctx or self.n_ctx

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
        kwargs = self._llama_kwargs(path)

        def try_load(n_layers: int) -> llama_cpp.Llama:
            args = kwargs.copy()
            args["n_gpu_layers"] = n_layers
            with several_sequences(N_SEQ):
                return llama_cpp.Llama(**args)

        self.offload = None
        try:
            if self.gpu_step_down and self.n_gpu_layers > 0:
                llama, self.offload = step_down(self.n_gpu_layers, try_load)
            else:
                llama = try_load(self.n_gpu_layers)
        except Exception as err:  # llama.cpp reports every load failure as ValueError/RuntimeError
            raise ModelLoadError(f"{path}: cannot load model: {err}") from None
        self._llama = llama
        ctx = llama.ctx
        self._kv = KVCache(ctx, SEQ_SCRATCH)
        if self.bank_cells and self._kv.can_shift:
            base = max(self.n_ctx, self.side_ctx) + 1  # past every live sequence's positions
            self.bank = CellBank(self._kv, SEQ_BANK, base, self.bank_cells, self.cache_reuse)
        self._decoder = BatchDecoder(ctx, self.n_batch)
        self._abort = AbortFlag(llama)
        self._vocab = vocab_of(llama)
        self._cells = CellLoader(
            self._kv,
            self._decoder,
            self._vocab,
            self.states,
            self.bank,
            cache_reuse=self.cache_reuse,
            insert_reuse=self.insert_reuse,
            n_batch=self.n_batch,
        )
        self._open_disk()
        self.load_seconds = time.perf_counter() - t0

    def keep_states_in(self, folder: Path | None) -> None:
        """Save KV states to `folder` too (None: host memory only), within `cache_disk_mib`: the
        live chat's when the engine unloads or the app quits (`save_states`), and each one saved
        in host memory (another chat's, when the user switches) written through in the
        background. A new engine on the same model, context and build starts from them."""
        self.state_dir = folder
        if self._llama is not None:
            self._open_disk()

    def _open_disk(self) -> None:
        from tavern.engines.state_disk import StateDisk, StateKey

        budget = self.config.cache_disk_mib * 1024 * 1024
        disk = None
        if self.state_dir is not None and budget > 0:
            try:
                key = StateKey.for_engine(
                    self.model_path, n_ctx=self.n_ctx, type_k=self.type_k, type_v=self.type_v,
                    flash_attn=self.flash_attn, rope_freq_base=self.rope_freq_base,
                )
            except OSError:
                key = None  # the model file went away after the load: no key, no disk tier
            disk = StateDisk(self.state_dir, budget, key) if key is not None else None
        self.states.disk = disk

    def save_states(self, timeout: float = 10.0) -> bool:
        """Before the process ends: the live chat's state to disk, and the background writes
        finished, within `timeout` seconds. A reply still running (the app quit mid-reply)
        holds the engine: then nothing is saved (False) rather than the exit waiting on it."""
        if not self._lock.acquire(timeout=max(0.0, timeout)):
            return False
        try:
            self._persist(timeout)
        finally:
            self._lock.release()
        return True

    def _persist(self, timeout: float) -> None:
        """The chat sequence's cells to disk (when the tier is on and they are worth a file)."""
        kv, disk = self._kv, self.states.disk
        if disk is None or kv is None:
            return
        if len(kv.tokens(SEQ_CHAT)) >= MIN_DISK_TOKENS and not disk.has(kv.tokens(SEQ_CHAT)):
            try:
                tokens, data = kv.save(SEQ_CHAT)
            except (RuntimeError, MemoryError):
                return
            self.states.persist(tokens, data, timeout)
        else:
            disk.flush(timeout)

    def _llama_kwargs(self, path: Path) -> LlamaArgs:
        """`llama_cpp.Llama`'s arguments for this engine's settings (not the sequences:
        `several_sequences`); an unknown KV cache type is a ModelLoadError."""
        kwargs = LlamaArgs(
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
        if (type_k := _kv_type_id(self.type_k)) is not None:
            kwargs["type_k"] = type_k
        if (type_v := _kv_type_id(self.type_v)) is not None:
            kwargs["type_v"] = type_v
        return kwargs

    @property
    def load_info(self) -> LoadInfo:
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
            self._persist(timeout=10.0)
            if self._decoder is not None:
                self._decoder.close()
            if self._llama is not None:
                self._llama.close()
            self.states.clear()
            self.own_tokens.clear()
            self._llama = self._kv = self._abort = self._vocab = self._decoder = self.bank = None
            self._cells = None

    def _require(self) -> llama_cpp.Llama:
        if self._llama is None:
            self.load()
        assert self._llama is not None  # load() set it, or raised
        return self._llama

    def _live_vocab(self) -> Vocab:
        self._require()
        assert self._vocab is not None  # set with the model
        return self._vocab

    def _live_cells(self) -> CellLoader:
        self._require()
        assert self._cells is not None  # set with the model
        return self._cells

    # -- tokens ------------------------------------------------------------------------------

    @property
    def bos_token(self) -> str:
        bos = self._require().token_bos()
        return token_piece(self._live_vocab(), bos).decode("utf-8", "replace") if bos >= 0 else ""

    def adds_bos(self) -> bool:
        """Whether the model wants a BOS token prepended (GGUF `add_bos_token`)."""
        return bool(self._require()._model.add_bos_token())

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        llama = self._require()
        # special=True: the template's control tokens (<|im_start|>) must become single tokens.
        return llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text)) if text else 0

    def max_token_bytes(self) -> int:
        """The most UTF-8 bytes one token of this vocabulary spells (control tokens included),
        plus a margin for the space a tokenizer adds: a text of n bytes is at least n / this
        many tokens, so the assembler skips counting a message that cannot fit (tokenizing a
        10 MB message takes 20 s and 800 MB)."""
        found: int | None = self.__dict__.get("_max_token_bytes")
        if found is None:
            llama = self._require()
            pieces = (len(llama.detokenize([t], special=True)) for t in range(llama.n_vocab()))
            found = max(pieces, default=1) + 4
            self.__dict__["_max_token_bytes"] = found
        return found

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
        llama = self._require()
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

    def _generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[Token | Finished]:
        """One reply, in steps: the prompt's tokens, the prompts into the cells, the
        decode-sample loop, the stats. Any failure ends it with Finished(error=...) and the
        text so far, and leaves the sequence's cache empty."""
        turn = Turn(req, Halt(cancel), self._seq_for(req.seq_id))
        try:
            refused = self._prepare_prompt(turn)
            if refused is not None:
                yield refused
                return
            yield from self._evaluate_prompt(turn)
            assert self._kv is not None
            if cancel.is_set() or len(self._kv.tokens(turn.seq)) < len(turn.tokens):
                yield self._cancelled(turn)
                return
            yield from self._reply(turn)
            self._final_stats(turn)
            yield Finished(turn.text, turn.stats)
        except Exception as err:  # never take the app down: report, keep what we have
            if self._kv is not None and self._llama is not None:
                self._kv.clear(turn.seq)  # the cache may be half-written; start clean next turn
            turn.stats.stop_reason = "error"
            turn.stats.total_ms = (time.perf_counter() - turn.t_start) * 1000
            yield Finished(turn.text, turn.stats, error=f"{type(err).__name__}: {err}")

    def _prepare_prompt(self, turn: Turn) -> Finished | None:
        """Step 1: the prompt's tokens for its sequence's window (the model loaded first). A
        Finished when there is nothing to generate from: an empty prompt, or one that fills it."""
        self._require()
        assert self._kv is not None and self._decoder is not None and self._abort is not None
        req, stats = turn.req, turn.stats
        turn.add_bos = req.add_bos and self.adds_bos()
        turn.window = self.n_ctx if turn.seq == SEQ_CHAT else self.side_ctx
        turn.tokens = self._prompt_tokens(req.prompt, turn.add_bos, turn.window, req.recurring)
        stats.prompt_tokens = len(turn.tokens)
        if not turn.tokens:
            return Finished("", stats, error="empty prompt")
        if len(turn.tokens) >= turn.window:
            stats.stop_reason = "error"
            too_long = f"prompt is {len(turn.tokens)} tokens; the context holds {turn.window}"
            return Finished("", stats, error=too_long)
        return None

    def _evaluate_prompt(self, turn: Turn) -> Iterator[PromptProgress]:
        """Step 2: the prompts into the cells (`_load_prompts`); with `report_progress`, on a
        helper thread while this yields how far it got."""
        if turn.req.report_progress:
            yield from reported(lambda report: self._load_prompts(turn, PromptMeter(turn.stats, report)), turn.cancel)
        else:
            self._load_prompts(turn, None)
        stats = turn.stats
        if stats.evaluated_tokens and stats.prompt_ms > 0:
            stats.prompt_tps = stats.evaluated_tokens / (stats.prompt_ms / 1000)

    def _load_prompts(self, turn: Turn, meter: PromptMeter | None) -> None:
        """The negative prompt (CFG) and the prompt into their sequences' cells, evaluating only
        what the cache lacks (`meter` counts the prompt's batches). A cancel stops it between
        batches, and within one through llama.cpp's abort flag; the caller sees it in the cells
        that are missing."""
        req, cancel, seq = turn.req, turn.cancel, turn.seq
        guided = bool(req.negative_prompt) and req.guidance_scale != 1.0
        if guided and (seq != SEQ_CHAT or self.side_ctx <= 0):
            raise EngineError("a negative prompt (CFG) needs side cells: set [model] side_ctx to -1 or more")
        assert self._abort is not None
        self._abort.should_abort = False
        watcher = CancelWatcher(cancel, self._abort)
        try:
            if guided:
                turn.neg_logits = self._load_negative(turn)
            cells = self._live_cells()
            bank = cells.bank_for(seq)
            if bank is not None and req.recurring:
                bank.expect([self.tokenize(text) for text in req.recurring])
            cells.load(seq, turn.tokens, cancel, turn.stats, progress=meter)
        except DecodeError as err:
            if not (cancel.is_set() or err.code == 2):
                raise
        finally:
            watcher.stop()
        turn.t_prompt = time.perf_counter()
        turn.stats.prompt_ms = (turn.t_prompt - turn.t_start) * 1000

    def _load_negative(self, turn: Turn) -> Logits | None:
        """CFG's negative prompt into SEQ_CFG, before the chat's: its last logits are copied
        before the chat's own prompt overwrites the context's output buffer. None if cancelled."""
        neg_tokens = self._prompt_tokens(turn.req.negative_prompt or "", turn.add_bos, self.side_ctx)
        if len(neg_tokens) >= self.side_ctx:
            raise EngineError(
                f"the negative prompt is {len(neg_tokens)} tokens; the side cells hold {self.side_ctx}"
            )
        cells = self._live_cells()
        cells.guiding = True  # the chat's prompt and reply must not take these cells
        self._spare_background(turn, len(neg_tokens))
        neg_stats = TurnStats()
        cells.load(SEQ_CFG, neg_tokens, turn.cancel, neg_stats)
        turn.stats.cfg_prompt_tokens = len(neg_tokens)
        turn.stats.cfg_evaluated_tokens = neg_stats.evaluated_tokens
        if turn.cancel.is_set():
            return None
        return self._logits(-1).copy()

    def _spare_background(self, turn: Turn, n_negative: int) -> None:
        """A guided turn near a full window needs the chat's cells and the negative prompt's,
        nearly every cell there is: a background job's cells (a summary, whose prompt never comes
        back) go first, so that saved states restore in one piece instead of failing for room."""
        assert self._kv is not None
        background = self._kv.tokens(SEQ_BACKGROUND)
        reply = min(turn.req.max_tokens, turn.window - len(turn.tokens))
        if background and len(turn.tokens) + n_negative + 2 * reply + len(background) > self.kv_cells:
            self._kv.clear(SEQ_BACKGROUND)

    def _cancelled(self, turn: Turn) -> Finished:
        """Cancelled while the prompt was evaluated: no reply."""
        stats = turn.stats
        stats.stop_reason = "cancelled"
        stats.total_ms = (time.perf_counter() - turn.t_start) * 1000
        self._state_stats(stats)
        return Finished("", stats)

    def _reply(self, turn: Turn) -> Iterator[Token]:
        """Step 3, the decode-sample loop: draw a token, stream its text, decode it into the
        cells (both sequences' with CFG), until max_tokens, an end-of-generation token, a stop
        string, a full window or a cancel. The tokens it decoded become `own_tokens`."""
        from tavern.engines.samplers import SamplerSettings, TokenSampler

        req, stats = turn.req, turn.stats
        settings = req.sampler if req.sampler is not None else SamplerSettings()
        turn.stream = stream = TextStream(req.stop)
        max_new = min(req.max_tokens, turn.window - len(turn.tokens))
        stats.stop_reason = "length"
        made: list[int] = []  # the tokens decoded into the cells, and their bytes
        pieces: list[bytes] = []
        vocab = self._live_vocab()
        cells = self._live_cells()
        cells.guiding = turn.neg_logits is not None
        with TokenSampler(self._require(), settings, turn.tokens) as sampler:  # it keeps its own range of them
            stats.seed = sampler.seed
            for i in range(max_new):
                if turn.cancel.is_set():
                    stats.stop_reason = "cancelled"
                    break
                tok = self._draw(turn, sampler, first=i == 0)
                sampler.accept(tok)
                if turn.t_first is None:
                    turn.t_first = time.perf_counter()
                    stats.ttft_ms = (turn.t_first - turn.t_start) * 1000
                if is_eog(vocab, tok):
                    stats.stop_reason = "eos"
                    break
                stats.gen_tokens += 1
                piece = token_piece(vocab, tok)
                out, stopped = stream.push(piece)
                if stopped:
                    stats.stop_reason = "stop"
                if out:
                    yield Token(out)
                if stopped or not self._advance(turn, tok):
                    break
                made.append(tok)
                pieces.append(piece)
        cells.guiding = False
        self.own_tokens.add(made, pieces)
        if tail := stream.flush(final=stats.stop_reason != "stop"):
            yield Token(tail)

    def _draw(self, turn: Turn, sampler: TokenSampler, first: bool) -> int:
        """The next token; with CFG from neg + scale x (pos - neg). The chat's logits are the
        last row after the prompt, row 0 after a pair decode (the negative's row 1 was copied)."""
        neg = turn.neg_logits
        if neg is None:
            return sampler.sample()
        pos = self._logits(-1 if first else 0)
        return sampler.sample_from(neg + turn.req.guidance_scale * (pos - neg))

    def _advance(self, turn: Turn, tok: int) -> bool:
        """Decode the drawn token into the cells (with CFG: into the negative's too, keeping its
        logits); False when there is no room left for it, which ends the reply: its window is
        full, or the KV cache is even after the bank and the idle side sequences gave their
        cells up (`CellLoader._give_way`; by the windows' sizes that never happens)."""
        kv = self._kv
        assert kv is not None
        seq, cells = turn.seq, self._live_cells()
        mirror = kv.tokens(seq)
        guided = turn.neg_logits is not None
        if len(mirror) >= turn.window or (guided and len(kv.tokens(SEQ_CFG)) >= self.side_ctx):
            return False
        try:
            if guided:
                cells.decode_pair(tok, seq, SEQ_CFG)
            else:
                cells.decode_at(seq, [tok], len(mirror))
        except KVCacheFull:
            return False
        if guided:
            turn.neg_logits = self._logits(1).copy()
        return True

    def _final_stats(self, turn: Turn) -> None:
        """Step 4: the reply's speed and times, and the saved states' count and size."""
        stats = turn.stats
        t_end = time.perf_counter()
        if turn.t_first is not None and stats.gen_tokens:
            stats.gen_tps = stats.gen_tokens / max(t_end - turn.t_prompt, 1e-9)
        stats.total_ms = (t_end - turn.t_start) * 1000
        self._state_stats(stats)

    def _logits(self, row: int) -> Logits:
        """Row `row` of the last decode's logits (-1: the last), a view of llama.cpp's buffer:
        copy it to keep it past the next decode."""
        llama = self._require()
        logits = logits_row(llama.ctx, row, llama.n_vocab())
        if logits is None:
            raise EngineError("no logits to sample from")
        return logits

    def take_notices(self) -> list[str]:
        disk = self.states.disk
        if disk is None or not disk.notices:
            return []
        out, disk.notices = disk.notices, []
        return out

    def _state_stats(self, stats: TurnStats) -> None:
        stats.saved_states = len(self.states)
        stats.saved_state_mib = round(self.states.bytes_used / 2**20, 1)


def _kv_type_id(name: str) -> int | None:
    """The ggml type id llama.cpp takes for a KV cache type; None for f16, its default (left to
    it); an unknown type is a ModelLoadError."""
    if name == "f16":
        return None
    if name not in KV_TYPES:
        known = ", ".join(KV_TYPES)
        raise ModelLoadError(f"unknown KV cache type {name!r} (use one of {known})")
    return ggml_type_id(name)
