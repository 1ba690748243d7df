"""Keep NumPy/SciPy's OpenBLAS from fighting torch's OpenMP pool for the same cores.

When scipy routines (L-BFGS-B, ARPACK) are called between torch kernels, OpenBLAS worker threads
spin-wait after each call and starve torch's threads: on 2 cores this made the factored NUC solver
20x slower (measured: 1.9 s vs 0.09 s at m = n = 64).  SciPy's share of the work in our solvers is
vector bookkeeping, so one BLAS thread costs nothing.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from threadpoolctl import threadpool_limits

__all__ = ["scipy_blas_single_thread"]


def scipy_blas_single_thread() -> AbstractContextManager[object]:
    """Context manager limiting the BLAS libraries loaded by numpy/scipy to one thread."""
    return threadpool_limits(limits=1, user_api="blas")
