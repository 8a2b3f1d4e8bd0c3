"""PHP value semantics that Kanboard's behaviour depends on.

Kanboard is PHP: ids arrive as whatever JSON type the client sent and are then compared by SQLite
or juggled by PHP.  The devserver must reproduce the *observable* outcome (kanboard-api §4, §5), so
the few conversions that matter live here, each named after the PHP construct it imitates.
"""

from __future__ import annotations

import binascii
import re
from typing import Any

__all__ = [
    "PhpTypeError",
    "base64_decode",
    "is_empty_content",
    "loose_equals_int",
    "php_int",
    "sql_id",
    "to_php_string",
    "valid_path_id",
]


class PhpTypeError(Exception):
    """A PHP \\Error (TypeError, DivisionByZeroError...): uncaught, so HTTP 500."""


_NUMERIC_INT = re.compile(r"[+-]?[0-9]+")
_NUMERIC_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_DROP = bytes(b for b in range(256) if b not in _B64_ALPHABET)


def sql_id(value: Any) -> int | None:
    """The integer an id parameter matches in ``WHERE id = ?``, or None when it matches no row.

    PDO binds PHP values and SQLite applies INTEGER affinity: ``"1"``, ``1.0`` and ``true`` find
    row 1, while ``"abc"``, ``null``, ``[1]`` and ``{}`` find nothing (kanboard-api §4, loose
    types).
    """
    if isinstance(value, bool):
        return 1 if value else None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if _NUMERIC_INT.fullmatch(text):
            return int(text)
        if _NUMERIC_FLOAT.fullmatch(text):
            number = float(text)
            return int(number) if number.is_integer() else None
    return None


def php_int(value: Any) -> int:
    """PHP ``(int)$value``."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) < 2**63 else 0
    if isinstance(value, str):
        match = re.match(r"\s*[+-]?[0-9]+", value)
        return int(match.group()) if match else 0
    if isinstance(value, (list, dict)):
        return 1 if value else 0
    return 0


def loose_equals_int(number: int, value: Any) -> bool:
    """PHP 8 ``$number == $value`` for an int on the left."""
    if isinstance(value, bool):
        return bool(number) == value
    if isinstance(value, (int, float)):
        return number == value
    if value is None:
        return number == 0
    if isinstance(value, str):
        ident = sql_id(value)
        return ident == number if ident is not None else str(number) == value
    return False


def valid_path_id(value: Any) -> int | None:
    """The id FileModel::generatePath accepts (numeric and > 0), else None (it then throws)."""
    if isinstance(value, bool):
        return None
    ident = sql_id(value)
    if ident is None or ident <= 0:
        return None
    return ident


def to_php_string(value: Any) -> str:
    """PHP's string conversion of a scalar; arrays raise :class:`PhpTypeError` like PHP 8 does."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    raise PhpTypeError(f"cannot convert {type(value).__name__} to string")


def base64_decode(blob: str) -> bytes:
    """PHP ``base64_decode($blob)`` in non-strict mode (kanboard-api §5).

    Characters outside the standard alphabet (including ``=``, whitespace and the URL-safe ``-_``)
    are dropped, missing padding is fine, and a dangling single character is ignored.
    """
    raw = blob.encode("utf-8", "surrogatepass")
    clean = raw.translate(None, _B64_DROP)
    rest = len(clean) % 4
    if rest == 1:
        clean = clean[:-1]
    elif rest:
        clean += b"=" * (4 - rest)
    if not clean:
        return b""
    try:
        return binascii.a2b_base64(clean, strict_mode=False)
    except binascii.Error:  # pragma: no cover - translate() left only valid characters
        return b""


def is_empty_content(data: bytes) -> bool:
    """PHP ``empty($data)``: true for ``""`` and the one-byte string ``"0"`` (kanboard-api §5)."""
    return data in (b"", b"0")
