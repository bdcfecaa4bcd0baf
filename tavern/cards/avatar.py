"""Avatar images for cards: a placeholder for cards that come without one, and conversion of
non-PNG pictures (a CHARX icon in WebP, a JPEG the user picked) to PNG.

Callers: `tavern.cards.formats.write_card_png` and `tavern.cards.library`. Pillow is imported
inside the functions: most card work (listing, reading) never draws a pixel, and Pillow's
import is not free.
"""

from __future__ import annotations

import io
import warnings
import zlib
from typing import TYPE_CHECKING

from tavern.errors import CardError

if TYPE_CHECKING:
    from PIL import Image

PLACEHOLDER_SIZE = (256, 384)  # SillyTavern's avatars are 2:3 portraits
MAX_PIXELS = 40_000_000
"""Largest picture Tavern decodes (160 MB as RGBA). The size is read from the header first:
a 480 KB PNG can claim 13,000 x 13,000 pixels, and Pillow's own bound only warns below 179 MP."""

# Muted colours that keep a white letter readable.
_PALETTE = (
    (0x5B, 0x6C, 0x8F),
    (0x7A, 0x4E, 0x7E),
    (0x3E, 0x7C, 0x6B),
    (0x8C, 0x5A, 0x3C),
    (0x4A, 0x6F, 0x9C),
    (0x9A, 0x4B, 0x5B),
    (0x5E, 0x7D, 0x3A),
    (0x6A, 0x5A, 0x9A),
)


def placeholder_avatar(name: str) -> bytes:
    """A PNG: a coloured 2:3 rectangle (colour fixed by the name) with the name's initial."""
    from PIL import Image, ImageDraw, ImageFont  # deferred: see module docstring

    colour = _PALETTE[zlib.crc32(name.encode("utf-8", "replace")) % len(_PALETTE)]
    image = Image.new("RGB", PLACEHOLDER_SIZE, colour)
    initial = next((ch for ch in name.strip() if ch.isprintable()), "?").upper()
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=160)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), initial, font=font)
    x = (PLACEHOLDER_SIZE[0] - (right - left)) / 2 - left
    y = (PLACEHOLDER_SIZE[1] - (bottom - top)) / 2 - top
    draw.text((x, y), initial, fill=(255, 255, 255), font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def convert_to_png(data: bytes, source: str) -> bytes:
    """Any image Pillow can read, re-encoded as PNG; CardError if it is not an image."""
    from PIL import Image, UnidentifiedImageError  # deferred: see module docstring

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the bound below decides
            opened = Image.open(io.BytesIO(data))
        with opened:
            _fit_pixel_bound(opened, source)
            opened.load()
            image: Image.Image = opened
            if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
                image = image.convert("RGBA")  # CMYK, YCbCr...: modes PNG cannot store
            out = io.BytesIO()
            image.save(out, format="PNG")
    except (UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise CardError(f"{source}: avatar is not a usable image ({err})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise CardError(f"{source}: avatar image is damaged ({err})") from None
    return out.getvalue()


def _fit_pixel_bound(image: Image.Image, source: str) -> None:
    """Decode a JPEG over MAX_PIXELS at 1/2, 1/4 or 1/8 scale (`draft`, before loading);
    CardError when a picture is over the bound even so (nothing is decoded)."""
    width, height = image.size
    scale = next((s for s in (1, 2, 4, 8) if (width // s) * (height // s) <= MAX_PIXELS), 8)
    if scale > 1:
        image.draft("RGB", (width // scale, height // scale))
    if image.size[0] * image.size[1] > MAX_PIXELS:
        raise CardError(
            f"{source}: avatar is {width}x{height} pixels, over the {MAX_PIXELS // 1_000_000}-megapixel "
            "limit; use a smaller picture"
        )
