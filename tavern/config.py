"""Settings: one pydantic model read from `settings.toml` in the data home.

`load_settings(path)` is called once at start-up by the CLI and the TUI (never at import). A
typo is an error that names the file and the key (`extra="forbid"`); a missing file means the
defaults below, which are every default Tavern has. The CLI's `--ctx`, `--max-tokens`, `--seed`
and `--temperature` are applied on top with `Settings.with_overrides`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tavern.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Section):
    path: str = ""
    """A GGUF path or a name in the models folder; empty means the bundled SmolLM2."""
    n_ctx: int = Field(4096, ge=256, le=1_048_576)
    """Context size in tokens; the prompt plus the reply must fit in it."""
    n_gpu_layers: int = -1
    """-1: as many as fit in free VRAM (all when they fit); 0: CPU only."""
    n_threads: int = 0
    """0: every core (llama-cpp-python's default of half the cores costs ~40% here)."""
    n_batch: int = 512
    flash_attn: bool = False
    type_k: str = "f16"
    type_v: str = "f16"
    rope_freq_base: float = 0.0
    """0: from the model file."""
    rope_alpha: float = 0.0
    """NTK alpha; when set, rope_freq_base = 10000 x alpha^(64/63) (the seed's formula)."""
    format: str = ""
    """Prompt format id (see prompt_templates/); empty: chosen from the model file."""
    cache_reuse: int = 32
    """Minimum chunk (tokens) the engine shifts in its KV cache instead of re-evaluating; 0 = off."""
    insert_reuse: bool = True
    """Keep cached text after an insertion too (a lore entry that fires costs only its tokens);
    False: llama-server's cache-reuse walk, where an insertion re-evaluates what follows."""
    side_ctx: int = Field(-1, ge=-1)
    """KV cells beside the chat's for side sequences (CFG negative, background summary); -1 = n_ctx,
    0 = none (they borrow the chat's sequence, whose state waits in host memory)."""
    cache_ram_mib: int = Field(1024, ge=0)
    """Host memory for saved KV states (another chat, an earlier branch); 0 = off."""
    cache_disk_mib: int = Field(2048, ge=0)
    """Disk for saved KV states, in the user cache folder: a chat reopened after a restart starts
    from its cells instead of evaluating its whole prompt again; least recently used out; 0 = off."""
    bank_cells: int = Field(-1, ge=-1)
    """Side cells that keep text which just left the prompt (a lore entry that lapsed, a note
    that moved), so that it costs nothing when it comes back; -1 = all the side cells (given
    back whenever CFG or a background job needs them), 0 = off."""
    backend: str = ""
    """A connection profile (`tavern backends add`); empty: the embedded engine."""


class GenerationSettings(_Section):
    max_tokens: int = Field(250, ge=1, le=32768)
    """Reply length: also the reply reserve taken from the context budget."""
    preset: str = "Default"
    """Sampler preset: a bundled name or a file in the presets folder."""
    seed: int | None = None
    """None: a new random seed each reply (recorded with the message)."""
    temperature: float | None = None
    """Overrides the preset's temperature when set."""


class ChatSettings(_Section):
    user_name: str = "User"
    persona: str = ""
    """The user's persona description ({{persona}})."""


class PromptSettings(_Section):
    system_prompt: str = "Write {{char}}'s next reply in a fictional chat between {{char}} and {{user}}."
    """SillyTavern's default ("Neutral - Chat")."""
    layout: Literal["cache_friendly", "sillytavern"] = "cache_friendly"
    """cache_friendly keeps what changes per turn late in the prompt; sillytavern matches its order."""
    context_preset: str = ""
    """sillytavern layout: an imported SillyTavern context preset (story string, example
    separator, chat start); "": SillyTavern's Default."""
    names_in_history: bool = True
    """Prefix each message with 'Name: ' as SillyTavern's instruct mode does by default."""
    trim_step: float = Field(0.0, ge=0.0, le=0.9)
    """When history overflows, drop this fraction of the budget at once (0: one message at a time)."""


class LoreSettingsModel(_Section):
    """[lore]: the one definition of the World Info settings. The scan takes this object as it
    is (`tavern.lore.LoreSettings` is this class), so a key added here reaches it with nothing
    copied by hand. Defaults are a new SillyTavern install's."""

    scan_depth: int = Field(2, ge=0)
    budget_percent: float = Field(25, ge=0, le=100)
    budget_cap: int = Field(0, ge=0)
    recursive: bool = True
    case_sensitive: bool = False
    match_whole_words: bool = True
    include_names: bool = True
    insertion_strategy: int = Field(1, ge=0, le=2)
    """0 = character and global lore sorted together, 1 = character first, 2 = global first."""
    min_activations: int = Field(0, ge=0)
    min_activations_depth_max: int = Field(0, ge=0)
    max_recursion_steps: int = Field(0, ge=0)
    group_scoring: bool = False
    regex_timeout_ms: float = Field(25.0, gt=0)
    """Tavern's time limit for one regex key on one text."""
    regex_total_ms: float = Field(250.0, gt=0)
    """...and for all regex work of one scan."""
    global_books: list[str] = []
    cache_aware: bool = False
    """Tavern's own mode: an entry that stops firing lingers in the prompt (KV cache kept)."""
    linger: int = Field(6, ge=1, le=1000)
    """cache_aware: messages an entry stays after it last fired (refreshed each time it fires)."""

    @property
    def cache_aware_linger(self) -> int:
        """What the scan's timed effects use: 0 (SillyTavern's behaviour) unless cache_aware."""
        return self.linger if self.cache_aware else 0


class LoopSettings(_Section):
    """Loop detection (tavern/loops.py) and what the session does about a loop."""

    enabled: bool = True
    min_repeats: int = Field(3, ge=2, le=100)
    """A repeated phrase is a loop from this copy in a row on."""
    min_loop_tokens: int = Field(12, ge=2, le=1000)
    """...once its repeated copies hold this many word/punctuation tokens."""
    phrase_words: int = Field(5, ge=2, le=50)
    """A phrase of this many words written min_repeats times in a reply, even apart, is a loop."""
    char_run: int = Field(24, ge=4, le=10000)
    """One character (or a short syllable) repeated past this many characters is spam."""
    opening_words: int = Field(5, ge=2, le=50)
    """Replies that start with the same this-many words share an opening."""
    overlap: float = Field(0.3, gt=0.0, le=1.0)
    """Share of a reply's 8-word sequences already in one of the last replies that counts as repeating."""
    history: int = Field(3, ge=1, le=20)
    """How many earlier character replies a new one is compared with."""
    regenerate: bool = True
    """Regenerate a reply that repeats the last ones, once, with DRY on and its opening banned."""
    dry_multiplier: float = Field(0.8, gt=0.0, le=100.0)
    """DRY multiplier for that retry (twice the preset's when the preset's is higher)."""


class MemorySettings(_Section):
    enabled: bool = True
    """Long-term memory: the rolling summary and vector recall (tavern/memory)."""
    summary: bool = True
    """Summarize messages as they leave the prompt window (per chat: `tavern memory summary --off`)."""
    summary_every: int = Field(0, ge=0)
    """Also summarize every N new messages, even those still in the window; 0 = only when they leave."""
    summary_threshold: int = Field(4, ge=1)
    """Summarize once at least this many messages have left the window unsummarized."""
    summary_max_tokens: int = Field(200, ge=16, le=4096)
    summary_prompt: str = (
        "Update the summary of this roleplay between {{char}} and {{user}} with the new messages. "
        "Keep names, places, facts and promises; drop small talk. Write at most 150 words, "
        "in the past tense, as plain prose."
    )
    recall: bool = True
    """Recall old messages outside the prompt window by similarity."""
    top_k: int = Field(4, ge=0, le=100)
    score_threshold: float = Field(0.35, ge=-1.0, le=1.0)
    """Cosine similarity (MiniLM) a chunk needs to be recalled."""
    token_cap: int = Field(400, ge=0)
    """At most this many prompt tokens of recalled text per turn."""
    query_messages: int = Field(2, ge=1, le=20)
    """How many of the latest messages make the recall query."""
    lore_threshold: float = Field(0.45, ge=-1.0, le=1.0)
    """Similarity at which a lorebook entry marked `vectorized` activates without its keys."""
    chroma_url: str = ""
    """A Chroma server (http://host:port); "" = a local database in the data home's memory/."""
    threads: int = Field(1, ge=1, le=64)
    """torch threads for embeddings (bounded: llama.cpp needs the cores)."""


class UiSettings(_Section):
    theme: str = ""
    """A Textual theme name (textual-dark, textual-light, nord, gruvbox...); "" = textual-dark."""
    keys: dict[str, str] = {}
    """Binding id -> keys, e.g. {"chat.regenerate" = "ctrl+g"}; F1 in the app lists the ids."""


class CfgSettings(_Section):
    """Classifier-free guidance, the global default (a character's `tavern_cfg` card extension
    and SillyTavern's chat metadata keys `cfg_guidance_scale` / `cfg_negative_prompt` win)."""

    guidance_scale: float = Field(1.0, ge=0.0, le=10.0)
    """1 = off; 1.5 is a usual start."""
    negative_prompt: str = ""
    insertion_depth: int = Field(1, ge=0)
    """Where the negative text goes, in messages from the end (SillyTavern's default 1)."""


class ServeSettings(_Section):
    password: str = ""
    """`tavern serve`'s password instead of a random token per run; needed for a bind other
    than loopback. $TAVERN_SERVE_PASSWORD wins."""


class Settings(_Section):
    model: ModelSettings = ModelSettings()
    generation: GenerationSettings = GenerationSettings()
    chat: ChatSettings = ChatSettings()
    prompt: PromptSettings = PromptSettings()
    lore: LoreSettingsModel = LoreSettingsModel()
    memory: MemorySettings = MemorySettings()
    loops: LoopSettings = LoopSettings()
    ui: UiSettings = UiSettings()
    cfg: CfgSettings = CfgSettings()
    serve: ServeSettings = ServeSettings()

    def with_overrides(self, **overrides: object) -> Settings:
        """Dotted keys (`model.n_ctx=2048`) applied on a copy; None values are ignored."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            data[section][key] = value
        try:
            return Settings.model_validate(data)
        except ValidationError as err:
            raise ConfigError(_first_error("command line", err)) from None


def _first_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{source}: {where}: {first['msg']}"


def load_settings(path: Path) -> Settings:
    """Read settings.toml; a missing file gives the defaults."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Settings()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_first_error(str(path), err)) from None


DEFAULT_SETTINGS_TOML = """\
# Tavern settings. Every key is optional; these are the defaults.
# Docs: README.md, "Settings".

[model]
path = ""            # GGUF path or name in the models folder; "" = bundled SmolLM2-135M
n_ctx = 4096
n_gpu_layers = -1    # -1 = as many as fit; 0 = CPU only

[generation]
max_tokens = 250
preset = "Default"   # Default, Creative, Deterministic, or a file in presets/

[chat]
user_name = "User"
persona = ""
"""
