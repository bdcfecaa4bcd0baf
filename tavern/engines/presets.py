"""Sampler presets: SillyTavern text-completion preset JSON in, SamplerSettings out (and back).

Who calls it: the session and CLI load the preset named in settings (`load_preset`), the TUI
lists them (`list_presets`) and saves edits (`save_preset`), and the importer reports what a
user's SillyTavern preset asks for that Tavern cannot do (`import_st_preset`).

Presets are files in SillyTavern's textgen format (its `default/content/presets/textgen/*.json`
keys), so a file moves between SillyTavern and Tavern unchanged. The bundled ones (Default,
Creative, Deterministic) live in the top-level `presets/` folder; a user's own go in the data
home's `presets/` folder, which `load_preset` searches first.

How SillyTavern keys map (see `samplers.py` for what each sampler does):
- `temp`, `top_p`, `top_k`, `top_a`, `min_p`, `typical_p`, `nsigma`, `rep_pen`,
  `rep_pen_range` (0 = whole context, as SillyTavern's presets assume), `freq_pen`,
  `presence_pen`, `mirostat_*`, `dry_*` (`dry_sequence_breakers` is a JSON string of a list),
  `xtc_*`, `seed` (-1 = random), `ban_eos_token` / `ignore_eos_token`, `do_sample: false`
  (greedy), `temperature_last`, `dynatemp` with `min_temp`/`max_temp`/`dynatemp_exponent`
  (KoboldCpp's reading: temperature = the middle, range = half the span).
- `logit_bias`: SillyTavern's list of {text, value}; "[ids]" entries become token ids, other
  text is kept and tokenized by the model at generation time. `banned_tokens`: one entry a
  line, "[ids]" or text, each banned; "quoted" lines are banned strings, which need a backend
  that backtracks, so they are reported.
- `sampler_order` (KoboldCpp's ids: 0 top-k, 1 top-a, 2 top-p with min-p, 3 tail-free,
  4 typical, 5 temperature, 6 repetition penalty) sets the order; `samplers` and
  `sampler_priority` are llama-server's and text-generation-webui's copies of the same idea
  and are ignored. When `sampler_order` puts temperature somewhere `temperature_last`
  contradicts, the order wins and `temperature_last` is reported.
- Reported when set to a non-neutral value (Tavern cannot honour them): tail-free sampling
  (`tfs`), `epsilon_cutoff`, `eta_cutoff`, `smoothing_factor`, `rep_pen_slope`,
  `rep_pen_decay`, `no_repeat_ngram_size`, `encoder_rep_pen`, beam and contrastive search
  (`num_beams`, `penalty_alpha`, `length_penalty`), `min_length`, `skew`, CFG
  (`guidance_scale`, `negative_prompt`), `grammar_string`, `json_schema`, `add_bos_token: false`,
  `skip_special_tokens: false`, `speculative_ngram`, and any key Tavern does not know.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from tavern.engines.preset_fields import PresetReader, is_empty, is_neutral, kind_of
from tavern.engines.samplers import SamplerSettings
from tavern.errors import NotFoundError, PresetError
from tavern.store.atomic import atomic_write_text, make_dirs

BUNDLED_NAMES = ("Default", "Creative", "Deterministic")

_KOBOLD_DEFAULT = [6, 0, 1, 3, 4, 2, 5]

# SillyTavern keys with no bearing on sampling (UI, connection, other backends' copies).
_IGNORED = {
    "name",
    "preset",
    "type",
    "streaming",
    "n",
    "max_tokens_second",
    "legacy_api",
    "samplers",
    "sampler_priority",
    "spaces_between_special_tokens",
    "early_stopping",
    "rep_pen_size",
    "server_urls",
    "custom_model",
    "bypass_status_check",
    "stopping_strings",
    "openrouter_providers",
    "openrouter_allow_fallbacks",
    "genamt",
    "max_length",
    "max_context_length",
    "truncation_length",
    "smoothing_curve",
    "min_keep",
}
# Keys Tavern cannot honour, with the values that mean "off".
_UNSUPPORTED_NEUTRAL: dict[str, tuple[object, ...]] = {
    "tfs": (1, 0),
    "epsilon_cutoff": (0,),
    "eta_cutoff": (0,),
    "smoothing_factor": (0,),
    "rep_pen_slope": (1,),
    "rep_pen_decay": (0,),
    "no_repeat_ngram_size": (0,),
    "encoder_rep_pen": (1,),
    "penalty_alpha": (0,),
    "num_beams": (1,),
    "length_penalty": (1,),
    "min_length": (0,),
    "skew": (0,),
    "guidance_scale": (1,),
    "negative_prompt": ("",),
    "grammar_string": ("",),
    "json_schema": ({}, None, ""),
    "add_bos_token": (True,),
    "skip_special_tokens": (True,),
    "speculative_ngram": (False,),
}
_HONOURED = {
    "temp",
    "temperature_last",
    "top_p",
    "top_k",
    "top_a",
    "min_p",
    "typical_p",
    "nsigma",
    "top_n_sigma",
    "rep_pen",
    "rep_pen_range",
    "freq_pen",
    "presence_pen",
    "mirostat_mode",
    "mirostat_tau",
    "mirostat_eta",
    "dry_multiplier",
    "dry_base",
    "dry_allowed_length",
    "dry_penalty_last_n",
    "dry_sequence_breakers",
    "xtc_threshold",
    "xtc_probability",
    "seed",
    "logit_bias",
    "banned_tokens",
    "ban_eos_token",
    "ignore_eos_token",
    "do_sample",
    "dynatemp",
    "min_temp",
    "max_temp",
    "dynatemp_exponent",
    "sampler_order",
    "tavern_sampler_order",
}


class PresetNotFoundError(PresetError, NotFoundError):
    """No preset by that name or path (catchable as PresetError or NotFoundError)."""


# -- finding presets -----------------------------------------------------------------------------


def bundled_presets_dir() -> Path:
    """The folder of presets shipped with Tavern (the repository's `presets/`)."""
    from tavern.paths import bundled_dir

    return bundled_dir("presets")


def _search_dirs(user_dir: Path | None) -> list[Path]:
    dirs = [Path(user_dir)] if user_dir is not None else []
    return dirs + [bundled_presets_dir()]


def list_presets(user_dir: Path | None = None) -> list[str]:
    """Preset names (file stems), the user's first, then bundled ones not shadowed by them."""
    names: list[str] = []
    seen: set[str] = set()
    for folder in _search_dirs(user_dir):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json"), key=lambda p: p.stem.casefold()):
            if path.stem.casefold() not in seen:
                seen.add(path.stem.casefold())
                names.append(path.stem)
    return names


def find_preset(path_or_name: str | Path, user_dir: Path | None = None) -> Path:
    """The file for a preset: an existing path, else a name (case-insensitive) in the folders."""
    candidate = Path(path_or_name).expanduser()
    looks_like_path = (
        isinstance(path_or_name, Path)
        or candidate.suffix.lower() == ".json"
        or (os.sep in str(path_or_name) or (os.altsep or os.sep) in str(path_or_name))
    )
    if candidate.is_file():
        return candidate
    if looks_like_path:
        raise PresetNotFoundError(f"preset file {candidate} does not exist")
    wanted = str(path_or_name).strip().casefold()
    for folder in _search_dirs(user_dir):
        if folder.is_dir():
            for path in folder.glob("*.json"):
                if path.stem.casefold() == wanted:
                    return path
    available = ", ".join(list_presets(user_dir)) or "none"
    raise PresetNotFoundError(f"no preset named {path_or_name!r} (available: {available})")


def load_preset(path_or_name: str | Path, user_dir: Path | None = None) -> SamplerSettings:
    """Settings from a preset file or name; keys Tavern cannot honour are dropped.

    Use `read_preset` to also get the list of dropped keys (to show the user).
    """
    return read_preset(path_or_name, user_dir)[0]


def read_preset(path_or_name: str | Path, user_dir: Path | None = None) -> tuple[SamplerSettings, list[str]]:
    """Like `load_preset`, also returning the keys Tavern could not honour."""
    path = find_preset(path_or_name, user_dir)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PresetError(f"preset {path}: cannot read it ({err.strerror or err})") from None
    try:
        obj = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise PresetError(f"preset {path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise PresetError(f"preset {path}: invalid JSON at line {err.lineno}: {err.msg}") from None
    return import_st_preset(obj, str(path))


# -- SillyTavern -> Tavern -----------------------------------------------------------------------


def import_st_preset(obj: object, name: str = "preset") -> tuple[SamplerSettings, list[str]]:
    """Map a SillyTavern textgen preset (parsed JSON) to SamplerSettings.

    Returns the settings and the keys Tavern cannot honour that are set to non-neutral values
    (sorted). Raises PresetError naming `name` and the key when a value has the wrong type or
    is out of range.
    """
    if not isinstance(obj, dict):
        raise PresetError(f"{name}: a preset must be a JSON object, not {kind_of(obj)}")
    reader = PresetReader(obj, name)
    unsupported: set[str] = set()
    fields: dict[str, object] = {}

    for key, value in obj.items():
        if key in _IGNORED or key in _HONOURED:
            continue
        if key in _UNSUPPORTED_NEUTRAL:
            if not is_neutral(value, _UNSUPPORTED_NEUTRAL[key]):
                unsupported.add(key)
        elif not is_empty(value):
            unsupported.add(key)

    # Plain numbers.
    for st_key, field, kind in (
        ("temp", "temperature", float),
        ("top_p", "top_p", float),
        ("top_a", "top_a", float),
        ("min_p", "min_p", float),
        ("typical_p", "typical_p", float),
        ("nsigma", "top_n_sigma", float),
        ("top_n_sigma", "top_n_sigma", float),
        ("rep_pen", "repetition_penalty", float),
        ("rep_pen_range", "repetition_penalty_range", int),
        ("freq_pen", "frequency_penalty", float),
        ("presence_pen", "presence_penalty", float),
        ("mirostat_mode", "mirostat_mode", int),
        ("mirostat_tau", "mirostat_tau", float),
        ("mirostat_eta", "mirostat_eta", float),
        ("dry_multiplier", "dry_multiplier", float),
        ("dry_base", "dry_base", float),
        ("dry_allowed_length", "dry_allowed_length", int),
        ("dry_penalty_last_n", "dry_penalty_last_n", int),
        ("xtc_threshold", "xtc_threshold", float),
        ("xtc_probability", "xtc_probability", float),
        ("seed", "seed", int),
    ):
        value = reader.number(st_key, kind)
        if value is not None:
            fields[field] = value
    top_k = reader.number("top_k", int)
    if top_k is not None:
        fields["top_k"] = max(top_k, 0)  # llama-server reads -1 as "all": the same as off
    for field in ("repetition_penalty_range", "dry_penalty_last_n"):
        window = fields.get(field, 0)  # a whole number (`number(..., int)`) where present
        if isinstance(window, int) and window < -1:
            fields[field] = -1

    if reader.flag("dynatemp"):
        low = reader.number("min_temp", float)
        high = reader.number("max_temp", float)
        low = 0.0 if low is None else low
        high = 2.0 if high is None else high
        if high < low:
            raise PresetError(f"{name}: max_temp {high} is below min_temp {low}")
        # Rounded so that a saved preset reads back exactly (0.6 and 1.1 are not exact floats).
        fields["temperature"] = round((low + high) / 2, 6)
        fields["dynatemp_range"] = round((high - low) / 2, 6)
        exponent = reader.number("dynatemp_exponent", float)
        if exponent is not None:
            fields["dynatemp_exponent"] = exponent

    if reader.flag("ban_eos_token") or reader.flag("ignore_eos_token"):
        fields["ban_eos_token"] = True
    if reader.flag("do_sample") is False:
        fields["greedy"] = True

    breakers = reader.breakers("dry_sequence_breakers")
    if breakers is not None:
        fields["dry_sequence_breakers"] = breakers

    logit_bias, text_bias = reader.logit_bias("logit_bias")
    banned_ids, banned_text, banned_strings = reader.banned_tokens("banned_tokens")
    for token in banned_ids:
        logit_bias[token] = -math.inf
    for text in banned_text:
        text_bias[text] = -math.inf
    if banned_strings:
        unsupported.add("banned_tokens")
    if logit_bias:
        fields["logit_bias"] = logit_bias
    if text_bias:
        fields["text_bias"] = text_bias

    temperature_last = reader.flag("temperature_last")
    if temperature_last is not None:
        fields["temperature_last"] = temperature_last
    order = reader.order()
    if order is not None:
        fields["sampler_order"] = order
        from_kobold = "tavern_sampler_order" not in obj
        if from_kobold and temperature_last is not None and "temperature" in order:
            temp_is_last = order.index("temperature") >= max(
                (order.index(s) for s in order if s not in ("temperature", "top_n_sigma")),
                default=-1,
            )
            if temp_is_last != temperature_last:
                unsupported.add("temperature_last")

    settings = SamplerSettings.from_dict(fields, source=name)
    return settings, sorted(unsupported)


# -- Tavern -> SillyTavern -----------------------------------------------------------------------


def to_st_preset(settings: SamplerSettings) -> dict[str, object]:
    """The settings as a SillyTavern textgen preset (every key SillyTavern writes).

    -inf biases are written as -100 (JSON has no infinity; SillyTavern's strongest ban), and
    the order as KoboldCpp ids plus `tavern_sampler_order` (the exact list, or null for the
    default order; SillyTavern ignores the key).
    """
    s = settings
    temp, low, high = s.temperature, 0.0, 2.0
    if s.dynatemp_range > 0:
        low, high = max(s.temperature - s.dynatemp_range, 0.0), s.temperature + s.dynatemp_range
    bias_entries = [
        {"id": f"tavern-{i}", "text": f"[{token}]", "value": _finite_bias(value)}
        for i, (token, value) in enumerate(sorted(s.logit_bias.items()))
    ] + [
        {"id": f"tavern-t{i}", "text": text, "value": _finite_bias(value)}
        for i, (text, value) in enumerate(s.text_bias.items())
    ]
    order = s.order()
    return {
        "temp": temp,
        "temperature_last": s.temperature_last,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "top_a": s.top_a,
        "tfs": 1,
        "epsilon_cutoff": 0,
        "eta_cutoff": 0,
        "typical_p": s.typical_p,
        "min_p": s.min_p,
        "nsigma": s.top_n_sigma,
        "rep_pen": s.repetition_penalty,
        "rep_pen_range": s.repetition_penalty_range,
        "rep_pen_decay": 0,
        "rep_pen_slope": 1,
        "no_repeat_ngram_size": 0,
        "penalty_alpha": 0,
        "num_beams": 1,
        "length_penalty": 1,
        "min_length": 0,
        "encoder_rep_pen": 1,
        "freq_pen": s.frequency_penalty,
        "presence_pen": s.presence_penalty,
        "skew": 0,
        "do_sample": not s.greedy,
        "early_stopping": False,
        "dynatemp": s.dynatemp_range > 0,
        "min_temp": low,
        "max_temp": high,
        "dynatemp_exponent": s.dynatemp_exponent,
        "smoothing_factor": 0,
        "smoothing_curve": 1,
        "dry_allowed_length": s.dry_allowed_length,
        "dry_multiplier": s.dry_multiplier,
        "dry_base": s.dry_base,
        "dry_sequence_breakers": json.dumps(s.dry_sequence_breakers),
        "dry_penalty_last_n": s.dry_penalty_last_n,
        "add_bos_token": True,
        "ban_eos_token": s.ban_eos_token,
        "skip_special_tokens": True,
        "mirostat_mode": s.mirostat_mode,
        "mirostat_tau": s.mirostat_tau,
        "mirostat_eta": s.mirostat_eta,
        "guidance_scale": 1,
        "negative_prompt": "",
        "grammar_string": "",
        "json_schema": {},
        "banned_tokens": "",
        "ignore_eos_token": False,
        "spaces_between_special_tokens": True,
        "speculative_ngram": False,
        "sampler_priority": list(_OOBA_ORDER),
        "samplers": [step for step in order if step in _LLAMACPP_STEPS],
        "sampler_order": _to_kobold_order(order),
        "tavern_sampler_order": s.sampler_order,
        "logit_bias": bias_entries,
        "xtc_threshold": s.xtc_threshold,
        "xtc_probability": s.xtc_probability,
        "seed": -1 if s.seed is None else s.seed,
    }


def _finite_bias(value: float) -> float:
    if math.isinf(value):
        return -100.0 if value < 0 else 100.0
    return value


def _to_kobold_order(order: list[str]) -> list[int]:
    """KoboldCpp ids in the order our steps first appear (all seven, as SillyTavern expects)."""
    ids: list[int] = []
    for step in order:
        kid = _STEP_TO_KOBOLD.get(step)
        if kid is not None and kid not in ids:
            ids.append(kid)
    for position, kid in enumerate(_KOBOLD_DEFAULT):  # tail-free and unused ids keep their slot
        if kid not in ids:
            ids.insert(min(position, len(ids)), kid)
    return ids


# What SillyTavern sends text-generation-webui and llama-server as their orders: written so a
# saved preset carries every key SillyTavern expects (Tavern itself reads `sampler_order`).
_OOBA_ORDER = (
    "temperature",
    "dynamic_temperature",
    "quadratic_sampling",
    "top_k",
    "top_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "tfs",
    "top_a",
    "min_p",
    "mirostat",
)
_LLAMACPP_STEPS = ("top_k", "typical_p", "top_p", "min_p", "temperature")

# top_n_sigma has no id of its own (KoboldCpp runs it inside its temperature step).
_STEP_TO_KOBOLD = {
    "top_k": 0,
    "top_a": 1,
    "top_p": 2,
    "min_p": 2,
    "typical_p": 4,
    "temperature": 5,
    "penalties": 6,
}


def save_preset(settings: SamplerSettings, path: str | Path) -> Path:
    """Write settings as a SillyTavern preset through the atomic writer (temp, fsync, rename)."""
    target = Path(path).expanduser()
    if target.suffix.lower() != ".json":
        target = target.with_name(target.name + ".json")
    text = json.dumps(to_st_preset(settings), indent=4, ensure_ascii=False) + "\n"
    try:
        make_dirs(target.parent)
        atomic_write_text(target, text)
    except OSError as err:
        raise PresetError(f"preset {target}: cannot write it ({err.strerror or err})") from None
    return target
