"""The embedded engine: llama.cpp through llama-cpp-python, one GGUF file, streamed.

It runs its own decode loop over `Llama.eval` instead of `create_completion` because it needs
three things the wrapper doesn't give: the KV-cache reuse of `lowlevel.plan_reuse` (context
shift), a sampler chain with DRY, XTC, top-a and a repetition penalty that sees the prompt
(`samplers.TokenSampler`), and exact per-turn stats. `llama_cpp` is imported in `load()`, not
at module import: `tavern --help` and the TUI's first frame must not pay for it.
"""

from __future__ import annotations

import codecs
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tavern.engines.base import Finished, GenerationRequest, Token, TurnStats
from tavern.engines.gguf_info import read_gguf
from tavern.engines.lowlevel import AbortFlag, KVCache, plan_reuse, silence_llama_logs, token_piece
from tavern.errors import EngineError, ModelLoadError


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
    ):
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_gpu_layers = n_gpu_layers
        self.n_batch = n_batch
        self.flash_attn = flash_attn
        self.type_k = type_k
        self.type_v = type_v
        self.rope_freq_base = rope_freq_base
        self.cache_reuse = cache_reuse
        self._llama: Any = None
        self._kv: KVCache | None = None
        self._abort: AbortFlag | None = None
        self._vocab: Any = None
        self._lock = threading.Lock()
        self.load_seconds = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    @property
    def context_size(self) -> int:
        return self._llama.n_ctx() if self._llama is not None else self.n_ctx

    @property
    def model_name(self) -> str:
        return self.model_path.name

    def load(self) -> None:
        if self._llama is not None:
            return
        path = self.model_path
        read_gguf(path)  # a missing, truncated or foreign file: one clear line, before llama.cpp's noise
        t0 = time.perf_counter()
        try:
            import llama_cpp  # deferred: ~0.2 s and 55 MB
        except ImportError as err:  # a broken install is a user-facing problem, not a crash
            raise ModelLoadError(f"llama-cpp-python is not installed or broken: {err}") from None
        silence_llama_logs()
        kwargs: dict[str, Any] = dict(
            model_path=str(path),
            n_ctx=self.n_ctx,
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
        try:
            self._llama = llama_cpp.Llama(**kwargs)
        except Exception as err:  # llama.cpp reports every load failure as ValueError/RuntimeError
            raise ModelLoadError(f"{path}: cannot load model: {err}") from None
        self._kv = KVCache(self._llama)
        self._abort = AbortFlag(self._llama)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llama._model.model)
        self.load_seconds = time.perf_counter() - t0

    def unload(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
            self._llama = self._kv = self._abort = self._vocab = None

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

    def metadata(self) -> dict[str, str]:
        return dict(self._require().metadata)

    @property
    def cached_tokens(self) -> list[int]:
        return self._kv.tokens if self._kv else []

    # -- generation --------------------------------------------------------------------------

    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[Token | Finished]:
        if request.seq_id != 0:
            raise EngineError("this engine decodes one sequence for now (seq_id 0)")
        cancel = cancel or threading.Event()
        with self._lock:
            yield from self._generate(request, cancel)

    def _generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[Token | Finished]:
        from tavern.engines.samplers import SamplerSettings, TokenSampler

        stats = TurnStats()
        text = ""
        t_start = time.perf_counter()
        try:
            llama = self._require()
            kv = self._kv
            assert kv is not None and self._abort is not None
            add_bos = req.add_bos and self.adds_bos()
            tokens = self.tokenize(req.prompt, add_bos=add_bos)
            stats.prompt_tokens = len(tokens)
            n_ctx = llama.n_ctx()
            if not tokens:
                yield Finished("", stats, error="empty prompt")
                return
            if len(tokens) >= n_ctx:
                stats.stop_reason = "error"
                yield Finished("", stats, error=f"prompt is {len(tokens)} tokens; the context holds {n_ctx}")
                return

            plan = plan_reuse(kv.tokens, tokens, self.cache_reuse)
            n_past = kv.apply(plan)
            if n_past >= len(tokens):  # fully cached: evaluate the last token again for its logits
                n_past = len(tokens) - 1
                kv.truncate(n_past)
            stats.cached_tokens = n_past
            stats.shifted_tokens = min(plan.shifted, n_past) if kv.can_shift else 0
            stats.evaluated_tokens = len(tokens) - n_past

            self._abort.should_abort = False
            watcher = _CancelWatcher(cancel, self._abort)
            try:
                for i in range(n_past, len(tokens), self.n_batch):
                    if cancel.is_set():
                        break
                    llama.eval(tokens[i : i + self.n_batch])
            except Exception:
                if not cancel.is_set():
                    raise
            finally:
                watcher.stop()
            t_prompt = time.perf_counter()
            stats.prompt_ms = (t_prompt - t_start) * 1000
            if cancel.is_set():
                kv.truncate(llama.n_tokens)
                stats.stop_reason = "cancelled"
                stats.total_ms = (time.perf_counter() - t_start) * 1000
                yield Finished("", stats)
                return

            settings = req.sampler if req.sampler is not None else SamplerSettings()
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            stops = [s for s in req.stop if s]
            hold = max((len(s) for s in stops), default=1) - 1
            emitted = 0
            t_first = None
            max_new = min(req.max_tokens, n_ctx - len(tokens))
            stats.stop_reason = "length"
            with TokenSampler(llama, settings, tokens) as sampler:  # it keeps its own range of them
                stats.seed = sampler.seed
                for _ in range(max_new):
                    if cancel.is_set():
                        stats.stop_reason = "cancelled"
                        break
                    tok = sampler.sample()
                    sampler.accept(tok)
                    if t_first is None:
                        t_first = time.perf_counter()
                        stats.ttft_ms = (t_first - t_start) * 1000
                    if _is_eog(self._vocab, tok):
                        stats.stop_reason = "eos"
                        break
                    stats.gen_tokens += 1
                    text += decoder.decode(token_piece(self._vocab, tok))
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
                    if llama.n_tokens >= n_ctx:
                        break
                    llama.eval([tok])
            text += decoder.decode(b"", final=True) if stats.stop_reason != "stop" else ""
            if len(text) > emitted:
                yield Token(text[emitted:])
            t_end = time.perf_counter()
            if t_first is not None and stats.gen_tokens:
                stats.gen_tps = stats.gen_tokens / max(t_end - t_prompt, 1e-9)
            stats.total_ms = (t_end - t_start) * 1000
            yield Finished(text, stats)
        except Exception as err:  # never take the app down: report, keep what we have
            if self._kv is not None and self._llama is not None:
                self._kv.truncate(0)  # the cache may be half-written; start clean next turn
            stats.stop_reason = "error"
            stats.total_ms = (time.perf_counter() - t_start) * 1000
            yield Finished(text, stats, error=f"{type(err).__name__}: {err}")


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
