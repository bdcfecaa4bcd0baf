"""The one import service (`tavern.importing`) on real SillyTavern files: every kind, the
no-overwrite rule, a torn chat line, and bad files. No model is needed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tavern.importing import ImportReport, import_paths
from tavern.lore import load_lorebook
from tavern.paths import bundled_dir
from tavern.session import Tavern

DATA = Path(__file__).parent / "data"
SERAPHINA_CHAT = DATA / "chats" / "Seraphina" / "Seraphina - 2024-09-15@14h03m22s.jsonl"
ONE_ENTRY_BOOK = {"entries": {"0": {"uid": 0, "key": ["harbor"], "content": "The harbor is quiet."}}}


def fresh(tmp_path: Path) -> Tavern:
    return Tavern.open(tmp_path / "home")


def run(tavern: Tavern, *paths: Path, **kw: Any) -> ImportReport:
    return import_paths(tavern.home, list(paths), library=tavern.cards.library, chats=tavern.chats.store, **kw)


def test_every_kind_is_imported_to_its_place_and_reported_in_order(tmp_path: Path) -> None:
    tavern = fresh(tmp_path)
    seen: list[tuple[int, int]] = []
    # The chat comes before its character's card: cards are imported first, so it still
    # finds Seraphina.
    report = run(
        tavern,
        SERAPHINA_CHAT,
        DATA / "cards" / "real" / "Seraphina.png",
        DATA / "lore" / "Eldoria.json",
        DATA / "presets" / "sillytavern" / "TFS-with-Top-A.json",
        DATA / "cards" / "real" / "instruct_ChatML.json",
        DATA / "cards" / "real" / "context_ChatML.json",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert not report.failed, [i.error for i in report.failed]
    chat, card, book, sampler, instruct, context = report.items
    assert (chat.kind, chat.character, chat.path.parent.name) == ("chat", "Seraphina", "Seraphina")
    assert [m["mes"] for m in _jsonl(chat.path)[1:]] == [m["mes"] for m in _jsonl(SERAPHINA_CHAT)[1:]]
    assert card.kind == "card" and card.name == "Seraphina" and report.card_keys == ["Seraphina"]
    assert book.path == tavern.home.lorebooks / "Eldoria.json"
    assert len(load_lorebook(book.path).entries) == 4 and "4 entries" in book.summary
    assert sampler.path == tavern.home.presets / "TFS-with-Top-A.json"
    assert "not supported: tfs" in sampler.summary  # what Tavern cannot honour is said
    assert abs(tavern.presets.sampler_preset("TFS-with-Top-A").temperature - _json(sampler.source)["temp"]) < 1e-9
    assert instruct.path == tavern.home.presets / "instruct" / "instruct_ChatML.json"
    assert context.path == tavern.home.presets / "context" / "context_ChatML.json"
    assert seen[-1] == (6, 6) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_folder_imports_every_kind_in_it(tmp_path: Path) -> None:
    tavern = fresh(tmp_path)
    report = run(tavern, DATA / "cards" / "real")
    kinds = sorted(item.kind for item in report.imported)
    assert kinds == ["card", "card", "lorebook", "preset:context", "preset:instruct", "preset:sampler"]
    assert (tavern.home.lorebooks / "Eldoria.json").is_file()


def test_a_lorebook_whose_name_exists_is_saved_beside_it(tmp_path: Path) -> None:
    tavern = fresh(tmp_path)
    bundled = tavern.home.lorebooks / "saltmere.json"
    before = bundled.read_bytes()
    assert before == (bundled_dir("lorebooks") / "saltmere.json").read_bytes()
    incoming = tmp_path / "saltmere.json"
    incoming.write_text(json.dumps(ONE_ENTRY_BOOK), encoding="utf-8")

    [item] = run(tavern, incoming).items
    assert bundled.read_bytes() == before  # the bundled book is intact
    assert item.name == "saltmere_1" and item.path == tavern.home.lorebooks / "saltmere_1.json"
    assert "saltmere_1" in item.summary and "'saltmere' exists: kept both" in item.summary
    assert [e.content for e in load_lorebook(item.path).entries] == ["The harbor is quiet."]
    # Again: the next number; a name differing only in case is taken too.
    upper = tmp_path / "up" / "SALTMERE.json"
    upper.parent.mkdir()
    shutil.copyfile(incoming, upper)
    assert [i.name for i in run(tavern, incoming, upper).items] == ["saltmere_2", "SALTMERE_3"]
    assert bundled.read_bytes() == before


def test_a_preset_whose_name_exists_is_saved_beside_it(tmp_path: Path) -> None:
    tavern = fresh(tmp_path)
    default_temp = tavern.presets.sampler_preset("Default").temperature
    # SillyTavern's "Default" would shadow Tavern's bundled Default for every setting naming it.
    [item] = run(tavern, DATA / "presets" / "sillytavern" / "Default.json").items
    assert item.name == "Default_1" and "kept both" in item.summary
    assert tavern.presets.sampler_preset("Default").temperature == default_temp
    assert tavern.presets.sampler_preset("Default_1").temperature == 0.7

    first = run(tavern, DATA / "cards" / "real" / "instruct_ChatML.json").items[0]
    kept = first.path.read_bytes()
    second = run(tavern, DATA / "cards" / "real" / "instruct_ChatML.json").items[0]
    assert second.name == "instruct_ChatML_1" and first.path.read_bytes() == kept


def test_a_torn_last_chat_line_is_a_warning(tmp_path: Path) -> None:
    tavern = fresh(tmp_path)
    run(tavern, DATA / "cards" / "real" / "Seraphina.png")
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(
        SERAPHINA_CHAT.read_bytes() + b'\n{"name": "Seraphina", "is_user": false, "mes": "The la'
    )

    report = run(tavern, torn)
    [item] = report.items
    assert item.ok and item.warnings
    assert "torn.jsonl" in item.warnings[0] and "cut short" in item.warnings[0]
    assert len(_jsonl(item.path)) == len(_jsonl(SERAPHINA_CHAT))  # every whole message is kept
    assert report.warnings == [f"{torn}: {item.warnings[0]}"]  # what a front prints


def test_bad_files_are_one_line_each_and_the_good_one_still_comes_in(tmp_path: Path) -> None:
    tavern = fresh(tmp_path)
    books_before = sorted(p.name for p in tavern.home.lorebooks.iterdir())
    broken_book = tmp_path / "broken.json"
    broken_book.write_text('{"entries": {"0": {"key": 5, "content": []}}}', encoding="utf-8")
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": "world"}', encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    report = run(
        tavern,
        broken_book,
        junk,
        tmp_path / "missing.png",
        empty,
        DATA / "cards" / "bad" / "truncated.png",
        DATA / "lore" / "Eldoria.json",
    )
    *bad, good = report.items
    assert good.ok and good.name == "Eldoria"
    for item, name in zip(
        bad, ["broken.json", "junk.json", "missing.png", "empty", "truncated.png"], strict=True
    ):
        assert item.error and name in item.error and "\n" not in item.error, item
    assert "entry 0" in bad[0].error and "not a card, lorebook, chat or preset" in bad[1].error
    assert sorted(p.name for p in tavern.home.lorebooks.iterdir()) == sorted([*books_before, "Eldoria.json"])


def test_a_chat_goes_to_the_character_its_header_names_or_the_one_given(tmp_path: Path) -> None:
    tavern = fresh(tmp_path)
    [item] = run(tavern, SERAPHINA_CHAT).items
    assert item.error and "belongs to 'Seraphina', who is not in the library" in item.error
    assert not (tavern.home.chats / "Seraphina").exists()
    [item] = run(tavern, SERAPHINA_CHAT, character="Mira").items
    assert item.ok and item.character == "Mira" and item.path.parent == tavern.home.chats / "Mira"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
