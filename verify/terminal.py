r"""Text for a terminal: input-derived strings are shown, never executed by the terminal.

Problem names, adapter module names, file names and the reasons that quote them come from files a
user may not have written. A control character in them (an ANSI escape sequence ``\x1b[...``, a
carriage return, a backspace, a bidirectional override such as U+202E) would let such a file
recolour, move or overwrite what the terminal shows, e.g. turn a printed ``violated`` into
``holds``. :func:`printable` escapes them, visibly; the command line passes everything it prints
through it.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

__all__ = ["printable", "PrintableStream"]

# C0 controls except tab and newline, DEL and the C1 controls, and the Unicode format characters
# that reorder or hide text (bidirectional marks, embeddings, overrides and isolates; zero-width).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str) -> str:
    r"""``text`` with every control and bidirectional-format character shown as ``\xNN``/``\uNNNN``.

    Tabs and newlines are kept; everything else a terminal would interpret rather than display
    (ESC, CR, BS, BEL, DEL, C1 controls, U+200B-U+200F, U+202A-U+202E, U+2060-U+2069, U+FEFF) is
    escaped, so the escaped text has the same visible meaning on every terminal.
    """
    return _CONTROL.sub(_escape, text)


class PrintableStream:
    """A text stream that writes :func:`printable` text to ``stream`` (other attributes pass through)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Write ``text`` escaped; returns ``len(text)`` like ``TextIO.write``."""
        self._stream.write(printable(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
