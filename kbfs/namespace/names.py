"""How server-side attachment names become directory entries, and which names we may upload.

Kanboard stores names verbatim (kanboard-api §6): they may contain ``/`` and NUL, be ``.``, ``..``
or empty, and repeat within one task (§7). A directory entry can hold none of that, so every
server file gets exactly one visible name by these rules, applied in this order:

1. ``/`` becomes ``∕`` (U+2215 DIVISION SLASH) and NUL becomes ``␀`` (U+2400).
2. The empty name becomes ``_``; ``.`` and ``..`` become ``_.`` and ``_..``.
3. A name longer than 255 bytes (the mapping can lengthen it) is cut at a character boundary.
4. Duplicates: files are taken in ascending file id; the first to claim a name keeps it, every
   later one gets `` (#<file id>)`` before its extension, e.g. ``dup (#21).txt``.

The result depends only on the set of (id, name) pairs, so it is deterministic and stable while
the directory's contents do not change. The module is pure: no I/O, no trio.
"""

from __future__ import annotations

import errno
import fnmatch
from collections.abc import Iterable
from typing import TypeVar

from kbfs.errors import FsError, NameTooLong

NAME_MAX = 255

_T = TypeVar("_T")

_SUBSTITUTIONS = {"/": "\u2215", "\0": "\u2400"}
_SPECIAL = {"": "_", ".": "_.", "..": "_.."}


def _cut(name: str, limit: int = NAME_MAX) -> str:
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) <= limit:
        return name
    return encoded[:limit].decode("utf-8", "ignore")


def base_display_name(server_name: str) -> str:
    """Rules 1-3: a valid directory entry for one server name, before duplicate handling."""
    if (
        len(server_name) <= NAME_MAX // 4  # 4 UTF-8 bytes per character at most: no cut
        and server_name not in _SPECIAL
        and "/" not in server_name
        and "\0" not in server_name
    ):
        return server_name  # the usual case, decided quickly
    name = "".join(_SUBSTITUTIONS.get(ch, ch) for ch in server_name)
    name = _SPECIAL.get(name, name)
    return _cut(name)


def with_suffix(name: str, file_id: int) -> str:
    """``dup.txt`` -> ``dup (#21).txt``; the suffix goes before the last extension."""
    suffix = f" (#{file_id})"
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:  # no extension, or a dotfile such as ".bashrc"
        stem, ext = name, ""
    ext = f".{ext}" if ext else ""
    room = NAME_MAX - len((suffix + ext).encode("utf-8", "surrogateescape"))
    if room < 1:  # an absurdly long extension: drop it rather than the id
        return _cut(name, NAME_MAX - len(suffix)) + suffix
    return _cut(stem, room) + suffix + ext


def assign_names(files: Iterable[tuple[int, str, _T]]) -> dict[str, _T]:
    """Map (file id, server name, item) triples to {visible name: item} by the module's rules."""
    taken: dict[str, _T] = {}
    wanting: list[tuple[int, str, _T]] = []
    for file_id, server_name, item in sorted(files, key=lambda f: f[0]):
        name = base_display_name(server_name)
        if name in taken:
            wanting.append((file_id, name, item))
        else:
            taken[name] = item
    for file_id, name, item in wanting:
        candidate = with_suffix(name, file_id)
        while candidate in taken:  # a real file already carries that suffixed name
            candidate = with_suffix(candidate, file_id)
        taken[candidate] = item
    return taken


def upload_name_error(name: str) -> FsError | None:
    """Why a name created in the mount cannot be stored by Kanboard as-is (the error to
    raise, with its errno), or None.

    Kanboard cuts names to 255 bytes; the kernel already refuses longer entries, but a name is
    checked here too so no layer depends on that. ``/`` and NUL cannot reach us.
    """
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        return NameTooLong("name longer than 255 bytes")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return FsError("name is not valid UTF-8", errno.EILSEQ)
    return None


def check_upload_name(name: str) -> None:
    """Raise ``upload_name_error(name)`` if there is one."""
    problem = upload_name_error(name)
    if problem is not None:
        raise problem


IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif")
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def is_image_name(name: str) -> bool:
    """What Kanboard stores as ``is_image`` for a new file of this name (kanboard-api §3)."""
    return "." in name and name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS


def image_problem(name: str, head: bytes) -> str | None:
    """Why Kanboard would refuse this content under this name, or None.

    Kanboard decides "image" by extension alone and then makes a thumbnail; content that is
    not an image makes it answer HTTP 500 (kanboard-api §8). Checking the magic bytes first turns
    that into a clear, early error instead of a failed upload.
    """
    if not is_image_name(name) or head.startswith(_IMAGE_MAGIC):
        return None
    ext = name.rpartition(".")[2].lower()
    return f"Kanboard accepts a .{ext} file only if it is a PNG, JPEG or GIF image"


# Scratch files of editors and desktops: they stay in this mount and never reach Kanboard.
DEFAULT_LOCAL_NAMES = (
    ".*.sw[a-p]",  # vim swap files (.name.swp, .swo, ...)
    ".*.sw[a-p][a-z]",
    "4913",  # vim's "can I create files here" probe
    "*~",  # backups (vim, emacs, gedit)
    ".#*",  # emacs lock files
    "#*#",  # emacs auto-save files
    ".~lock.*#",  # LibreOffice lock files
    "lu*.tmp",  # LibreOffice's save: written beside the document, then renamed over it
    ".goutputstream-*",  # GIO/gedit atomic-save temporaries
    ".*.kate-swp",  # Kate swap files
)
# What file managers look for in every directory; answered from any cached listing.
PROBE_NAMES = (
    ".hidden",
    ".directory",
    ".Trash",
    ".Trash-*",
    "autorun.inf",
    "desktop.ini",
    ".DS_Store",
    ".thumbnails",
    ".sh_thumbnails",
    "Thumbs.db",
    ".xdg-volume-info",
)


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def parse_id(name: str) -> int | None:
    """The id a directory name stands for (``"42"``), or None: no sign, no leading zero."""
    if not name.isascii() or not name.isdigit() or (len(name) > 1 and name[0] == "0"):
        return None
    return int(name)
