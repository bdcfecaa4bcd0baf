"""One import for the CLI and the app: cards, lorebooks, chats and presets, by content.

`import_paths(home, paths)` takes files and folders (every importable file directly in a folder),
sniffs each file's kind (`tavern.cards.detect_kind`), hands it to the domain importer for that
kind and returns an `ImportReport`: one `ImportItem` per file saying what it became, what was
odd about it (a torn chat line) or, in one line, why it was refused. A bad file never stops the
others and never leaves anything half written.

Nothing that exists is ever replaced: a lorebook or preset whose name is taken is saved under
the next free numbered name ("saltmere_1", as the card library numbers a duplicate character),
and the item says so. Cards are imported before the rest, so that a chat in the same batch
finds the character its header names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tavern.errors import NotFoundError, PresetError, TavernError
from tavern.paths import DataHome

if TYPE_CHECKING:
    from tavern.cards.library import CardLibrary
    from tavern.store import ChatStore

Progress = Callable[[int, int], None]
"""`progress(done, total)`, called after each file (the app's progress bar)."""

IMPORT_SUFFIXES = (".png", ".json", ".charx", ".jsonl")
"""The files of a folder that are looked at; a README or a picture's sidecar is not an error."""

_MAX_NUMBERED = 1000


@dataclass(frozen=True)
class ImportItem:
    """What became of one file. `error` is set (one line naming the file) when it was refused."""

    source: Path
    kind: str
    """"card", "lorebook", "chat", "preset:sampler", "preset:instruct", "preset:context",
    "preset:chat" or "unknown" (see `detect_kind`)."""
    name: str = ""
    """What it became: the character key, lorebook name, chat name or preset name."""
    path: Path | None = None
    """The file written in the data home."""
    summary: str = ""
    """One line without the source, e.g. "lorebook 'saltmere_1' imported (1 entry; ...)"."""
    warnings: tuple[str, ...] = ()
    error: str | None = None
    character: str = ""
    """For a chat: the key of the character it was filed under."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ImportReport:
    items: list[ImportItem] = field(default_factory=list)

    @property
    def imported(self) -> list[ImportItem]:
        return [item for item in self.items if item.ok]

    @property
    def failed(self) -> list[ImportItem]:
        return [item for item in self.items if not item.ok]

    @property
    def card_keys(self) -> list[str]:
        """The keys of the characters imported, in order (the library selects the last)."""
        return [item.name for item in self.imported if item.kind == "card"]

    @property
    def warnings(self) -> list[str]:
        """Every warning, each naming its file."""
        return [f"{item.source}: {w}" for item in self.items for w in item.warnings]


@dataclass(frozen=True)
class _Pending:
    """A file whose kind is known, waiting for its turn."""

    source: Path
    kind: str


@dataclass
class _Targets:
    home: DataHome
    library: CardLibrary
    chats: ChatStore
    character: str | None


def import_paths(
    home: DataHome,
    paths: Sequence[Path | str],
    *,
    library: CardLibrary | None = None,
    chats: ChatStore | None = None,
    character: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import every file of `paths` (a folder: the importable files directly in it) into `home`.

    `library` and `chats` default to the home's own; a caller that holds them (a `Tavern`) passes
    its objects. `character` files every chat under that character instead of the one its
    header names. The report lists the files in the order given.
    """
    from tavern.cards.library import CardLibrary
    from tavern.store import ChatStore

    targets = _Targets(
        home,
        CardLibrary(home.characters) if library is None else library,
        ChatStore(home.chats) if chats is None else chats,
        character,
    )
    slots: list[ImportItem | _Pending] = [_sniffed(p) for p in _expand(paths)]
    pending = [(i, job) for i, job in enumerate(slots) if isinstance(job, _Pending)]
    # Cards first: a chat later in the batch (or earlier in a folder's name order) is filed
    # under the character its header names, who may be arriving in this same batch.
    pending.sort(key=lambda p: p[1].kind != "card")
    total = len(slots)
    done = total - len(pending)
    for i, job in pending:
        slots[i] = _import_one(targets, job.source, job.kind)
        done += 1
        if progress is not None:
            progress(done, total)
    if progress is not None and total and not pending:
        progress(total, total)
    return ImportReport([slot for slot in slots if isinstance(slot, ImportItem)])


# -- finding and sniffing ---------------------------------------------------------------------


def _expand(paths: Sequence[Path | str]) -> list[Path | ImportItem]:
    """Files as given, folders as their importable files (sorted); an empty folder is an error."""
    out: list[Path | ImportItem] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_dir():
            out.append(path)
            continue
        try:
            found = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in IMPORT_SUFFIXES and not p.name.startswith(".") and p.is_file()
            )
        except OSError as err:
            out.append(_failed(path, "unknown", f"cannot list the folder ({_os_words(err)})"))
            continue
        if not found:
            out.append(_failed(path, "unknown", "no card, lorebook, chat or preset files in this folder"))
        out.extend(found)
    return out


def _sniffed(entry: Path | ImportItem) -> ImportItem | _Pending:
    if isinstance(entry, ImportItem):
        return entry
    from tavern.cards.sniff import detect_kind

    try:
        kind = detect_kind(entry)
    except TavernError as err:
        return _failed(entry, "unknown", str(err))
    except OSError as err:
        return _failed(entry, "unknown", _os_words(err))
    if kind == "unknown":
        return _failed(entry, kind, "not a card, lorebook, chat or preset")
    return _Pending(entry, kind)


def _import_one(targets: _Targets, source: Path, kind: str) -> ImportItem:
    importer = _IMPORTERS.get(kind.split(":", 1)[0], None)
    try:
        if importer is None:
            raise TavernError("not a card, lorebook, chat or preset")
        return importer(targets, source, kind)
    except TavernError as err:
        return _failed(source, kind, str(err))
    except OSError as err:
        return _failed(source, kind, _os_words(err))


def _failed(source: Path, kind: str, message: str) -> ImportItem:
    """One line that names the file, whatever the domain's message said."""
    line = " ".join(message.split())
    if source.name not in line:
        line = f"{source}: {line}"
    return ImportItem(source=source, kind=kind, error=line)


def _os_words(err: OSError) -> str:
    from tavern.store.atomic import describe_os_error

    return describe_os_error(err)


# -- one importer per kind (the domain modules do the work) -------------------------------------


def _import_card(targets: _Targets, source: Path, kind: str) -> ImportItem:
    key = targets.library.import_file(source)
    return ImportItem(
        source=source,
        kind=kind,
        name=key,
        path=targets.library.path(key),
        summary=f"character '{key}' imported",
    )


def _import_lorebook(targets: _Targets, source: Path, kind: str) -> ImportItem:
    from tavern.lore import load_lorebook
    from tavern.lore.convert import lorebook_to_world_dict

    book = load_lorebook(source)
    wanted = safe_stem(book.name or source.stem)
    # save_lorebook's own format (world JSON, indent 4), but written only under a free name.
    data = json.dumps(lorebook_to_world_dict(book), ensure_ascii=False, indent=4).encode("utf-8")
    target = claim_free_name(targets.home.lorebooks, wanted, data)
    count = len(book.entries)
    detail = f"{count} entr{'y' if count == 1 else 'ies'}{_kept_both(wanted, target, 'lorebook')}"
    return ImportItem(
        source=source,
        kind=kind,
        name=target.stem,
        path=target,
        summary=f"lorebook '{target.stem}' imported ({detail})",
    )


def _import_chat(targets: _Targets, source: Path, kind: str) -> ImportItem:
    key = chat_owner(targets.library, source, targets.character)
    chat = targets.chats.import_jsonl(source, key)
    # What the store found while copying the file ("import: the last line of x.jsonl was cut
    # short"): the damaged line is left out, so the user must hear of it.
    warnings = tuple(w.removeprefix("import: ") for w in chat.warnings)
    return ImportItem(
        source=source,
        kind=kind,
        name=chat.name,
        path=chat.path,
        character=key,
        summary=f"chat '{chat.name}' imported for {key} ({len(chat)} messages)",
        warnings=warnings,
    )


def _import_preset(targets: _Targets, source: Path, kind: str) -> ImportItem:
    try:
        data = json.loads(source.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as err:
        raise PresetError(f"{source}: cannot read preset: {err}") from None
    wanted = safe_stem(source.stem)
    if kind == "preset:sampler":
        return _import_sampler(targets, source, kind, data, wanted)
    from tavern.prompt.st_presets import load_st_preset

    load_st_preset(source)  # validates: a broken preset is refused before anything is written
    sub = kind.split(":", 1)[1]
    body = json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")
    target = claim_free_name(targets.home.presets / sub, wanted, body)
    return ImportItem(
        source=source,
        kind=kind,
        name=target.stem,
        path=target,
        summary=f"{sub} preset '{target.stem}' imported{_kept_both(wanted, target, 'preset')}",
    )


def _import_sampler(targets: _Targets, source: Path, kind: str, data: object, wanted: str) -> ImportItem:
    from tavern.engines.presets import bundled_presets_dir, import_st_preset, to_st_preset

    settings, unsupported = import_st_preset(data, source.stem)
    # save_preset's own format, written only under a free name. A bundled preset's name is
    # taken too: a file of the same name in the home would silently replace it for every
    # setting that names it.
    body = (json.dumps(to_st_preset(settings), indent=4, ensure_ascii=False) + "\n").encode("utf-8")
    bundled = {p.stem.casefold() for p in _json_files(bundled_presets_dir())}
    target = claim_free_name(targets.home.presets, wanted, body, reserved=bundled)
    note = f"; not supported: {', '.join(unsupported)}" if unsupported else ""
    return ImportItem(
        source=source,
        kind=kind,
        name=target.stem,
        path=target,
        summary=f"sampler preset '{target.stem}' imported{note}{_kept_both(wanted, target, 'preset')}",
    )


_IMPORTERS: dict[str, Callable[[_Targets, Path, str], ImportItem]] = {
    "card": _import_card,
    "lorebook": _import_lorebook,
    "chat": _import_chat,
    "preset": _import_preset,
}


def _kept_both(wanted: str, target: Path, what: str) -> str:
    if target.stem == wanted:
        return ""
    return f"; a {what} named '{wanted}' exists: kept both"


# -- shared helpers ---------------------------------------------------------------------------


def chat_owner(library: CardLibrary, path: Path, character: str | None) -> str:
    """`character`, else the character a SillyTavern chat names in its header (exactly: a
    prefix match would be a guess)."""
    if character:
        return library.resolve(character)
    from tavern.store.chatstore import header_character_name

    name = header_character_name(path)
    if name is None:
        raise TavernError(f"{path}: the chat names no character in its header; pass --character NAME")
    try:
        key = library.resolve(name)
        card = library.get(key)
    except NotFoundError:
        raise NotFoundError(
            f"{path}: the chat belongs to '{name}', who is not in the library; "
            "import the card first or pass --character NAME"
        ) from None
    if name.casefold() not in (key.casefold(), card.name.casefold()):
        raise NotFoundError(f"{path}: the chat belongs to '{name}', not '{card.name}'; pass --character NAME")
    return key


def safe_stem(name: str) -> str:
    """A file stem from a book's or preset's name: the one sanitizer's (tavern.store.names)."""
    from tavern.store.names import sanitize_file_name

    return sanitize_file_name(name, "unnamed", max_bytes=100)


def claim_free_name(folder: Path, stem: str, data: bytes, reserved: Collection[str] = ()) -> Path:
    """Write `data` as `folder/stem.json`, or the first free `stem_1.json`, `stem_2.json`...

    Never replaces a file: the name is claimed atomically (`create_exclusive`), so a writer
    that took it first just moves us on to the next number. Names are compared without case
    (lorebooks and presets are found by name without case). `reserved`: casefolded names that
    count as taken though no file holds them here.
    """
    from tavern.store.atomic import create_exclusive, make_dirs

    try:
        make_dirs(folder)
        taken = {p.stem.casefold() for p in _json_files(folder)} | set(reserved)
        for n in range(_MAX_NUMBERED):
            name = stem if n == 0 else f"{stem}_{n}"
            if name.casefold() in taken:
                continue
            target = folder / f"{name}.json"
            if create_exclusive(target, data):
                return target
    except OSError as err:
        raise TavernError(f"{folder / (stem + '.json')}: cannot write ({_os_words(err)})") from None
    raise TavernError(f"{folder}: too many files named '{stem}'")


def _json_files(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.suffix.lower() == ".json"]
    except OSError:
        return []
