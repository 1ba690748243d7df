"""The ``loracheck`` console script: the process's OpenMP settings first, then the command line.

OpenMP reads its wait settings once, when torch loads its runtime, and every module of the
packages imports torch; so they are set here, before anything else is imported
(:func:`openmp_wait_defaults`).  The thread counts are decided later, per piece of work
(:mod:`landscapes.threads`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence

__all__ = ["SPIN_COUNT", "USER_WAIT_VARIABLES", "main", "openmp_wait_defaults"]

#: Spin iterations of an idle GNU OpenMP thread before it sleeps (libgomp's own default: 300,000).
#: Measured on 2 cores with ``benchmarks/bench_wait_policy.py`` (docs/threads.md), a two-thread
#: check of many small products: idle, the fastest setting (``OMP_WAIT_POLICY=PASSIVE`` 1.32x,
#: the default 1.08x); beside busy processes 1.3-1.4x ``PASSIVE``, where the default spin is
#: 4.9-12.9x.  The thread policy gives a check one thread when the machine is busy at its start,
#: so the second case is load that arrives during a check.
SPIN_COUNT = 3000

#: Variables by which a user chooses how idle OpenMP threads wait; any of them set means: leave
#: all of them alone.  (The same names as ``landscapes.threads.WAIT_VARIABLES``, which imports torch.)
USER_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def openmp_wait_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set how idle OpenMP threads wait, unless the user chose (:data:`USER_WAIT_VARIABLES`).

    * ``GOMP_SPINCOUNT`` = :data:`SPIN_COUNT`, for GNU OpenMP (the runtime of torch's Linux wheels);
    * ``KMP_BLOCKTIME=0``, for LLVM and Intel OpenMP (torch's macOS and Windows wheels, some conda
      builds): their threads sleep at once, as under ``OMP_WAIT_POLICY=PASSIVE``.  A short spin
      was not measured there.

    Each runtime ignores the other's variable.  Must run before torch is imported.  Returns what was
    set (empty when the user had set one of the variables).
    """
    env = os.environ if environ is None else environ
    if any(v in env for v in USER_WAIT_VARIABLES):
        return {}
    chosen = {"GOMP_SPINCOUNT": str(SPIN_COUNT), "KMP_BLOCKTIME": "0"}
    env.update(chosen)
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Set the OpenMP wait defaults before torch loads, then run :func:`verify.cli.main.main`."""
    openmp_wait_defaults()
    from verify.cli.main import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
