"""A character's picture in the terminal: `AvatarView(png_bytes)`.

Callers: the library screen's preview pane. The picture is drawn with half-block characters
("▀", the top pixel as the foreground colour, the bottom one as the background), so each cell
shows two square-ish pixels. That works in every terminal with true colour or 256 colours,
tmux and SSH included, and needs only Pillow, which the card code already uses.

Real graphics (Kitty's protocol, Sixel) come from the optional `textual-image` package, and
only when it was imported before the app started: it asks the terminal what it supports, which
is impossible once Textual owns the terminal. `prepare_graphics()` is that start-up step; the
launcher calls it before `app.run()`. Without it (tests, pipes, tmux, no package) the widget
draws half-blocks.

Decoding happens once per picture (the image is shrunk to a small working copy at once);
a resize re-samples only that copy, so scrolling through a thousand cards stays cheap.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from textual.app import ComposeResult
from textual.widget import Widget

UPPER_HALF = "▀"
WORK_SIZE = (96, 144)
"""Working copy size: big enough for a 48x72-cell avatar, small enough to re-sample at once."""
BACKGROUND = (0, 0, 0)


def prepare_graphics() -> bool:
    """Load textual-image before the app starts, if it is installed and stdout is a terminal
    that speaks a graphics protocol. Returns True when real graphics will be used.

    Set TAVERN_GRAPHICS=0 to keep half-blocks (some terminals answer the query wrongly).
    """
    if os.environ.get("TAVERN_GRAPHICS", "1") == "0":
        return False
    if not (sys.__stdout__ and sys.__stdout__.isatty()):
        return False
    try:
        import textual_image.widget  # noqa: F401 - the import itself queries the terminal
    except Exception:  # noqa: BLE001 - not installed, or its terminal query failed: half-blocks it is
        return False
    return graphics_protocol() is not None


def graphics_protocol() -> str | None:
    """ "tgp" or "sixel" when textual-image was loaded at start-up and found one, else None."""
    if os.environ.get("TAVERN_GRAPHICS", "1") == "0":
        return None
    module = sys.modules.get("textual_image.renderable")
    if module is None or "textual_image.widget" not in sys.modules:
        return None
    chosen = getattr(module, "Image", None)
    if chosen is not None and chosen is getattr(module, "TGPImage", object()):
        return "tgp"
    if chosen is not None and chosen is getattr(module, "SixelImage", object()):
        return "sixel"
    return None  # textual-image would fall back to half cells too: ours are as good


def decode(png: bytes | None) -> Any:
    """A small RGB working copy of the picture (a PIL image), or None if it is not readable."""
    if not png:
        return None
    from PIL import Image  # deferred: Pillow's import is not free

    try:
        with Image.open(io.BytesIO(png)) as image:
            image.draft("RGB", WORK_SIZE)  # JPEG: decode at reduced size
            image.load()
            if image.mode in ("RGBA", "LA", "P", "PA"):
                rgba = image.convert("RGBA")
                flat = Image.new("RGB", rgba.size, BACKGROUND)
                flat.paste(rgba, mask=rgba.getchannel("A"))
            else:
                flat = image.convert("RGB")
    except Exception:  # noqa: BLE001 - Pillow raises many kinds; a damaged picture shows as nothing, never as a crash
        return None
    flat.thumbnail(WORK_SIZE)
    return flat


def half_block_rows(
    image: Any, width: int, height: int
) -> list[list[tuple[tuple[int, int, int], tuple[int, int, int]]]]:
    """The picture fitted into `width` x `height` cells (aspect kept, centred), as rows of
    (top colour, bottom colour) per cell. Pure; the tests and the widget both use it."""
    if image is None or width <= 0 or height <= 0:
        return []
    from PIL import Image

    src_w, src_h = image.size
    # A cell is one pixel wide and two tall, which keeps pixels about square.
    scale = min(width / src_w, (2 * height) / src_h)
    w = max(1, min(width, round(src_w * scale)))
    h = max(1, min(2 * height, round(src_h * scale)))
    small = image.resize((w, h), Image.Resampling.BOX)
    canvas = Image.new("RGB", (width, 2 * height), BACKGROUND)
    canvas.paste(small, ((width - w) // 2, ((2 * height - h) // 2) & ~1))
    pixels = canvas.load()
    return [[(pixels[x, 2 * y], pixels[x, 2 * y + 1]) for x in range(width)] for y in range(height)]


class HalfBlocks:
    """A Rich renderable of precomputed half-block rows."""

    def __init__(self, rows: list[list[tuple[tuple[int, int, int], tuple[int, int, int]]]]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        styles: dict[tuple, Style] = {}
        for row in self.rows:
            for top, bottom in row:
                style = styles.get((top, bottom))
                if style is None:
                    style = styles[(top, bottom)] = Style(color=_hex(top), bgcolor=_hex(bottom))
                yield Segment(UPPER_HALF, style)
            yield Segment.line()


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


class AvatarView(Widget):
    """A character's picture, sized by CSS (default 16x12 cells). `set_image` swaps it."""

    DEFAULT_CSS = """
    AvatarView {
        width: 16;
        height: 12;
    }
    """

    def __init__(
        self, png: bytes | None = None, *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self._png = png
        self._image = decode(png)
        self._cache: tuple[tuple[int, int], HalfBlocks] | None = None
        self._graphics = graphics_protocol()

    @property
    def has_image(self) -> bool:
        return self._image is not None

    @property
    def image(self) -> Any:
        """The decoded working copy (a PIL image) or None."""
        return self._image

    def set_image(self, png: bytes | None, decoded: Any = None) -> None:
        """Show another picture; `decoded` (from `decode`) skips decoding on the UI thread."""
        self._png = png
        self._image = decoded if decoded is not None else decode(png)
        self._cache = None
        if self._graphics and self.is_mounted:
            self._show_graphics()
        self.refresh()

    def compose(self) -> ComposeResult:
        if self._graphics:
            from textual_image.widget import Image as GraphicsImage

            yield GraphicsImage(self._image, id="avatar-graphics")

    def _show_graphics(self) -> None:
        from textual_image.widget import Image as GraphicsImage

        for child in self.query(GraphicsImage):
            child.image = self._image

    def render(self) -> Any:
        if self._graphics:
            return ""
        size = (self.content_size.width, self.content_size.height)
        if self._cache is None or self._cache[0] != size:
            self._cache = (size, HalfBlocks(half_block_rows(self._image, *size)))
        return self._cache[1]
