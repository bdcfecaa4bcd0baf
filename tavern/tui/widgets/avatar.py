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
a resize re-samples only that copy, so scrolling through a thousand cards stays cheap. The
decode is bounded: a picture's size is read from its header first, and one over `MAX_PIXELS`
(a 480 KB PNG can hold 13,000 x 13,000 pixels, 680 MB as RGBA) is never decoded: the widget
shows one line saying so. A JPEG is decoded at reduced scale (`draft`), the rest shrinks
before it is converted, so a picture within the bound costs about its own size once.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from typing import TYPE_CHECKING, TypeAlias, cast

from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget

from tavern.cards.avatar import MAX_PIXELS  # the one bound: a bigger picture shows a notice

if TYPE_CHECKING:
    from PIL.Image import Image as Picture

    Decoded: TypeAlias = Picture | None
    """A small RGB working copy of a picture (a PIL image), or None: nothing to show."""

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


def decode(png: bytes | None) -> Decoded:
    """A small RGB working copy of the picture (a PIL image), or None if it is not readable
    or too large to decode (`decode_with_notice` says which)."""
    return decode_with_notice(png)[0]


def decode_with_notice(png: bytes | None) -> tuple[Decoded, str | None]:
    """(working copy, None), or (None, one line for the user) when the picture is not shown;
    (None, None) when there is no picture, or it is unreadable."""
    if not png:
        return None, None
    last = _LAST_FAILED
    if last is not None and last[0] is png:
        return None, last[1]
    image, notice = _decode(png)
    # The library decodes in a worker, then hands the bytes to `set_image` with decoded=None
    # when that failed: remembering the last failure spares the UI thread a second try.
    _remember_failure(png if image is None else None, notice)
    return image, notice


_LAST_FAILED: tuple[bytes, str | None] | None = None


def _remember_failure(png: bytes | None, notice: str | None) -> None:
    global _LAST_FAILED
    _LAST_FAILED = None if png is None else (png, notice)


def _decode(png: bytes) -> tuple[Decoded, str | None]:
    from PIL import Image  # deferred: Pillow's import is not free

    try:
        with warnings.catch_warnings():
            # Pillow warns (on stderr, under the TUI) from 89 MP on; the bound below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(png))
        with opened as image:
            size = image.size
            image.draft("RGB", WORK_SIZE)  # JPEG: decode at 1/2 to 1/8 scale (size shrinks)
            notice = _too_large(size, image.size)
            if notice:
                return None, notice
            image.load()
            flat = _flatten(_shrink(image))
        flat.thumbnail(WORK_SIZE)
        return flat, None
    except Image.DecompressionBombError:
        return None, "picture too large to show"
    except Exception:  # noqa: BLE001 - Pillow raises many kinds; a damaged picture shows as nothing, never as a crash
        return None, None


def _too_large(size: tuple[int, int], decoded: tuple[int, int]) -> str | None:
    """The notice for a picture whose decode (at `decoded` size) is over the bound."""
    if decoded[0] * decoded[1] <= MAX_PIXELS:
        return None
    width, height = size
    return f"picture too large to show ({width}x{height} pixels, over {MAX_PIXELS // 1_000_000} megapixels)"


def _shrink(image: Picture) -> Picture:
    """A small copy of a decoded picture, at least WORK_SIZE where the picture is.

    Made in bands: Pillow's reduce and resize first copy the whole picture into another mode
    (premultiplied RGBa; RGBA for a palette), which would double the memory of a big one.
    A band at a time costs one band."""
    from PIL import Image

    width, height = image.size
    mode = _WORK_MODES.get(image.mode, "RGB")
    factor = max(1, min(width // WORK_SIZE[0], height // WORK_SIZE[1]))
    if factor == 1:
        return image.convert(mode)
    out = Image.new(mode, (-(-width // factor), -(-height // factor)))
    band = factor * max(1, _BAND_ROWS // factor)  # whole output rows, about _BAND_ROWS input rows
    for top in range(0, height, band):
        strip = image.crop((0, top, width, min(height, top + band)))
        if strip.mode != mode:
            strip = strip.convert(mode)
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


# The mode each decoded mode is shrunk in: ones `reduce` supports, transparency kept.
_WORK_MODES = {"1": "L", "L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA", "P": "RGBA", "PA": "RGBA"}
_BAND_ROWS = 256  # input rows per band: a few MB even for a picture 10,000 pixels wide


def _flatten(image: Picture) -> Picture:
    """RGB over BACKGROUND, transparency composited."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def half_block_rows(
    image: Decoded, width: int, height: int
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
    assert pixels is not None  # load() returns the access object of an image it just made

    def rgb(x: int, y: int) -> tuple[int, int, int]:
        return cast("tuple[int, int, int]", pixels[x, y])  # an "RGB" image's pixels are 3-tuples

    return [[(rgb(x, 2 * y), rgb(x, 2 * y + 1)) for x in range(width)] for y in range(height)]


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
        self._image, self._notice = decode_with_notice(png)
        self._cache: tuple[tuple[int, int], HalfBlocks] | None = None
        self._graphics = graphics_protocol()

    @property
    def has_image(self) -> bool:
        """True when there is something to show: the picture, or the line saying why a
        picture is not shown (too large to decode)."""
        return self._image is not None or self._notice is not None

    @property
    def notice(self) -> str | None:
        """Why the picture is not shown (it is too large to decode), else None."""
        return self._notice

    @property
    def image(self) -> Decoded:
        """The decoded working copy (a PIL image) or None."""
        return self._image

    def set_image(self, png: bytes | None, decoded: Decoded = None) -> None:
        """Show another picture; `decoded` (from `decode`) skips decoding on the UI thread."""
        self._png = png
        self._image, self._notice = (decoded, None) if decoded is not None else decode_with_notice(png)
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

    def render(self) -> Text | HalfBlocks | str:
        if self._image is None and self._notice:
            return Text(self._notice, style="dim italic")
        if self._graphics:
            return ""
        size = (self.content_size.width, self.content_size.height)
        if self._cache is None or self._cache[0] != size:
            self._cache = (size, HalfBlocks(half_block_rows(self._image, *size)))
        return self._cache[1]
