"""SamplerSettings mapped to each API's own field names; what an API cannot take is reported.

A sampler at its neutral value is not sent at all; a non-neutral sampler the API has no field
for goes in the `unsupported` list the engine reports to the user (never silently dropped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tavern.engines.samplers import SamplerSettings

# Our field -> each API's field name (None: the API has no such sampler).
_NAMES: dict[str, dict[str, str | None]] = {
    #                  openai       llamacpp (+ llama-server/TabbyAPI/vLLM extras)  kobold     ollama
    "temperature": {"openai": "temperature", "llamacpp": "temperature", "kobold": "temperature", "ollama": "temperature"},
    "top_p": {"openai": "top_p", "llamacpp": "top_p", "kobold": "top_p", "ollama": "top_p"},
    "top_k": {"openai": "top_k", "llamacpp": "top_k", "kobold": "top_k", "ollama": "top_k"},
    "min_p": {"openai": "min_p", "llamacpp": "min_p", "kobold": "min_p", "ollama": "min_p"},
    "top_a": {"openai": "top_a", "llamacpp": None, "kobold": "top_a", "ollama": None},
    "typical_p": {"openai": "typical_p", "llamacpp": "typical_p", "kobold": "typical", "ollama": "typical_p"},
    "top_n_sigma": {"openai": "top_n_sigma", "llamacpp": "top_n_sigma", "kobold": "nsigma", "ollama": None},
    "repetition_penalty": {"openai": "repetition_penalty", "llamacpp": "repeat_penalty", "kobold": "rep_pen", "ollama": "repeat_penalty"},
    "repetition_penalty_range": {"openai": None, "llamacpp": "repeat_last_n", "kobold": "rep_pen_range", "ollama": "repeat_last_n"},
    "frequency_penalty": {"openai": "frequency_penalty", "llamacpp": "frequency_penalty", "kobold": None, "ollama": "frequency_penalty"},
    "presence_penalty": {"openai": "presence_penalty", "llamacpp": "presence_penalty", "kobold": "presence_penalty", "ollama": "presence_penalty"},
    "mirostat_mode": {"openai": "mirostat_mode", "llamacpp": "mirostat", "kobold": "mirostat", "ollama": "mirostat"},
    "mirostat_tau": {"openai": "mirostat_tau", "llamacpp": "mirostat_tau", "kobold": "mirostat_tau", "ollama": "mirostat_tau"},
    "mirostat_eta": {"openai": "mirostat_eta", "llamacpp": "mirostat_eta", "kobold": "mirostat_eta", "ollama": "mirostat_eta"},
    "dry_multiplier": {"openai": "dry_multiplier", "llamacpp": "dry_multiplier", "kobold": "dry_multiplier", "ollama": None},
    "dry_base": {"openai": "dry_base", "llamacpp": "dry_base", "kobold": "dry_base", "ollama": None},
    "dry_allowed_length": {"openai": "dry_allowed_length", "llamacpp": "dry_allowed_length", "kobold": "dry_allowed_length", "ollama": None},
    "dry_penalty_last_n": {"openai": "dry_penalty_last_n", "llamacpp": "dry_penalty_last_n", "kobold": "dry_penalty_range", "ollama": None},
    "dry_sequence_breakers": {"openai": "dry_sequence_breakers", "llamacpp": "dry_sequence_breakers", "kobold": "dry_sequence_breakers", "ollama": None},
    "xtc_threshold": {"openai": "xtc_threshold", "llamacpp": "xtc_threshold", "kobold": "xtc_threshold", "ollama": None},
    "xtc_probability": {"openai": "xtc_probability", "llamacpp": "xtc_probability", "kobold": "xtc_probability", "ollama": None},
    "dynatemp_range": {"openai": "dynatemp_range", "llamacpp": "dynatemp_range", "kobold": "dynatemp_range", "ollama": None},
    "dynatemp_exponent": {"openai": "dynatemp_exponent", "llamacpp": "dynatemp_exponent", "kobold": "dynatemp_exponent", "ollama": None},
    "seed": {"openai": "seed", "llamacpp": "seed", "kobold": "sampler_seed", "ollama": "seed"},
}

# Neutral values: a sampler at these is left out of the request.
_NEUTRAL: dict[str, object] = {
    "top_p": 1.0, "top_k": 0, "min_p": 0.0, "top_a": 0.0, "typical_p": 1.0, "top_n_sigma": 0.0,
    "repetition_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0, "mirostat_mode": 0,
    "dry_multiplier": 0.0, "xtc_probability": 0.0, "dynatemp_range": 0.0, "seed": None,
}
# Only sent when their switch is on.
_DEPENDS = {
    "repetition_penalty_range": "repetition_penalty", "mirostat_tau": "mirostat_mode",
    "mirostat_eta": "mirostat_mode", "dry_base": "dry_multiplier", "dry_allowed_length": "dry_multiplier",
    "dry_penalty_last_n": "dry_multiplier", "dry_sequence_breakers": "dry_multiplier",
    "xtc_threshold": "xtc_probability", "dynatemp_exponent": "dynatemp_range",
}


def family(api: str) -> str:
    return "openai" if api.startswith("openai") or api == "textgen" else api


def map_sampler(sampler: SamplerSettings | None, api: str) -> tuple[dict[str, object], list[str]]:
    """(fields for the request, names of our active samplers this API cannot take)."""
    if sampler is None:
        return {}, []
    fam = family(api)
    values = sampler.model_dump()
    if values.get("greedy"):
        values["temperature"] = 0.0
    fields: dict[str, object] = {}
    unsupported: list[str] = []

    def active(name: str) -> bool:
        if name in _DEPENDS:
            return active(_DEPENDS[name])
        return name not in _NEUTRAL or values[name] != _NEUTRAL[name]

    for ours, names in _NAMES.items():
        if not active(ours):
            continue
        theirs = names.get(fam)
        if theirs is None:
            if ours not in _DEPENDS:
                unsupported.append(ours)
            continue
        fields[theirs] = values[ours]
    for extra in ("logit_bias", "text_bias", "sampler_order"):
        if values.get(extra):
            if extra == "logit_bias" and fam in ("openai", "llamacpp"):
                fields["logit_bias"] = {str(k): v for k, v in values[extra].items()}
            elif extra == "sampler_order" and fam == "kobold":
                continue  # KoboldCpp ids differ; presets.py owns that mapping
            else:
                unsupported.append(extra)
    if values.get("ban_eos_token"):
        if fam == "llamacpp":
            fields["ignore_eos"] = True
        elif fam == "kobold":
            fields["use_default_badwordsids"] = True
        else:
            unsupported.append("ban_eos_token")
    return fields, unsupported
