"""Reading JSON files that a user hands in (reports, audits, results to resume or draw) safely.

``json.loads`` recurses once per nesting level, so a 200 kB file of nested brackets raises
``RecursionError`` (not a ``ValueError``), and ``Path.read_text`` reads any size into memory.
:func:`read_json` bounds the size and turns every way a file can fail to be JSON into a
:class:`~theory.errors.UserInputError` naming the argument and the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from theory.errors import UserInputError

__all__ = ["read_json", "MAX_JSON_BYTES"]

#: Largest JSON file read (the default suite's report is about 0.3 MB; a KKR run file a few MB).
MAX_JSON_BYTES = 256 * 2**20


def read_json(
    path: str | os.PathLike[str],
    *,
    what: str,
    max_bytes: int = MAX_JSON_BYTES,
) -> Any:
    """The JSON value in ``path``; ``what`` names the argument in errors (e.g. ``"--from"``).

    Refused with :class:`~theory.errors.UserInputError`, before parsing where possible: a missing
    or unreadable file, more than ``max_bytes`` bytes (checked before reading), text that is not
    UTF-8, invalid JSON, nesting deeper than the parser's recursion limit, and the non-standard
    constants ``NaN``/``Infinity`` (the package never writes them).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise UserInputError(
                f"{what}: expected a JSON file of at most {max_bytes} bytes, got {str(p)!r} of {size} bytes"
            )
        with p.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise UserInputError(f"{what}: expected a readable JSON file, got {str(p)!r} ({exc})") from None
    if len(raw) > max_bytes:  # the file grew after stat
        raise UserInputError(f"{what}: expected a JSON file of at most {max_bytes} bytes, got {str(p)!r}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{what}: expected UTF-8 JSON text in {str(p)!r} ({exc})") from None
    def constant(name: str) -> Any:
        raise ValueError(f"the non-standard constant {name}")

    try:
        return json.loads(text, parse_constant=constant)
    except (ValueError, RecursionError) as exc:
        raise UserInputError(f"{what}: expected JSON data in {str(p)!r} ({exc})") from None
