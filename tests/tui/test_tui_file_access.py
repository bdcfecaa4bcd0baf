"""The TUI reads and writes files only through domain services: no screen opens, stats, globs
or parses a file itself. The services it uses instead are checked on a real data home."""

from __future__ import annotations

import re
from pathlib import Path

from tavern.session import Tavern

TUI = Path(__file__).resolve().parents[2] / "tavern" / "tui"
FILE_ACCESS = re.compile(
    r"\bopen\(|json\.loads?\(|json\.dumps?\(|\.(write_text|read_text|write_bytes|read_bytes|stat|glob|rglob|"
    r"iterdir|mkdir|unlink|exists|is_file)\(|\bshutil\.|(?<![.\w])(load_(card|lorebook|preset)\w*|save_lorebook)\("
)
ALLOWED = {
    ("terminal.py", "os.fdopen("),  # the terminal's own output stream, not a data file
    ("avatar.py", "Image.open(io.BytesIO("),  # decodes PNG bytes already in memory
}


def test_no_screen_touches_files_itself() -> None:
    found = []
    for path in sorted(TUI.rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if not FILE_ACCESS.search(code) or '"""' in code:
                continue
            if any(path.name == name and snippet in code for name, snippet in ALLOWED):
                continue
            found.append(f"{path.relative_to(TUI)}:{n}: {line.strip()}")
    assert not found, "the TUI does file work itself:\n" + "\n".join(found)


def test_the_services_the_screens_use(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    card, avatar = tavern.cards.library.get_with_avatar(tavern.cards.find("Mira")[0])
    assert card.name == "Mira" and avatar is not None and avatar.startswith(b"\x89PNG")
    sized = tavern.lorebooks.sizes()
    assert sized and all(size == path.stat().st_size for path, size in sized)
    (tavern.home.presets / "Mine.json").write_text('{"temp": 0.33}', encoding="utf-8")
    assert abs(tavern.presets.sampler_preset("Mine").temperature - 0.33) < 1e-9
    assert tavern.presets.sampler_preset("Deterministic").temperature != 0.33
