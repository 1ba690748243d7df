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

__all__ = ["SPIN_COUNT", "main", "openmp_wait_defaults"]

#: Spin iterations of an idle GNU OpenMP thread before it sleeps (libgomp's own default: 300,000).
#: Measured on 2 cores (``benchmarks/bench_wait_policy.py``): short enough that two threads beside
#: busy processes do not collapse (the default spin made a check 2.7x slower than this), long enough
#: that back-to-back small parallel regions do not pay a wake-up each (``OMP_WAIT_POLICY=PASSIVE``
#: made the same check 1.6x slower idle).
SPIN_COUNT = 3000

#: Variables by which a user chooses the wait behaviour; any of them set means: leave it alone.
USER_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def openmp_wait_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set ``GOMP_SPINCOUNT`` = :data:`SPIN_COUNT` unless the user chose a wait behaviour.

    Must run before torch is imported (GNU OpenMP, which torch's Linux wheels use, reads the
    variable when it loads).  Other OpenMP runtimes ignore the variable and keep their defaults.
    Returns what was set (empty when a variable of :data:`USER_WAIT_VARIABLES` was already set).
    """
    env = os.environ if environ is None else environ
    if any(v in env for v in USER_WAIT_VARIABLES):
        return {}
    env["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return {"GOMP_SPINCOUNT": str(SPIN_COUNT)}


def main(argv: Sequence[str] | None = None) -> int:
    """Set the OpenMP wait defaults before torch loads, then run :func:`verify.cli.main.main`."""
    openmp_wait_defaults()
    from verify.cli.main import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
