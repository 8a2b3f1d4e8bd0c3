"""Tiny image helpers: build real PNGs for sample data, and sniff image headers.

Kanboard runs GD's ``getimagesizefromstring`` on every upload whose *name* looks like an image
and dies with HTTP 500 when the content is not a decodable image (kanboard-api §8).  We only need
the header check and a way to make valid PNGs without any third-party library.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["image_size", "make_png"]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def make_png(width: int, height: int, rgb: tuple[int, int, int], stripe: int = 0) -> bytes:
    """A valid 8-bit RGB PNG; ``stripe`` > 0 paints darker bands ``stripe`` rows high."""
    dark = bytes(max(0, c - 60) for c in rgb)
    light = bytes(rgb)
    rows = []
    for y in range(height):
        colour = dark if stripe and (y // stripe) % 2 else light
        rows.append(b"\x00" + colour * width)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + _chunk(b"IEND", b"")
    )


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, GIF or JPEG from its header, or None if it is not one of those."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
    elif data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
    elif data.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
        if size is None:
            return None
        width, height = size
    else:
        return None
    if width <= 0 or height <= 0:
        return None
    return width, height
