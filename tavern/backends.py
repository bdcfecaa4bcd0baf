"""Connection profiles for remote backends, and where their keys live.

Profiles (name, API type, URL, model, prompt format, parameters the server rejected) live in
`<home>/backends.toml`, which may be shared or backed up; keys live apart in `<home>/keys.toml`,
written with 0600 permissions, so a key never lands in a profile listing, a chat or an export.
Both are written with tomlkit through the atomic writer, so any name, URL or key (quotes,
backslashes, control characters in a hand-edited file) makes valid TOML. A password in a URL
(`http://user:pass@host`) is as secret as a key: `tavern.masking.mask_url` hides it wherever a URL is shown.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tavern.engines.remote.profile import APIS, CFG_APIS, DEADLINE_S, IDLE_TIMEOUT_S, Profile
from tavern.errors import ConfigError, NotFoundError
from tavern.masking import mask_url

if TYPE_CHECKING:
    from tavern.cards.model import Card
    from tavern.config import Settings
    from tavern.paths import DataHome
    from tavern.store.chatfile import Chat

__all__ = [
    "APIS", "CFG_APIS", "EMBEDDED", "SCOPES", "BackendStore", "Profile", "backend_choices", "choose_backend",
    "chosen_backend",
]

EMBEDDED = "embedded"
"""The name that picks the embedded llama.cpp engine where a profile name goes (a chat or a
character choosing it overrides a remote backend chosen globally); no profile may take it."""

SCOPES = ("global", "character", "chat")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TIMES = ("idle_timeout_s", "deadline_s")
"""Profile settings written only when not the default (hand-edited in backends.toml)."""
_TIME_DEFAULTS = {"idle_timeout_s": IDLE_TIMEOUT_S, "deadline_s": DEADLINE_S}


class BackendStore:
    def __init__(self, root: Path):
        self.file = Path(root) / "backends.toml"
        self.keys_file = Path(root) / "keys.toml"

    # Any: TOML values as read, handed to Profile untouched (it checks what it uses)
    def _read(self, path: Path) -> dict[str, Any]:
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
            known = {k: v for k, v in raw.items() if k in ("api", "url", "model", "format", "ignored", *_TIMES)}
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
        old_times = self.profiles().get(name.strip())  # hand-set timeouts survive an edit
        profile = Profile(name=name.strip(), api=api, url=url.strip(), model=model.strip(),
                          format=format.strip(), key=key.strip(),
                          **{k: getattr(old_times, k) for k in _TIMES if old_times is not None})
        self.save(profile)
        return profile

    def save(self, profile: Profile) -> None:
        if not profile.name or profile.name.casefold() == EMBEDDED:
            raise ConfigError(f"a backend needs a name other than {EMBEDDED!r}")
        if profile.api not in APIS:
            raise ConfigError(f"unknown API {profile.api!r} (one of: {', '.join(APIS)})")
        if not profile.url.startswith(("http://", "https://")):
            raise ConfigError(f"backend URL must start with http:// or https://: {mask_url(profile.url)!r}")
        for what, value in (("name", profile.name), ("URL", profile.url)):
            if _CONTROL.search(value):
                # A tab or newline in a name breaks `backends list`; in a URL it is a paste error.
                raise ConfigError(f"a backend {what} cannot hold control characters: {mask_url(value)!r}")
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
        import tomlkit

        from tavern.store.atomic import PRIVATE_FILE, atomic_write_text, make_dirs

        doc, keys = tomlkit.document(), tomlkit.document()
        for p in profiles.values():
            table = tomlkit.table()
            for k in ("api", "url", "model", "format"):
                table[k] = getattr(p, k)
            table["ignored"] = list(p.ignored)
            table.update({k: getattr(p, k) for k in _TIMES if getattr(p, k) != _TIME_DEFAULTS[k]})
            doc[p.name] = table
            if p.key:
                keys[p.name] = p.key
        try:
            make_dirs(self.file.parent)
            atomic_write_text(self.file, tomlkit.dumps(doc))
            # keep_mode=False: a key file some older version left 0644 becomes 0600 again.
            atomic_write_text(self.keys_file, tomlkit.dumps(keys), mode=PRIVATE_FILE, keep_mode=False)
        except OSError as err:
            raise ConfigError(f"{self.file.name}: cannot write: {err.strerror or err}") from None


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


class OpenChat(Protocol):
    """The chat a choice is made in (a `ChatSession`)."""

    @property
    def key(self) -> str: ...

    @property
    def card(self) -> Card: ...

    @property
    def chat(self) -> Chat: ...


class CardShelf(Protocol):
    """The characters, as a choice for one needs them (tavern.services.cards)."""

    def find(self, name: str) -> tuple[str, Card]: ...

    def save(self, key: str | None, card: Card) -> str: ...


class BackendApp(Protocol):
    """What choosing a backend needs from the application (tavern.session.Tavern)."""

    @property
    def home(self) -> DataHome: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def cards(self) -> CardShelf: ...

    @property
    def backend_name(self) -> str: ...

    def update_settings(self, changes: Mapping[str, object]) -> bool: ...

    def use_chat_backend(self, card: Card, chat: Chat) -> None: ...


def choose_backend(
    app: BackendApp, name: str, scope: str, session: OpenChat | None = None, character: str = ""
) -> None:
    """Use profile `name` (EMBEDDED: the embedded engine; "": no choice here, inherit) for
    `scope`: "global" ([model] backend in settings.toml), "character" (the card's
    extensions.tavern.backend: `session`'s card, or the card `character` names) or "chat" (the
    metadata of `session`'s chat). Takes effect on the next reply (`Tavern.backend_name`)."""
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
        key, card = (session.key, session.card) if session is not None else app.cards.find(character)
        ext = card.extensions.get("tavern")
        if not isinstance(ext, dict):
            ext = card.extensions["tavern"] = {}
        if name:
            ext["backend"] = name
        else:
            ext.pop("backend", None)
        app.cards.save(key, card)
    else:
        from tavern.store.metadata import ChatMeta

        assert session is not None  # a chat scope without a session was refused above
        ChatMeta(session.chat).set_backend(name)
    if session is not None:
        app.use_chat_backend(session.card, session.chat)


def backend_choices(app: BackendApp, session: OpenChat | None = None) -> dict[str, str]:
    """What each scope chose ("" = nothing) and, under "in use", the backend the next reply
    uses (EMBEDDED for the embedded engine)."""
    out = {"global": app.settings.model.backend, "character": "", "chat": ""}
    if session is not None:
        ext = (session.card.extensions or {}).get("tavern") or {}
        out["character"] = str(ext.get("backend", "")) if isinstance(ext, dict) else ""
        from tavern.store.metadata import ChatMeta

        out["chat"] = ChatMeta(session.chat).backend
    out["in use"] = app.backend_name or EMBEDDED
    return out


def chosen_backend(card: Card, chat: Chat) -> str:
    """The profile a chat uses by its own choice (its metadata), else its character's (the
    card's extensions.tavern.backend); "" = neither chose."""
    from tavern.store.metadata import ChatMeta  # deferred: the CLI's parser imports this module

    chosen = ChatMeta(chat).backend
    if chosen:
        return chosen
    ext = (card.extensions or {}).get("tavern") or {}
    return str(ext.get("backend", "")) if isinstance(ext, dict) else ""
