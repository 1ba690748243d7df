"""Stop requests as interrupts: SIGTERM and SIGHUP end a command the way Ctrl-C does.

``kill PID``, ``timeout``, batch schedulers and a closed terminal send SIGTERM or SIGHUP, whose
default action kills the process at once: a sweep's pool workers would be left running, and the
verdicts computed since the last write would be lost. Inside :func:`stop_signals_as_interrupt` they
raise :class:`Terminated`, a ``KeyboardInterrupt``, so every command's Ctrl-C path (commit what is
finished, shut executors down, print where the results are) runs for them too; the command line
then exits with ``128 + signal number``, as a shell reports a process killed by that signal.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Terminated", "stop_signals_as_interrupt", "STOP_SIGNALS", "exit_code"]

#: The signals handled like SIGINT (those that exist on this platform).
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Terminated(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP) received by the main thread; ``signum`` is its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = int(signum)


def exit_code(exc: KeyboardInterrupt) -> int:
    """``128 + n`` for the signal ``n`` that interrupted: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def _raise(signum: int, frame: FrameType | None) -> None:
    for s in STOP_SIGNALS:  # the cleanup this request starts is not interrupted by a second one
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


@contextmanager
def stop_signals_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    The previous handlers are restored on exit, and a second stop signal during the cleanup that the
    first one started is ignored (the cleanup finishes). Outside the main thread (where Python
    cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
