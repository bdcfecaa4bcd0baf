"""Connection profiles for remote backends, and where their keys live.

Profiles (name, API type, URL, model, prompt format, parameters the server rejected) live in
`<home>/backends.toml`, which may be shared or backed up; keys live apart in `<home>/keys.toml`,
written with 0600 permissions, so a key never lands in a profile listing, a chat or an export.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tavern.errors import ConfigError, NotFoundError

APIS = ("openai-chat", "openai-text", "llamacpp", "kobold", "ollama")


@dataclass
class Profile:
    name: str
    api: str
    url: str
    model: str = ""
    format: str = ""
    """Prompt format id for text APIs; "" = the server's template, else the model name."""
    ignored: list[str] = field(default_factory=list)
    """Parameters this server rejected once; no longer sent (remembered per profile)."""
    key: str = field(default="", repr=False)
    """Filled from keys.toml when loaded; never written to backends.toml."""


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class BackendStore:
    def __init__(self, root: Path):
        self.file = Path(root) / "backends.toml"
        self.keys_file = Path(root) / "keys.toml"

    def _read(self, path: Path) -> dict:
        if not path.exists():
            return {}
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, OSError) as err:
            raise ConfigError(f"{path.name}: {err}") from None

    def profiles(self) -> dict[str, Profile]:
        keys = self._read(self.keys_file)
        out = {}
        for name, raw in self._read(self.file).items():
            known = {k: v for k, v in raw.items() if k in ("api", "url", "model", "format", "ignored")}
            out[name] = Profile(name=name, key=str(keys.get(name, "")), **known)
        return out

    def get(self, name: str) -> Profile:
        found = self.profiles().get(name)
        if found is None:
            raise NotFoundError(f"no backend named {name!r} (see `tavern backends list`)")
        return found

    def save(self, profile: Profile) -> None:
        if profile.api not in APIS:
            raise ConfigError(f"unknown API {profile.api!r} (one of: {', '.join(APIS)})")
        if not profile.url.startswith(("http://", "https://")):
            raise ConfigError(f"backend URL must start with http:// or https://: {profile.url!r}")
        all_ = self.profiles()
        all_[profile.name] = profile
        self._write(all_)

    def remove(self, name: str) -> None:
        all_ = self.profiles()
        if all_.pop(name, None) is None:
            raise NotFoundError(f"no backend named {name!r}")
        self._write(all_)

    def remember_ignored(self, name: str, param: str) -> None:
        all_ = self.profiles()
        if name in all_ and param not in all_[name].ignored:
            all_[name].ignored.append(param)
            self._write(all_)

    def _write(self, profiles: dict[str, Profile]) -> None:
        lines, key_lines = [], []
        for p in profiles.values():
            d = asdict(p)
            lines.append(f"[{_toml_str(p.name)}]")
            for k in ("api", "url", "model", "format"):
                lines.append(f"{k} = {_toml_str(d[k])}")
            lines.append("ignored = [" + ", ".join(_toml_str(x) for x in p.ignored) + "]\n")
            if p.key:
                key_lines.append(f"{_toml_str(p.name)} = {_toml_str(p.key)}")
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines), encoding="utf-8")
        os.replace(tmp, self.file)
        # The key file is created 0600 before anything is written into it.
        ktmp = self.keys_file.with_suffix(".tmp")
        fd = os.open(ktmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(key_lines) + ("\n" if key_lines else ""))
        os.chmod(ktmp, 0o600)
        os.replace(ktmp, self.keys_file)
