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

from typing import Any

from tavern.errors import ConfigError, NotFoundError

APIS = ("openai-chat", "openai-text", "textgen", "llamacpp", "kobold", "ollama")
"""`textgen` is text-generation-webui: OpenAI text completions plus its own fields (CFG)."""

EMBEDDED = "embedded"
"""The name that picks the embedded llama.cpp engine where a profile name goes (a chat or a
character choosing it overrides a remote backend chosen globally); no profile may take it."""

CFG_APIS = ("textgen", "kobold")
"""APIs whose servers take `guidance_scale` and `negative_prompt`: text-generation-webui (its
HF loaders) and KoboldCpp (started with --enableguidance). llama-server, Ollama and plain
OpenAI servers have no CFG."""

SCOPES = ("global", "character", "chat")


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

    def add(self, name: str, api: str, url: str, model: str = "", format: str = "",
            key: str = "", key_env: str = "", keep_key: bool = False) -> Profile:
        """A profile from what the user typed (CLI or TUI): the key given, or read from the
        environment variable `key_env`, or (`keep_key`, an edit) the one stored; saved, its
        key to the 0600 key file."""
        if key_env and not key:
            key = os.environ.get(key_env.strip(), "")
            if not key:
                raise ConfigError(f"environment variable {key_env} is empty or unset")
        if keep_key and not key:
            old = self.profiles().get(name.strip())
            key = old.key if old is not None else ""
        profile = Profile(name=name.strip(), api=api, url=url.strip(), model=model.strip(),
                          format=format.strip(), key=key.strip())
        self.save(profile)
        return profile

    def save(self, profile: Profile) -> None:
        if not profile.name or profile.name.casefold() == EMBEDDED:
            raise ConfigError(f"a backend needs a name other than {EMBEDDED!r}")
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


# -- services shared by `tavern backends ...` and the TUI's backends screen --------------------


def test_backend(store: BackendStore, name: str) -> list[str]:
    """Connect to a profile's server and return its models; a RemoteError (one line, never
    the key) when it cannot be reached or refuses."""
    from tavern.engines.remote.engine import RemoteEngine

    engine = RemoteEngine(store.get(name), store=store)
    try:
        return engine.list_models()
    finally:
        engine.unload()


def choose_backend(app: Any, name: str, scope: str, session: Any = None, character: str = "") -> None:
    """Use profile `name` (EMBEDDED: the embedded engine; "": no choice here, inherit) for
    `scope`: "global" ([model] backend in settings.toml), "character" (the card's
    extensions.tavern.backend: `session`'s card, or the card `character` names) or "chat" (the
    metadata of `session`'s chat). Takes effect on the next reply (`Tavern.backend_name`)."""
    from tavern.engines.remote.factory import CHAT_KEY

    if scope not in SCOPES:
        raise ConfigError(f"unknown scope {scope!r} (one of: {', '.join(SCOPES)})")
    if name and name != EMBEDDED:
        BackendStore(app.home.root).get(name)  # a clear error for a name with no profile
    if scope == "global":
        app.update_settings({"model.backend": "" if name == EMBEDDED else name})
        return
    if session is None and not (scope == "character" and character):
        raise ConfigError(f"choosing a backend for the {scope} needs an open chat")
    if scope == "character":
        key, card = (session.key, session.card) if session is not None else app.character(character)
        ext = card.extensions.get("tavern")
        if not isinstance(ext, dict):
            ext = card.extensions["tavern"] = {}
        if name:
            ext["backend"] = name
        else:
            ext.pop("backend", None)
        app.save_character(key, card)
    else:
        session.chat.update_metadata({CHAT_KEY: name})
    if session is not None:
        app.use_chat_backend(session.card, session.chat)


def backend_choices(app: Any, session: Any = None) -> dict[str, str]:
    """What each scope chose ("" = nothing) and, under "in use", the backend the next reply
    uses (EMBEDDED for the embedded engine)."""
    from tavern.engines.remote.factory import CHAT_KEY

    out = {"global": app.settings.model.backend, "character": "", "chat": ""}
    if session is not None:
        ext = (session.card.extensions or {}).get("tavern") or {}
        out["character"] = str(ext.get("backend", "")) if isinstance(ext, dict) else ""
        out["chat"] = str(session.chat.header.chat_metadata.get(CHAT_KEY) or "")
    out["in use"] = app.backend_name or EMBEDDED
    return out
