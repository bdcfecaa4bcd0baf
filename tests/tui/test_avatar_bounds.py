"""The library preview decodes pictures with a pixel bound (issue #26, item 8).

A 13,000 x 13,000 PNG of one colour is a 700 KB file; decoded as RGBA with the old copies it
took 2.1 GB for a 96-pixel thumbnail. Now the size is read from the header first: over
`MAX_PIXELS` nothing is decoded and the widget shows one line instead; within it, the picture
is shrunk in bands so the decode costs about the picture once.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from tavern.cards.avatar import MAX_PIXELS, convert_to_png
from tavern.errors import CardError
from tavern.tui.widgets.avatar import WORK_SIZE, AvatarView, decode, decode_with_notice


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(ctype)))
    )


def flat_png(width: int, height: int, rgba: bytes = b"\x5a\x3c\x78\xff") -> bytes:
    """A one-colour RGBA PNG, compressed row by row (never held decoded here)."""
    packer = zlib.compressobj(9)
    row = b"\x00" + rgba * width
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def huge() -> bytes:
    return flat_png(13_000, 13_000)


def test_a_picture_over_the_bound_is_not_decoded_and_says_why(huge: bytes) -> None:
    assert len(huge) < 1_000_000
    image, notice = decode_with_notice(huge)
    assert image is None
    assert notice is not None and "13000x13000" in notice and "\n" not in notice
    assert decode(huge) is None


def test_the_widget_shows_the_notice_in_place_of_the_picture(huge: bytes) -> None:
    view = AvatarView(huge)
    assert view.has_image  # the library keeps the column: there is a line to show
    assert view.notice is not None and "too large" in view.notice
    assert "too large" in str(view.render())
    view.set_image(None)
    assert not view.has_image and view.notice is None


def test_an_unreadable_picture_still_shows_nothing() -> None:
    assert decode_with_notice(b"\x89PNG\r\n\x1a\nnot really") == (None, None)


def test_a_picture_within_the_bound_decodes_to_the_working_size() -> None:
    image = decode(flat_png(1200, 1800, b"\x10\x20\x30\x80"))
    assert image is not None and image.mode == "RGB"
    assert image.size == WORK_SIZE
    assert image.getpixel((10, 10)) == (8, 16, 24)  # half-transparent over black


def test_a_big_picture_within_the_bound_decodes_in_about_its_own_size(tmp_path: Path) -> None:
    # 6000 x 6500 RGBA is 156 MB decoded; the old decode's copies made it 480 MB more than
    # the interpreter. Measured in a child so the peak is this decode's alone.
    side = tmp_path / "big.png"
    side.write_bytes(flat_png(6000, 6500))
    script = textwrap.dedent(
        f"""
        import resource, sys
        from tavern.tui.widgets.avatar import decode
        data = open({str(side)!r}, "rb").read()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        image = decode(data)
        assert image is not None and image.size == (96, 104), image
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grown_mb = int(out.stdout.strip())
    assert grown_mb < 260, f"decoding a 39-megapixel picture grew the process by {grown_mb} MB"


def test_converting_a_picture_over_the_bound_is_refused_with_one_line(huge: bytes) -> None:
    assert MAX_PIXELS < 13_000 * 13_000
    with pytest.raises(CardError) as err:
        convert_to_png(huge, "icon.png")
    assert "13000x13000" in str(err.value) and "megapixel" in str(err.value)


def test_converting_an_ordinary_picture_still_works() -> None:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (300, 450), (200, 10, 10)).save(out, format="JPEG")
    converted = convert_to_png(out.getvalue(), "icon.jpg")
    assert converted.startswith(b"\x89PNG")
