"""Sampler settings and the token sampler the embedded engine draws each token with.

Who calls it: `engines/local.py` builds one `TokenSampler` per reply over its `llama_cpp.Llama`,
runs its own decode loop (`llama.eval` then `sample()` then `accept()`), and records
`TokenSampler.seed` with the message. `engines/presets.py` reads and writes `SamplerSettings`
as SillyTavern preset files. The llama.cpp calls themselves are `lowlevel.sampling`'s
(`SamplerChain`, `init_*`); `numpy` and `lowlevel` are imported inside the functions that need
them, so importing this module stays cheap (the settings model is used by config and UI).

The samplers, with the seed's definitions (probabilities are over the tokens still in play):
- temperature: logits / T; T < 1 sharpens, T > 1 flattens; T <= 0 (or `greedy`) takes the
  single most likely token. `dynatemp_range` > 0 turns on dynamic temperature (llama.cpp's
  `temp_ext`: T in [T - range, T + range] by entropy, as KoboldCpp's dynatemp_range).
- top-k: keep the k most likely tokens (0 = off).
- top-p: keep the most likely tokens whose cumulative probability reaches p (1 = off).
- min-p: drop tokens with probability below min_p x p_max (0 = off).
- top-a: drop tokens with probability below top_a x p_max^2 (0 = off). llama.cpp has no top-a,
  so it is our own step in the chain (`apply_top_a`, a Python `SamplerChain.custom` step).
- typical-p: locally typical sampling (1 = off). top_n_sigma: keep logits within n standard
  deviations of the best one (0 = off).
- repetition penalty: tokens present in the last `repetition_penalty_range` tokens of the
  context (prompt included, see below) get their logit divided by the penalty (multiplied when
  negative); frequency/presence penalties subtract count x freq and presence once, over the
  same range.
- DRY: penalises the token that would extend a sequence already seen in the context
  (multiplier x base^(length - allowed_length)); sequence breakers reset the match.
- XTC: with probability `xtc_probability`, removes every token above `xtc_threshold` except the
  least likely of them (pushes the model off its favourite continuation).
- mirostat 1/2: replaces the truncation samplers, steering surprise towards tau.
- logit bias: added to the logits first; -inf forbids a token.

Ranges: `repetition_penalty_range` and `dry_penalty_last_n` count tokens back from the newest
one, and 0 or -1 means the whole context. That is text-generation-webui's and TabbyAPI's reading,
and the one SillyTavern's bundled presets assume (they ship rep_pen 1.2 with range 0);
llama-server and KoboldCpp read 0 as "off". Set the penalty itself to neutral to turn it off.
Unlike `Llama.create_completion`, whose penalties see only the generated tokens, the range here
covers the prompt: `TokenSampler(history=...)` feeds the prompt's tail into the penalty and DRY
state before the first token, as KoboldCpp and SillyTavern's backends do.

Chain order (llama.cpp's default order, with top-a where KoboldCpp applies it and DRY/XTC where
KoboldCpp fixes them):
    logit bias -> DRY -> [penalties -> top_n_sigma -> top_k -> top_a -> typical_p -> top_p ->
    min_p -> temperature] -> XTC -> dist (a seeded draw)
The bracketed steps follow `sampler_order` when it is set (steps left out of it are not
applied, as in KoboldCpp, whose `sampler_order` SillyTavern presets carry; `presets.py` maps its
ids). Without `sampler_order`, `temperature_last=False` moves temperature to right after the
penalties (text-generation-webui's default). Mirostat: logit bias -> DRY -> penalties ->
temperature -> mirostat. Greedy: logit bias -> DRY -> penalties -> argmax (the truncation
samplers cannot change the most likely token, and typical-p and XTC exist only for variety).
Steps at their neutral value are left out of the chain, so a neutral setting costs nothing.

Seeds: `seed=None` draws a fresh random seed (llama-cpp-python's default seed repeats the same
text in every process); the seed used is `TokenSampler.seed`, to be recorded with the reply.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tavern.errors import EngineError, PresetError

if TYPE_CHECKING:  # pragma: no cover - typing only; the real imports are lazy
    import llama_cpp
    import numpy as np
    import numpy.typing as npt

    from tavern.engines.lowlevel.sampling import Sampler, SamplerChain

# The steps whose order `sampler_order` may change, in the default order.
STEP_NAMES: tuple[str, ...] = (
    "penalties",
    "top_n_sigma",
    "top_k",
    "top_a",
    "typical_p",
    "top_p",
    "min_p",
    "temperature",
)
DEFAULT_ORDER: tuple[str, ...] = STEP_NAMES

DEFAULT_DRY_BREAKERS: tuple[str, ...] = ("\n", ":", '"', "*")

# llama.cpp treats this seed value as "pick one at random"; never hand it over as a real seed.
_LLAMA_RANDOM_SEED = 0xFFFFFFFF
_MAX_SEED = 0xFFFFFFFE


def draw_seed() -> int:
    """A fresh random seed in llama.cpp's range (never its "random" marker 0xFFFFFFFF)."""
    return secrets.randbelow(_MAX_SEED + 1)


class SamplerSettings(BaseModel):
    """Every sampler knob, at neutral defaults (a default instance samples the raw distribution).

    Immutable: derive variants with `with_overrides(**changes)`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(default=1.0, ge=0.0, le=10.0)
    """0 means greedy."""
    dynatemp_range: float = Field(default=0.0, ge=0.0, le=10.0)
    """Dynamic temperature: T varies in [temperature - range, temperature + range]; 0 = off."""
    dynatemp_exponent: float = Field(default=1.0, ge=0.0, le=10.0)
    top_k: int = Field(default=0, ge=0)
    """0 = off."""
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    top_a: float = Field(default=0.0, ge=0.0, le=100.0)
    typical_p: float = Field(default=1.0, ge=0.0, le=1.0)
    top_n_sigma: float = Field(default=0.0, ge=0.0, le=100.0)
    """0 = off."""
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    repetition_penalty_range: int = Field(default=0, ge=-1)
    """Tokens back from the newest that the penalties look at; 0 or -1 = the whole context."""
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    mirostat_mode: int = Field(default=0, ge=0, le=2)
    mirostat_tau: float = Field(default=5.0, ge=0.0, le=100.0)
    mirostat_eta: float = Field(default=0.1, ge=0.0, le=1.0)
    dry_multiplier: float = Field(default=0.0, ge=0.0, le=100.0)
    """0 = DRY off."""
    dry_base: float = Field(default=1.75, ge=1.0, le=10.0)
    dry_allowed_length: int = Field(default=2, ge=0, le=1000)
    dry_penalty_last_n: int = Field(default=0, ge=-1)
    """Tokens back that DRY scans; 0 or -1 = the whole context."""
    dry_sequence_breakers: list[str] = Field(default_factory=lambda: list(DEFAULT_DRY_BREAKERS))
    xtc_threshold: float = Field(default=0.1, ge=0.0, le=1.0)
    """XTC does nothing above 0.5 (at most one token can be above it)."""
    xtc_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    """0 = XTC off."""
    logit_bias: dict[int, float] = Field(default_factory=dict)
    """Token id -> bias added to its logit; float('-inf') forbids the token."""
    text_bias: dict[str, float] = Field(default_factory=dict)
    """SillyTavern-style bias entries resolved with the model's tokenizer: "[1, 2]" token ids,
    "{text}" verbatim text, anything else text with a leading space; every token gets the bias."""
    ban_eos_token: bool = False
    """Forbid the end-of-sequence/end-of-turn tokens (the reply runs to max_tokens)."""
    seed: int | None = Field(default=None, ge=0, le=_MAX_SEED)
    """None (or a negative value, SillyTavern's -1): a fresh random seed for every reply."""
    greedy: bool = False
    temperature_last: bool = True
    """Without sampler_order: False applies temperature before the truncation samplers."""
    sampler_order: list[str] | None = None
    """Custom order of STEP_NAMES; steps left out are not applied. None: the default order."""

    @field_validator("seed", mode="before")
    @classmethod
    def _negative_seed_is_random(cls, value: object) -> object:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            return None
        return value

    @field_validator("sampler_order")
    @classmethod
    def _known_steps(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [name for name in value if name not in STEP_NAMES]
        if unknown:
            raise ValueError(f"unknown step {unknown[0]!r} (known: {', '.join(STEP_NAMES)})")
        if len(set(value)) != len(value):
            raise ValueError("a step is listed twice")
        return value

    @classmethod
    def from_dict(cls, data: dict[str, object], source: str = "sampler settings") -> SamplerSettings:
        """Validate a plain dict (e.g. `model_dump()` output); bad values raise PresetError."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "value"
            raise PresetError(f"{source}: {where}: {first['msg']}") from None

    def with_overrides(self, **changes: object) -> SamplerSettings:
        """A validated copy with some fields changed (unknown names raise PresetError)."""
        return SamplerSettings.from_dict({**self.model_dump(), **changes})

    # -- what the chain will do ----------------------------------------------------------------

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature <= 0.0

    @property
    def penalties_active(self) -> bool:
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0

    @property
    def dry_active(self) -> bool:
        return self.dry_multiplier > 0.0

    @property
    def xtc_active(self) -> bool:
        return self.xtc_probability > 0.0 and self.xtc_threshold <= 0.5

    def order(self) -> list[str]:
        """The reorderable steps in the order they run (before dropping neutral ones)."""
        if self.sampler_order is not None:
            return list(self.sampler_order)
        order = list(DEFAULT_ORDER)
        if not self.temperature_last:
            order.remove("temperature")
            order.insert(order.index("penalties") + 1, "temperature")
        return order


# -- top-a: the one sampler llama.cpp lacks ------------------------------------------------------


def top_a_keep(logits: npt.ArrayLike, top_a: float) -> npt.NDArray[np.bool_]:
    """Which tokens top-a keeps: those with probability >= top_a x p_max^2.

    `logits` is any 1-D array of logits (-inf for tokens already removed); the probabilities
    are their softmax. Works in log space (log p_i >= log top_a + 2 log p_max) so tiny
    probabilities do not underflow. The most likely token is always kept.
    """
    import numpy as np

    values = np.asarray(logits, dtype=np.float64)
    keep = np.ones(values.shape, dtype=bool)
    if top_a <= 0.0 or values.size == 0:
        return keep
    best = int(np.argmax(values))
    top = values[best]
    if not math.isfinite(top):
        return keep
    # log p_i = l_i - top - log S and log p_max = -log S, with S = sum(exp(l - top)).
    log_sum = math.log(float(np.exp(values - top).sum()))
    keep = np.asarray(values - top >= math.log(top_a) - log_sum, dtype=bool)
    keep[best] = True
    return keep


def apply_top_a(logits: npt.ArrayLike, top_a: float) -> npt.NDArray[np.float32]:
    """Top-a on a plain distribution: a float32 copy of `logits` with dropped tokens at -inf."""
    import numpy as np

    out = np.array(logits, dtype=np.float32, copy=True)
    out[~top_a_keep(out, top_a)] = -np.inf
    return out


def last_logits(llama: llama_cpp.Llama) -> npt.NDArray[np.float32]:
    """A copy of the logits of the last token `llama` evaluated (what `sample()` starts from)."""
    return _last_row(llama, llama.n_vocab()).copy()


def _last_row(llama: llama_cpp.Llama, n_vocab: int) -> npt.NDArray[np.float32]:
    """The last evaluated token's logits, as a view of llama.cpp's buffer."""
    from tavern.engines.lowlevel.context import logits_row

    row = logits_row(llama.ctx, -1, n_vocab)
    if row is None:
        raise EngineError("no logits to sample from: evaluate the prompt first")
    return row


def resolve_logit_bias(llama: llama_cpp.Llama, settings: SamplerSettings) -> dict[int, float]:
    """`logit_bias`, `text_bias` and `ban_eos_token` as token ids for this model's vocabulary.

    Explicit ids win over text entries; ids outside the vocabulary are skipped (token ids are
    model-specific, and a preset written for another model must not crash this one).
    """
    from tavern.engines.lowlevel.model import end_tokens, vocab_of

    n_vocab = llama.n_vocab()
    bias: dict[int, float] = {}
    for text, value in settings.text_bias.items():
        for token in _bias_tokens(llama, text):
            bias[token] = value
    bias.update(settings.logit_bias)
    if settings.ban_eos_token:
        for token in end_tokens(vocab_of(llama)):
            if token >= 0:
                bias[token] = -math.inf
    return {t: v for t, v in bias.items() if 0 <= t < n_vocab}


def _bias_tokens(llama: llama_cpp.Llama, text: str) -> list[int]:
    """SillyTavern's reading of a bias entry: [ids], {verbatim text}, or text after a space."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("[") and text.endswith("]"):
        try:
            ids = json.loads(text)
        except json.JSONDecodeError:
            ids = None
        if isinstance(ids, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            return ids
        raise PresetError(f"logit bias entry {text!r} is not a list of token ids")
    if text.startswith("{") and text.endswith("}"):
        raw = text[1:-1]
    else:
        raw = " " + text
    return llama.tokenize(raw.encode("utf-8"), add_bos=False, special=False)


# -- the chain -----------------------------------------------------------------------------------


class TokenSampler:
    """A llama.cpp sampler chain for one reply, fed with the prompt's tail.

    `sample()` reads the logits of the last token evaluated in `llama`'s context and returns the
    chosen token without recording it; `accept(token)` records a token that enters the context
    (sampled or not), which moves the penalty, DRY and mirostat state on. The caller's loop is:
    eval(prompt) -> t = sample() -> accept(t) -> eval([t]) -> ...

    `history` is the context so far (normally the whole prompt); its last
    `repetition_penalty_range` / `dry_penalty_last_n` tokens (the whole context for 0/-1) are
    accepted before the first token, so the penalties cover the prompt.
    Not thread-safe; use one per generation and `close()` it (or use it as a context manager).
    """

    def __init__(
        self,
        llama: llama_cpp.Llama,
        settings: SamplerSettings | None = None,
        history: Sequence[int] = (),
    ) -> None:
        import numpy as np

        from tavern.engines.lowlevel.sampling import SamplerChain, token_data_size

        self.settings = settings or SamplerSettings()
        self.seed: int = self.settings.seed if self.settings.seed is not None else draw_seed()
        self.steps: list[str] = []
        """The chain as built, e.g. ['logit_bias', 'dry', 'penalties', 'top_k', 'dist']."""
        self._llama = llama
        self._n_vocab = llama.n_vocab()
        self._n_ctx = llama.n_ctx()
        self._callback_error: BaseException | None = None
        self._chain: SamplerChain | None = SamplerChain()
        # One reusable candidate buffer: (id, logit, p) records laid out like llama_token_data.
        self._dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        assert self._dtype.itemsize == token_data_size()
        self._buf = np.zeros(self._n_vocab, dtype=self._dtype)
        self._ids = np.arange(self._n_vocab, dtype=np.int32)
        try:
            self._build()
            self._feed_history(history)
        except BaseException:
            self.close()
            raise

    # -- public --------------------------------------------------------------------------------

    def sample(self) -> int:
        """The next token, drawn from the logits of the last evaluated token (not accepted)."""
        return self.sample_from(_last_row(self._live_llama(), self._n_vocab))

    def sample_from(self, logits: npt.ArrayLike) -> int:
        """The next token drawn from given logits (CFG mixes two sequences' logits first)."""
        selected, left = self._run(logits, all_steps=True)
        return int(left["id"][selected])

    def accept(self, token: int) -> None:
        """Record a token that entered the context (penalties, DRY and mirostat see it)."""
        self._live_chain().accept(token)

    def filtered_logits(self, logits: npt.ArrayLike | None = None) -> npt.NDArray[np.float32]:
        """Logits after every step but the final draw: -inf for tokens the chain removed.

        `logits` defaults to the last evaluated token's. For inspection (token probabilities,
        tests): it shows what the draw would choose from. XTC's coin is tossed here too.
        """
        import numpy as np

        source = last_logits(self._live_llama()) if logits is None else np.asarray(logits)
        if source.shape != (self._n_vocab,):
            raise ValueError(f"expected {self._n_vocab} logits, got shape {source.shape}")
        _, left = self._run(source, all_steps=False)
        out = np.full(self._n_vocab, -np.inf, dtype=np.float32)
        out[left["id"].copy()] = left["logit"].copy()
        return out

    def close(self) -> None:
        """Free the chain (and the top-a step inside it). Safe to call twice."""
        chain, self._chain = getattr(self, "_chain", None), None
        if chain is not None:
            chain.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter shutdown llama_cpp may already be gone.
        with contextlib.suppress(Exception):
            self.close()

    # -- building --------------------------------------------------------------------------------

    def _add(self, name: str, sampler: Sampler) -> None:
        """Append a sampler made by a `lowlevel.sampling.init_*` function (NULL: EngineError)."""
        self._live_chain().add(name, sampler)
        self.steps.append(name)

    def _window(self, value: int) -> int:
        return value if value > 0 else self._n_ctx

    def _build(self) -> None:
        from tavern.engines.lowlevel import sampling
        from tavern.engines.lowlevel.model import vocab_of

        s = self.settings
        bias = resolve_logit_bias(self._llama, s)
        if bias:
            self._add("logit_bias", sampling.init_logit_bias(self._n_vocab, bias))
        if s.dry_active:
            breakers = [b.encode("utf-8") for b in s.dry_sequence_breakers if b]
            vocab = vocab_of(self._llama)
            multiplier, base, allowed, window = (
                s.dry_multiplier, s.dry_base, s.dry_allowed_length, self._window(s.dry_penalty_last_n)
            )
            self._add("dry", sampling.init_dry(vocab, multiplier, base, allowed, window, breakers))

        if s.is_greedy:
            self._add_step("penalties")
            self._add("greedy", sampling.init_greedy())
        elif s.mirostat_mode in (1, 2):
            self._add_step("penalties")
            self._add_step("temperature")
            if s.mirostat_mode == 1:
                # m = 100 as in llama.cpp's and KoboldCpp's own mirostat v1.
                tau, eta = s.mirostat_tau, s.mirostat_eta
                sampler = sampling.init_mirostat(self._n_vocab, self.seed, tau, eta, 100)
            else:
                sampler = sampling.init_mirostat_v2(self.seed, s.mirostat_tau, s.mirostat_eta)
            self._add(f"mirostat_v{s.mirostat_mode}", sampler)
        else:
            for name in s.order():
                self._add_step(name)
            if s.xtc_active:
                xtc_seed = _derived_seed(self.seed, 1)
                self._add("xtc", sampling.init_xtc(s.xtc_probability, s.xtc_threshold, 1, xtc_seed))
            self._add("dist", sampling.init_dist(self.seed))

    def _add_step(self, name: str) -> None:
        """Add one reorderable step unless it is at its neutral value."""
        from tavern.engines.lowlevel import sampling

        s = self.settings
        if name == "penalties":
            if s.penalties_active:
                window = self._window(s.repetition_penalty_range)
                self._add(
                    name,
                    sampling.init_penalties(
                        self._n_vocab, window, s.repetition_penalty, s.frequency_penalty, s.presence_penalty
                    ),
                )
        elif name == "top_n_sigma":
            if s.top_n_sigma > 0.0:
                self._add(name, sampling.init_top_n_sigma(s.top_n_sigma))
        elif name == "top_k":
            if s.top_k > 0:
                self._add(name, sampling.init_top_k(s.top_k))
        elif name == "top_a":
            if s.top_a > 0.0:
                self._add_top_a(s.top_a)
        elif name == "typical_p":
            if s.typical_p < 1.0:
                self._add(name, sampling.init_typical(s.typical_p, 1))
        elif name == "top_p":
            if s.top_p < 1.0:
                self._add(name, sampling.init_top_p(s.top_p, 1))
        elif name == "min_p":
            if s.min_p > 0.0:
                self._add(name, sampling.init_min_p(s.min_p, 1))
        elif name == "temperature":
            if s.dynatemp_range > 0.0:
                self._add(name, sampling.init_temp_ext(s.temperature, s.dynatemp_range, s.dynatemp_exponent))
            elif s.temperature != 1.0:
                self._add(name, sampling.init_temp(s.temperature))

    def _add_top_a(self, top_a: float) -> None:
        """Top-a as a custom llama.cpp sampler whose apply() is Python (`SamplerChain.custom`):
        it edits the candidates' logits in place. An error in it is kept and raised by `_run`."""
        import numpy as np

        from tavern.engines.lowlevel.sampling import records

        dtype = self._dtype

        def apply(address: int | None, n: int) -> None:
            if n < 2:
                return
            logits = records(address, n, dtype)["logit"]
            logits[~top_a_keep(logits, top_a)] = -np.inf

        def keep_error(err: BaseException) -> None:
            self._callback_error = err

        chain = self._live_chain()
        self._add("top_a", chain.custom(b"top-a", apply, keep_error))

    def _feed_history(self, history: Sequence[int]) -> None:
        s = self.settings
        needed = 0
        if s.penalties_active:
            needed = max(needed, self._window(s.repetition_penalty_range))
        if s.dry_active:
            needed = max(needed, self._window(s.dry_penalty_last_n))
        if needed and history:
            chain = self._live_chain()
            for token in list(history)[-needed:]:
                chain.accept(token)

    # -- running ---------------------------------------------------------------------------------

    def _run(self, logits: npt.ArrayLike, all_steps: bool) -> tuple[int, npt.NDArray[np.void]]:
        """Apply the chain (or all but its final draw) to a fresh candidate array.

        Returns (the selected record's index, or -1 without the draw; the records left, a view of
        the candidate buffer). The samplers may reorder the records, shrink the size, and (XTC)
        move the data pointer, so read back what they left.
        """
        from tavern.engines.lowlevel.sampling import records

        chain = self._live_chain()
        buf = self._buf
        buf["id"] = self._ids
        buf["logit"] = logits
        buf["p"] = 0.0
        self._callback_error = None
        steps = None if all_steps else len(self.steps) - 1
        selected, address, n = chain.apply(buf.ctypes.data, self._n_vocab, steps)
        if self._callback_error is not None:
            err, self._callback_error = self._callback_error, None
            raise EngineError(f"the top-a sampler failed: {err}") from err
        view = records(address, n, self._dtype)
        if not all_steps:
            return -1, view
        if not 0 <= selected < n:
            raise EngineError("the sampler chain selected no token")
        return selected, view

    def _live_chain(self) -> SamplerChain:
        if not self._chain:
            raise EngineError("the token sampler is closed")
        return self._chain

    def _live_llama(self) -> llama_cpp.Llama:
        self._live_chain()
        return self._llama


def _derived_seed(seed: int, salt: int) -> int:
    """A second seed for another random stream (XTC's coin) that differs from the draw's."""
    return (seed * 2654435761 + salt * 40503) % (_MAX_SEED + 1)
