"""Text from elsewhere made safe to show: control characters become visible escapes.

A server (or anyone who can write a status file) chooses error messages, file names and
``last_error`` texts. Written raw to a terminal, ``\\x1b[2J`` clears it and other escape
sequences move the cursor, retitle the window or fake a line of output; written raw to the
log, a newline forges a log entry. So every such text goes through :func:`printable` before
it reaches a terminal or the log: the logging formatter (:class:`SafeFormatter`) does it for
every message, the commands for what they print.

Escaped: C0 controls (tab and newline included: one message is one line), DEL, C1 controls
(U+0080..U+009F, which some terminals obey like ESC sequences), the bidirectional overrides
that can make text read in another order than it is stored, and lone surrogates (bytes that
were not UTF-8). Everything else, any script or emoji, is shown as it is.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` (or its ``str()``) with every control character written as an escape."""
    return _UNSAFE.sub(_escape, text if isinstance(text, str) else str(text))


def printable_lines(text: str) -> str:
    """:func:`printable` for each line of a text that is meant to have several lines."""
    return "\n".join(printable(line) for line in text.split("\n"))


def printable_tree(value: Any) -> Any:
    """A JSON-like value with every string in it (keys too) made :func:`printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_tree(k): printable_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_tree(v) for v in value]
    return value


class SafeFormatter(logging.Formatter):
    """A formatter whose messages are :func:`printable`; tracebacks keep their line breaks."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return printable_lines(super().formatException(ei))
