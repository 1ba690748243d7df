"""Reading JSON files that a user hands in (reports, audits, results to resume or draw) safely.

``json.loads`` recurses once per nesting level, so a 200 kB file of nested brackets raises
``RecursionError`` (not a ``ValueError``), and ``Path.read_text`` reads any size into memory (a
FIFO or ``/dev/zero`` never ends). :func:`read_json` reads only regular files, bounds the size and
the nesting depth (code that walks the data recursively later, such as re-serialising a resumed
verdict, stays far from Python's recursion limit), and turns every way a file can fail to be JSON
into a :class:`~theory.errors.UserInputError` naming the argument and the file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from landscapes.io import json_depth
from theory.errors import UserInputError

__all__ = ["read_json", "read_regular_file", "json_depth", "MAX_JSON_BYTES", "MAX_JSON_DEPTH"]

#: Largest JSON file read (the default suite's report is about 0.3 MB; a KKR run file a few MB).
MAX_JSON_BYTES = 256 * 2**20
#: Deepest nesting read (a scalar has depth 1, ``[1]`` depth 2). The package's own files are at
#: most 10 deep (measured: kkr.json 10, speed.json 9, report.json and experiment.json 8, an audit
#: --json file 7); ``verify.verdict.jsonable`` recurses two frames per level, so 64 keeps any
#: later walk of the data far below Python's recursion limit of 1000.
MAX_JSON_DEPTH = 64


def read_regular_file(
    path: str | os.PathLike[str], *, what: str, max_bytes: int, noun: str = "file"
) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    ``what`` names the argument in errors, ``noun`` the kind of file expected (``"JSON file"``).

    Anything else (a directory, a FIFO, a device such as ``/dev/zero``, a socket) is refused
    before a byte is read: the file is opened non-blocking (opening a FIFO never waits for a
    writer) and checked with ``fstat`` on the open descriptor (no race with a rename). A file
    larger than ``max_bytes`` (by its size, or growing while it is read) is refused too.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UserInputError(f"{what}: expected a readable {noun}, got {str(p)!r} ({exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserInputError(f"{what}: expected a regular {noun}, got {str(p)!r} (not a regular file)")
        if st.st_size > max_bytes:
            raise UserInputError(
                f"{what}: expected a {noun} of at most {max_bytes} bytes, "
                f"got {str(p)!r} of {st.st_size} bytes"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise UserInputError(f"{what}: expected a readable {noun}, got {str(p)!r} ({exc})") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:  # the file grew after fstat
        raise UserInputError(
            f"{what}: expected a {noun} of at most {max_bytes} bytes, got {str(p)!r} of more"
        )
    return raw


def read_json(
    path: str | os.PathLike[str],
    *,
    what: str,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """The JSON value in ``path``; ``what`` names the argument in errors (e.g. ``"--from"``).

    Refused with :class:`~theory.errors.UserInputError`, before parsing where possible: a missing
    or unreadable file, anything but a regular file (:func:`read_regular_file`), more than
    ``max_bytes`` bytes, text that is not UTF-8, invalid JSON, nesting deeper than ``max_depth``
    (:data:`MAX_JSON_DEPTH`), and the non-standard constants ``NaN``/``Infinity`` (the package
    never writes them).
    """
    p = Path(path)
    raw = read_regular_file(p, what=what, max_bytes=max_bytes, noun="JSON file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{what}: expected UTF-8 JSON text in {str(p)!r} ({exc})") from None

    def constant(name: str) -> Any:
        raise ValueError(f"the non-standard constant {name}")

    try:
        data = json.loads(text, parse_constant=constant)
    except RecursionError:
        raise UserInputError(
            f"{what}: expected JSON nested at most {max_depth} deep in {str(p)!r}, got nesting deeper than "
            "Python's recursion limit"
        ) from None
    except ValueError as exc:
        raise UserInputError(f"{what}: expected JSON data in {str(p)!r} ({exc})") from None
    depth = json_depth(data)
    if depth > max_depth:
        raise UserInputError(
            f"{what}: expected JSON nested at most {max_depth} deep in {str(p)!r}, got depth {depth}"
        )
    return data
