"""Chat messages and the chat header, as lines of a SillyTavern JSONL chat file.

`chatfile.Chat` turns lines into these objects and back; the session layer builds new
messages with them (`ChatMessage(name=..., is_user=..., mes=...)`, `add_swipe`, `select_swipe`).

Compatibility rules kept here:
- Every key SillyTavern or an extension wrote survives: unknown keys live in `other` and are
  written back in their original order; a known key with a malformed value (swipes that are not
  a list...) is kept verbatim in `other` too, so reading never destroys anything.
- A message that went through `to_json` keeps the key order it had in the file, and new
  messages use SillyTavern's order, so a re-saved line is byte-identical where nothing changed.
- `mes` is always `swipes[swipe_id]` in what we write (SillyTavern relies on it).
- Lines are serialised like JavaScript's `JSON.stringify`: no spaces, non-ASCII as is,
  NaN/Infinity as null.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field

from tavern.errors import ChatStoreError
from tavern.store.dates import format_send_date

# SillyTavern's own key order for a new message (sendMessageAsUser / saveReply).
MESSAGE_KEYS = (
    "name",
    "is_user",
    "is_system",
    "send_date",
    "mes",
    "extra",
    "gen_started",
    "gen_finished",
    "swipe_id",
    "swipes",
    "swipe_info",
)
# Keys left out of a line when their value is None.
_OPTIONAL_KEYS = frozenset({"gen_started", "gen_finished", "swipe_id", "swipes", "swipe_info"})
HEADER_KEYS = ("user_name", "character_name", "create_date", "chat_metadata")


@dataclass
class ChatMessage:
    """One message line. `extra` holds Tavern's per-message data too (model, token counts,
    timings); `other` holds every key this class does not model."""

    name: str
    is_user: bool
    mes: str
    is_system: bool = False
    send_date: str = ""
    swipes: list[str] | None = None
    swipe_id: int | None = None
    # Each swipe's record is a dict when SillyTavern wrote it; anything else is kept as read.
    swipe_info: list[object] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    gen_started: str | None = None
    gen_finished: str | None = None
    other: dict[str, object] = field(default_factory=dict)
    # The key order read from the file; empty for a message made here.
    _keys: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    # send_date was epoch milliseconds (a JSON number) in the file.
    _numeric_date: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # SillyTavern reads `extra.x` without checking: `extra` must never be written as null.
        if self.extra is None:
            self.extra = {}
        if self.other is None:
            self.other = {}

    @classmethod
    def from_json(cls, data: object) -> ChatMessage:
        """Build from one parsed line; tolerant of odd values, never loses a key."""
        if not isinstance(data, dict):
            raise ChatStoreError(f"a chat message must be a JSON object, not {_kind(data)}")
        fields: dict[str, object] = data  # JSON object keys are always strings
        other: dict[str, object] = {}

        def stash(key: str) -> None:
            if key in fields:
                other[key] = fields[key]

        name = fields.get("name")
        if not isinstance(name, str):
            stash("name")
            name = "" if name is None else str(name)
        mes = fields.get("mes")
        if not isinstance(mes, str):
            stash("mes")
            mes = "" if mes is None else _as_text(mes)
        is_user, is_system = fields.get("is_user", False), fields.get("is_system", False)
        if not isinstance(is_user, bool):
            stash("is_user")
        if not isinstance(is_system, bool):
            stash("is_system")
        numeric_date = False
        send_date = fields.get("send_date", "")
        if isinstance(send_date, int | float) and not isinstance(send_date, bool):
            # An int is finite however long (math.isfinite would overflow on 400 digits).
            numeric_date = not isinstance(send_date, float) or math.isfinite(send_date)
            if not numeric_date:
                stash("send_date")
            send_date = str(int(send_date)) if numeric_date else ""
        elif not isinstance(send_date, str):
            stash("send_date")
            send_date = ""
        raw_swipes = fields.get("swipes")
        swipes: list[str] | None = None
        if isinstance(raw_swipes, list) and all(isinstance(s, str) for s in raw_swipes):
            swipes = raw_swipes
        elif raw_swipes is not None:
            stash("swipes")
        raw_id = fields.get("swipe_id")
        if isinstance(raw_id, float) and raw_id.is_integer():
            raw_id = int(raw_id)
        swipe_id: int | None = None
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            swipe_id = raw_id
        elif raw_id is not None:
            stash("swipe_id")
        raw_info = fields.get("swipe_info")
        swipe_info: list[object] | None = None
        if isinstance(raw_info, list):
            swipe_info = raw_info
        elif raw_info is not None:
            stash("swipe_info")
        raw_extra = fields.get("extra", {})
        extra: dict[str, object] = {}
        if isinstance(raw_extra, dict):
            extra = raw_extra
        else:
            stash("extra")
        gen: dict[str, str | None] = {}
        for key in ("gen_started", "gen_finished"):
            value = fields.get(key)
            if value is None or isinstance(value, str):
                gen[key] = value
            else:
                stash(key)
                gen[key] = None
        for key, value in fields.items():
            if key not in MESSAGE_KEYS:
                other[key] = value
        msg = cls(
            name=name,
            is_user=bool(is_user),
            mes=mes,
            is_system=bool(is_system),
            send_date=send_date,
            swipes=swipes,
            swipe_id=swipe_id,
            swipe_info=swipe_info,
            extra=extra,
            gen_started=gen["gen_started"],
            gen_finished=gen["gen_finished"],
            other=other,
        )
        msg._keys = tuple(fields)
        msg._numeric_date = numeric_date
        return msg

    def to_json(self) -> dict[str, object]:
        """The line's JSON object (a deep copy): original key order, unknown keys kept."""
        swipes = self.swipes
        sid = self.swipe_id
        if swipes is not None and sid is not None and 0 <= sid < len(swipes) and swipes[sid] != self.mes:
            swipes = list(swipes)
            swipes[sid] = self.mes
        send_date: str | int = self.send_date
        if self._numeric_date and self.send_date.isdigit():
            send_date = int(self.send_date)
        values: dict[str, object] = {
            "name": self.name,
            "is_user": self.is_user,
            "is_system": self.is_system,
            "send_date": send_date,
            "mes": self.mes,
            "extra": self.extra,
            "gen_started": self.gen_started,
            "gen_finished": self.gen_finished,
            "swipe_id": self.swipe_id,
            "swipes": swipes,
            "swipe_info": self.swipe_info,
        }
        read_keys = set(self._keys)
        is_new = not self._keys

        def wanted(key: str) -> bool:
            value = values[key]
            if key in _OPTIONAL_KEYS:
                return value is not None
            if key in ("is_system", "extra", "send_date"):
                return is_new or key in read_keys or bool(value)
            return True

        out: dict[str, object] = {}
        for key in (*self._keys, *MESSAGE_KEYS, *self.other):
            if key in out:
                continue
            if key in values:
                if key in self.other and _is_default(key, values[key]):
                    out[key] = self.other[key]
                elif wanted(key):
                    out[key] = values[key]
            elif key in self.other:
                out[key] = self.other[key]
        return copy.deepcopy(out)

    def add_swipe(self, text: str, info: dict[str, object] | None = None) -> int:
        """Add an alternative reply and select it; returns its swipe index.

        `info` is SillyTavern's per-swipe record: `send_date`, `gen_started`, `gen_finished`,
        `extra` (model, token counts...). A message without swipes first gets its current
        text as swipe 0.
        """
        if self.swipes is None:
            self.swipes = [self.mes]
            self.swipe_id = 0
            self.swipe_info = [self._current_swipe_info()]
        else:
            self._store_current_text()
        if self.swipe_info is None:
            self.swipe_info = []
        while len(self.swipe_info) < len(self.swipes):
            self.swipe_info.append({})
        record = copy.deepcopy(info) if info else {}
        record.setdefault("send_date", format_send_date())
        self.swipes.append(text)
        self.swipe_info[len(self.swipes) - 1 :] = [record]
        self.select_swipe(len(self.swipes) - 1)
        return len(self.swipes) - 1

    def select_swipe(self, index: int) -> None:
        """Show swipe `index`: `mes`, and `send_date`/`extra`/timings from its swipe_info."""
        if not self.swipes:
            raise ChatStoreError("this message has no swipes to choose from")
        if not 0 <= index < len(self.swipes):
            raise ChatStoreError(f"no swipe {index + 1}: this message has {len(self.swipes)}")
        self._store_current_text()
        self.swipe_id = index
        self.mes = self.swipes[index]
        info = self.swipe_info[index] if self.swipe_info and index < len(self.swipe_info) else None
        if isinstance(info, dict):
            date, extra = info.get("send_date"), info.get("extra")
            if isinstance(date, str) and date:
                self.send_date = date
                self._numeric_date = False
            if isinstance(extra, dict):
                self.extra = copy.deepcopy(extra)
            for key in ("gen_started", "gen_finished"):
                value = info.get(key)
                if key in info and (value is None or isinstance(value, str)):
                    setattr(self, key, value)

    def text(self) -> str:
        """What a reader sees: `extra.display_text` when an extension set one, else `mes`."""
        shown = self.extra.get("display_text")
        return shown if isinstance(shown, str) and shown else self.mes

    def _store_current_text(self) -> None:
        if self.swipes is not None and self.swipe_id is not None and 0 <= self.swipe_id < len(self.swipes):
            self.swipes[self.swipe_id] = self.mes

    def _current_swipe_info(self) -> dict[str, object]:
        info: dict[str, object] = {"send_date": self.send_date}
        if self.gen_started is not None:
            info["gen_started"] = self.gen_started
        if self.gen_finished is not None:
            info["gen_finished"] = self.gen_finished
        info["extra"] = copy.deepcopy(self.extra)
        return info


def _is_default(key: str, value: object) -> bool:
    if key in _OPTIONAL_KEYS:
        return value is None
    if key in ("is_user", "is_system"):
        return value is False
    return not value


@dataclass
class ChatHeader:
    """The first line of a chat file. `chat_metadata` holds per-chat state: the author's note
    (`note_prompt`, `note_interval`, `note_position`, `note_depth`, `note_role`), `variables`
    ({{setvar}}), `world_info` (the chat's lorebook), `main_chat` (a branch's parent), Tavern's
    own `tavern_*` keys (summary, parent, checkpoints) and whatever extensions add."""

    user_name: str
    character_name: str
    create_date: str | int = ""
    chat_metadata: dict[str, object] = field(default_factory=dict)
    other: dict[str, object] = field(default_factory=dict)
    _keys: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> ChatHeader:
        if not isinstance(data, dict):
            raise ChatStoreError(f"a chat header must be a JSON object, not {_kind(data)}")
        other = {k: v for k, v in data.items() if k not in HEADER_KEYS}
        user, char = data.get("user_name", ""), data.get("character_name", "")
        create_date = data.get("create_date", "")
        metadata = data.get("chat_metadata", {})
        for key, value, ok in (
            ("user_name", user, isinstance(user, str)),
            ("character_name", char, isinstance(char, str)),
            ("create_date", create_date, isinstance(create_date, str | int)),
            ("chat_metadata", metadata, isinstance(metadata, dict)),
        ):
            if not ok:
                other[key] = value
        header = cls(
            user_name=user if isinstance(user, str) else str(user),
            character_name=char if isinstance(char, str) else str(char),
            create_date=create_date if isinstance(create_date, str | int) else "",
            chat_metadata=metadata if isinstance(metadata, dict) else {},
            other=other,
        )
        header._keys = tuple(data)
        return header

    def to_json(self) -> dict[str, object]:
        values: dict[str, object] = {
            "user_name": self.user_name,
            "character_name": self.character_name,
            "create_date": self.create_date,
            "chat_metadata": self.chat_metadata,
        }
        out: dict[str, object] = {}
        for key in (*self._keys, *HEADER_KEYS, *self.other):
            if key in out:
                continue
            if key in values and not (key in self.other and not values[key]):
                if values[key] or not self._keys or key in self._keys:
                    out[key] = values[key]
            elif key in self.other:
                out[key] = self.other[key]
        return copy.deepcopy(out)


def looks_like_header(data: object) -> bool:
    """A first line that is a header rather than a message (some converters omit the header)."""
    return (
        isinstance(data, dict)
        and "mes" not in data
        and ("chat_metadata" in data or "user_name" in data or "character_name" in data)
    )


def encode_line(obj: object) -> bytes:
    """One JSONL line (no newline) the way JavaScript's JSON.stringify writes it."""
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        # JSON.stringify writes NaN and Infinity as null; so do we, rather than failing.
        text = json.dumps(_finite(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (half an emoji cut by a tokenizer) cannot be UTF-8; escape it as
        # JSON.stringify does, keeping the line valid for both readers.
        return json.dumps(_finite(obj), ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode(
            "ascii"
        )


def _finite(obj: object) -> object:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _kind(value: object) -> str:
    return {list: "a list", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)
