"""Sampler presets, prompt formats and model files the user can choose from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tavern.config import GenerationSettings
    from tavern.engines.samplers import SamplerSettings


class Presets:
    def __init__(self, presets_dir: Path, models_dir: Path):
        self.presets_dir = presets_dir
        self.models_dir = models_dir

    def sampler_preset(self, name: str) -> SamplerSettings:
        """A sampler preset by name: the data home's presets/NAME.json, else a bundled one."""
        from tavern.engines.presets import load_preset

        user = self.presets_dir / f"{name}.json"
        return load_preset(user if user.is_file() else name)

    def sampler_settings(
        self, g: GenerationSettings, seed: int | None = None, temperature: float | None = None
    ) -> SamplerSettings:
        """The `[generation]` preset with its seed and temperature overrides (the arguments
        beat the settings)."""
        settings = self.sampler_preset(g.preset)
        overrides: dict[str, float | int] = {}
        seed = seed if seed is not None else g.seed
        temperature = temperature if temperature is not None else g.temperature
        if seed is not None:
            overrides["seed"] = seed
        if temperature is not None:
            overrides["temperature"] = temperature
        return settings.with_overrides(**overrides) if overrides else settings

    def names(self) -> list[str]:
        from tavern.engines.presets import list_presets

        return list_presets(self.presets_dir)

    def formats(self) -> list[str]:
        """Bundled prompt formats, then SillyTavern instruct presets the user imported."""
        from tavern.prompt.templates import load_bundled_formats

        names = sorted(load_bundled_formats())
        imported = self.presets_dir / "instruct"
        names += sorted(p.stem for p in imported.glob("*.json")) if imported.is_dir() else []
        return names

    def models(self) -> list[str]:
        """GGUF files in the models folder (names usable as [model] path)."""
        return sorted(p.name for p in self.models_dir.glob("*.gguf"))
