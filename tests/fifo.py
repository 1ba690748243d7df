"""Reading a FIFO in a test without hanging the test run when the reader blocks."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest


def read_without_blocking(fifo: Path, read: Callable[[], object], what: str) -> object:
    """``read()``'s result or the exception it raised; fails the test if it blocks on ``fifo``.

    ``read`` runs in a thread; after 30 s it counts as blocked (a reader waiting for a writer that
    never comes): a writer is opened to release it, and the test fails naming ``what``.
    """
    result: list[object] = []

    def run() -> None:
        try:
            result.append(read())
        except Exception as exc:  # handed to the test's thread
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(30)
        pytest.fail(f"{what} blocked on a FIFO")
    return result[0]
