"""The ``loracheck`` console script: the process's OpenMP settings first, then the command line.

OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads its runtime, and every module of the
packages imports torch; so the variable is set here, before anything else is imported.  ``PASSIVE``
makes idle pool threads sleep instead of spinning: with spinning threads a 384 x 384 NUC solve took
56 s instead of 5 s beside a benchmark on 2 cores.  A user's own setting wins.  The thread counts are
decided later, per piece of work (:mod:`landscapes.threads`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Set ``OMP_WAIT_POLICY`` (unless set) before torch loads, then run :func:`verify.cli.main.main`."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from verify.cli.main import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
