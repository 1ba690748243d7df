r"""The data of the [JLR24] phase diagram: how often LoRA training ends at the global minimum.

For each cell ``(r, K, N)`` of a grid, a synthetic problem (one per ``(K, N)``, Gaussian ``J``) is
solved once to a certified NUC optimum :math:`P^\star`; then ``runs`` LoRA trainings at rank ``r``
(L-BFGS with negative-curvature escapes, :func:`landscapes.sosp.find_sosp`) start from diverse
inits.  A run *ends at a global minimum* when its objective is within
``gap_rtol * max(1, |P*|)`` of :math:`P^\star` (then its product is a NUC minimizer); a run that ends
at a *certified SOSP* above that is a certified spurious point (for ``r`` at least the rank of the
NUC minimizer, where the global LoRA minimum equals :math:`P^\star`).  The theory predicts 100%
global convergence above the curve :math:`r(r+1)/2 = KN`.

The results are JSON (schema ``loracheck.phase/1``), rewritten atomically after every cell so an
interrupted sweep keeps its finished cells; the figure is drawn by ``figures`` from this file.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from landscapes.io import atomic_write
from landscapes.nuc import solve_nuc
from landscapes.sosp import find_sosp, make_init
from landscapes.synthetic import gaussian_problem
from theory.bounds import r_max, triangular

__all__ = ["PHASE_SCHEMA", "phase_sweep", "DEFAULT_KN", "DEFAULT_RANKS"]

PHASE_SCHEMA = "loracheck.phase/1"
DEFAULT_KN: tuple[tuple[int, int], ...] = ((1, 3), (1, 6), (1, 10), (1, 15), (2, 10), (1, 28))
DEFAULT_RANKS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)


def phase_sweep(
    *,
    kn: Sequence[tuple[int, int]] = DEFAULT_KN,
    ranks: Sequence[int] = DEFAULT_RANKS,
    size: int = 12,
    runs: int = 6,
    loss: str = "squared",
    lam: float = 1e-3,
    inits: Sequence[str] = ("gaussian", "large", "small", "adversarial"),
    gap_rtol: float = 1e-8,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run the sweep; return (and, with ``out``, write) the phase data.

    Parameters
    ----------
    kn
        ``(K, N)`` pairs; one problem each (``m = n = size``).
    ranks
        LoRA ranks ``r`` (capped at ``size``).
    size
        ``m = n`` of the adapted matrix.
    runs
        Trainings per cell, cycling through ``inits`` (start kinds of :func:`landscapes.sosp.make_init`).
    inits
        Start kinds.
    loss, lam
        Loss name and weight decay of the problems.
    gap_rtol
        A run is global when its objective is within ``gap_rtol * max(1, |P*|)`` of the NUC optimum.
    seed
        Seeds the problems and the starts.
    out
        JSON file, rewritten atomically after every cell.
    progress
        tqdm bar (``None``: only on a terminal).
    """
    from tqdm.auto import tqdm

    if not kn or any(len(p) != 2 or int(p[0]) < 1 or int(p[1]) < 1 for p in kn):
        raise ValueError(f"kn: expected non-empty (K, N) pairs of positive ints, got {list(kn)!r}")
    if not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks):
        raise ValueError(f"ranks: expected positive ints, got {list(ranks)!r}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs: expected a positive int, got {runs!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive int, got {size!r}")
    t0 = time.perf_counter()
    data: dict[str, Any] = {
        "schema": PHASE_SCHEMA,
        "config": {
            "kn": [list(p) for p in kn],
            "ranks": list(ranks),
            "size": size,
            "runs": runs,
            "loss": loss,
            "lam": lam,
            "inits": list(inits),
            "gap_rtol": gap_rtol,
            "seed": seed,
        },
        "curve": [{"KN": K * N, "r_max": r_max(K, N)} for K, N in kn],
        "cells": [],
        "complete": False,
    }
    bar = tqdm(
        total=len(kn) * len(ranks),
        desc="phase",
        unit="cell",
        disable=None if progress is None else not progress,
    )
    try:
        for pi, (K, N) in enumerate(kn):
            P = gaussian_problem(K=K, N=N, blocks=[(size, size)], lam=lam, loss=loss, seed=seed * 1000 + pi)
            nuc = solve_nuc(P, gap_rtol=min(1e-10, 0.01 * gap_rtol))
            primal, dual = nuc.certificate.primal, nuc.certificate.dual
            tol = gap_rtol * max(1.0, abs(primal))
            for r in ranks:
                rr = min(r, size)
                ends: list[dict[str, Any]] = []
                for i in range(runs):
                    kind = inits[i % len(inits)]
                    if kind == "adversarial" and rr == 1:
                        kind = "large"
                    gen = torch.Generator().manual_seed(seed * 7919 + pi * 131 + r * 17 + i)
                    run = find_sosp(P, make_init(P, [rr], kind, generator=gen), seed=i)  # type: ignore[arg-type]
                    c = run.certificate
                    excess = c.objective - primal
                    ends.append(
                        {
                            "init": kind,
                            "objective_minus_nuc": excess,
                            # global: within tol of the certified lower bound (NUC dual value)
                            "global": c.objective - dual <= tol,
                            "certified_sosp": c.is_sosp,
                            "product_rank": c.product_ranks[0],
                            "S_op_over_lam": c.S_op[0] / P.lam[0],
                        }
                    )
                n_glob = sum(e["global"] for e in ends)
                # spurious: a certified SOSP above the NUC primal value (an upper bound on P*)
                spurious = sum(e["certified_sosp"] and e["objective_minus_nuc"] > tol for e in ends)
                data["cells"].append(
                    {
                        "r": rr,
                        "K": K,
                        "N": N,
                        "KN": K * N,
                        "r(r+1)/2": triangular(rr),
                        "above_bound": triangular(rr) > K * N,
                        "nuc_rank": nuc.ranks[0],
                        "nuc_rel_gap": nuc.certificate.rel_gap,
                        "runs": runs,
                        "global": n_glob,
                        "fraction_global": n_glob / runs,
                        "certified_sosp": sum(e["certified_sosp"] for e in ends),
                        "certified_spurious": spurious if rr >= nuc.ranks[0] else None,
                        "ends": ends,
                    }
                )
                data["seconds"] = time.perf_counter() - t0
                if out is not None:
                    _write(data, out)
                bar.update(1)
    finally:
        bar.close()
    data["complete"] = True
    data["seconds"] = time.perf_counter() - t0
    above = [c for c in data["cells"] if c["above_bound"]]
    data["summary"] = {
        "cells": len(data["cells"]),
        "runs_above_bound": sum(c["runs"] for c in above),
        "global_above_bound": sum(c["global"] for c in above),
        "certified_spurious_above_bound": sum(c["certified_spurious"] or 0 for c in above),
        "certified_spurious_below_bound": sum(
            c["certified_spurious"] or 0 for c in data["cells"] if not c["above_bound"]
        ),
    }
    if out is not None:
        _write(data, out)
    return data


def _write(data: dict[str, Any], out: str | Path) -> Path:
    text = json.dumps(data, indent=1, allow_nan=False, default=_default).encode()
    return atomic_write(Path(out), lambda fh: fh.write(text))


def _default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(f"not JSON serializable: {type(x).__name__}")
