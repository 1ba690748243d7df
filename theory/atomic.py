"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Shared by every package that writes results (``landscapes.io`` for problem files, ``verify`` for
reports and resumable results, ``figures`` for the gallery); it sits in ``theory`` because that is
the one package all of them may import.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_text", "FILE_MODE"]


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


#: Permissions of written files: what ``open()`` would give under the current umask.
FILE_MODE = _default_file_mode()


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a temporary file next to ``path``, then move it into place.

    ``os.replace`` is atomic on one file system: readers see the old file or the new one, and a
    killed writer leaves no half-written file (the temporary file is removed on any error; only a
    ``SIGKILL`` can leave a hidden ``.<name>.*.tmp`` behind, never a partial ``path``).  The data
    is flushed and ``fsync``-ed before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; a result file is readable like any other
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
