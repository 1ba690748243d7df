r"""Text for a terminal: input-derived strings are shown, never executed by the terminal.

Problem names, adapter module names, file names and the reasons that quote them come from files a
user may not have written. A control character in them (an ANSI escape sequence ``\x1b[...``, a
carriage return, a backspace, a bidirectional override such as U+202E or mark such as U+061C, a
line separator U+2028) would let such a file recolour, move, reorder or overwrite what the terminal
shows, e.g. turn a printed ``violated`` into ``holds``; a lone surrogate (U+D800-U+DFFF: a JSON
``"\ud800"`` escape, or a file name that is not UTF-8, which Python decodes with
``surrogateescape``) cannot be encoded at all and would make a strict UTF-8 stdout raise.
:func:`printable` escapes them, visibly; the command line passes everything it prints through it
(:class:`PrintableStream` around stdout).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, TextIO

__all__ = ["printable", "PrintableStream", "ReaderGone"]

# Everything outside printable ASCII (and tab, newline) is looked at character by character.
_SUSPECT = re.compile("[^\t\n\x20-\x7e]+")


def _escape(c: str) -> str:
    o = ord(c)
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def _shown(c: str) -> str:
    # str.isprintable is False exactly for the categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs (but
    # the ASCII space); spaces (Zs) are displayed as spaces, so they are kept.
    if c.isprintable() or unicodedata.category(c) == "Zs":
        return c
    return _escape(c)


def _escape_run(m: re.Match[str]) -> str:
    run = m.group()
    return run if run.isprintable() else "".join(map(_shown, run))


def printable(text: str) -> str:
    r"""``text`` with every character a terminal would not simply display shown as an escape.

    Escaped (as ``\xNN``, ``\uNNNN`` or ``\UNNNNNNNN``): every character of the Unicode
    categories

    * Cc, control characters (ESC, CR, BS, BEL, DEL, the C1 controls), but tab and newline;
    * Cf, format characters: bidirectional marks, embeddings, overrides and isolates (U+061C,
      U+200E, U+202A-U+202E, U+2066-U+2069), zero-width characters (U+200B-U+200D, U+2060,
      U+FEFF), the soft hyphen U+00AD, U+180E, the tag characters U+E0000-U+E007F;
    * Zl, Zp: the line and paragraph separators U+2028, U+2029 (a terminal may break the line);
    * Cs: lone surrogates, which no UTF-8 stream can encode;
    * Co, private use: no standard glyph, a font may draw anything there (a file name or
      problem name never needs one);
    * Cn, unassigned in this Python's Unicode database: a later Unicode version may assign a
      format character there that the terminal honours (an emoji newer than the database is
      shown escaped, still legible).

    Letters and marks of any script, digits, punctuation, symbols, emoji and spaces are kept, so
    the escaped text has the same visible meaning on every terminal.
    """
    return _SUSPECT.sub(_escape_run, text)


class ReaderGone(Exception):
    """The reader of a :class:`PrintableStream` went away: a closed pipe (``loracheck claims | head``).

    Raised instead of the stream's ``BrokenPipeError``, so that a broken pipe elsewhere (a FIFO
    given as an output file) stays an error of the environment.
    """


class PrintableStream:
    """A text stream that writes :func:`printable` text to ``stream`` (other attributes pass through).

    Writing never fails on encoding: text the stream's encoding cannot represent (``λ`` on an
    ASCII stdout) is written with ``backslashreplace``.  A closed pipe raises :class:`ReaderGone`.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Write ``text`` escaped; returns ``len(text)`` like ``TextIO.write``."""
        shown = printable(text)
        try:
            try:
                self._stream.write(shown)  # a text stream encodes the whole string before writing any
            except UnicodeEncodeError:
                encoding = getattr(self._stream, "encoding", None) or "ascii"
                self._stream.write(shown.encode(encoding, "backslashreplace").decode(encoding, "replace"))
        except BrokenPipeError as exc:
            raise ReaderGone(str(exc)) from exc
        return len(text)

    def flush(self) -> None:
        """Flush the stream (:class:`ReaderGone` on a closed pipe)."""
        try:
            self._stream.flush()
        except BrokenPipeError as exc:
            raise ReaderGone(str(exc)) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
