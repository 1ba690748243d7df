r"""The data of the landscape-slice figures: the LoRA objective around two points of one problem.

Format ``loracheck.slices``, version 1 (plain JSON, :mod:`verify.results`; drawn by :mod:`figures.slices`):

* around the **zero point** :math:`U = V = 0` (a strict saddle whenever
  :math:`\|\nabla L(0)\|_{op} > \lambda`, JLR-zero-saddle): a 1-D slice along the Hessian's
  most negative eigenvector, and a 2-D slice along it and a random direction;
* around a **trained point** (L-BFGS at rank ``r`` from a small random start, certified by the
  NUC optimum): 1-D slices along a random direction, the Hessian's smallest-eigenvalue direction,
  and the straight line from a random start to the point; and a 2-D slice along two random
  directions;
* the full **Hessian spectrum** of :math:`F` at both points (dense ``eigvalsh``), with the closed
  form :math:`\lambda_{\min} = \lambda - \|\nabla L(0)\|_{op}` at zero for comparison.

Directions are normalized LoRA-aware (:mod:`landscapes.slices`) unless another normalization is
asked for; at the zero point, where every factor has size 0, each direction factor has unit norm.
"""

from __future__ import annotations

from typing import Any

import torch

from landscapes.curvature.dense import lora_hessian
from landscapes.lora import LoRAPoint, lora_value, minimize_lora, random_factors
from landscapes.nuc import solve_nuc
from landscapes.problem import Problem
from landscapes.slices import (
    Normalization,
    hessian_directions,
    normalize_direction,
    random_direction,
    slice_grid,
)
from theory.bounds import r_max
from theory.errors import UserInputError, finite_number

__all__ = ["SLICES_FORMAT", "SLICES_VERSION", "landscape_slices"]

#: Data written before the ``version`` key said ``"schema": "loracheck.slices/1"`` (still drawn).
SLICES_FORMAT = "loracheck.slices"
SLICES_VERSION = 1


def _grid(n: int, span: float) -> list[float]:
    return [(-span + 2.0 * span * i / (n - 1)) for i in range(n)]


def _spectrum(problem: Problem, center: LoRAPoint, name: str) -> dict[str, Any]:
    """The LoRA Hessian's eigenvalues at ``center`` (dense, closed form)."""
    ev = torch.linalg.eigvalsh(lora_hessian(problem, center.U, center.V))
    return {"center": name, "eigenvalues": ev.tolist()}


def landscape_slices(
    problem: Problem,
    *,
    rank: int | None = None,
    seed: int = 0,
    n_1d: int = 61,
    n_2d: int = 31,
    span: float = 1.0,
    normalization: Normalization = "lora",
) -> dict[str, Any]:
    """Compute the slice data (see the module docstring); plain JSON data.

    ``rank`` defaults to ``r_max(K, N) + 1`` (one rank for every block); the grids run over
    ``[-span, span]`` with ``n_1d`` and ``n_2d`` points (the line to the trained point over
    ``[-0.25, 1.25]``).
    """
    for name, v, low in (("n_1d", n_1d, 3), ("n_2d", n_2d, 3)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise UserInputError(f"{name}: expected an int >= {low}, got {v!r}")
    if not (isinstance(span, (int, float)) and finite_number(span) and span > 0):
        raise UserInputError(f"span: expected a positive number, got {span!r}")
    r = r_max(problem.K, problem.N) + 1 if rank is None else rank
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise UserInputError(f"rank: expected a positive int, got {rank!r}")
    ranks = [min(r, m, n) for m, n in problem.blocks]
    g = torch.Generator().manual_seed(seed)
    sol = solve_nuc(problem, gap_rtol=1e-10, seed=seed)
    trained = minimize_lora(problem, rank=ranks, seed=seed, max_iter=5000).point
    start = random_factors(problem, ranks, scale=1.0, generator=g)
    zero = LoRAPoint(
        tuple(torch.zeros_like(u) for u in trained.U), tuple(torch.zeros_like(v) for v in trained.V)
    )
    a1, a2 = _grid(n_1d, span), _grid(n_2d, span)
    # the line from the start to the trained point, with alpha = 0 and 1 exactly on the grid
    line = sorted({-0.25 + 1.5 * i / (n_1d - 1) for i in range(n_1d)} | {0.0, 1.0})

    def norm(center: LoRAPoint, d: LoRAPoint) -> LoRAPoint:
        return normalize_direction(center, d, normalization=normalization)

    zmin, _ = hessian_directions(problem, zero)
    tmin, _ = hessian_directions(problem, trained)
    slices_1d = [
        {
            "center": "zero",
            "direction": "hessian-min",
            "label": "at U = V = 0, along the most negative curvature",
            "alphas": a1,
            "values": slice_grid(problem, zero, zmin, alphas=a1).tolist(),
        },
        {
            "center": "trained",
            "direction": "random",
            "label": "at the trained point, along a random direction",
            "alphas": a1,
            "values": slice_grid(
                problem, trained, norm(trained, random_direction(trained, generator=g)), alphas=a1
            ).tolist(),
        },
        {
            "center": "trained",
            "direction": "hessian-min",
            "label": "at the trained point, along its smallest-curvature direction",
            "alphas": a1,
            "values": slice_grid(problem, trained, norm(trained, tmin), alphas=a1).tolist(),
        },
        {
            "center": "start",
            "direction": "toward-trained",
            "label": "from a random start (alpha = 0) to the trained point (alpha = 1)",
            "alphas": line,
            "values": slice_grid(
                problem,
                start,
                LoRAPoint(
                    tuple(t - s for t, s in zip(trained.U, start.U)),
                    tuple(t - s for t, s in zip(trained.V, start.V)),
                ),
                alphas=line,
            ).tolist(),
        },
    ]
    slices_2d = []
    for center, name in ((zero, "zero"), (trained, "trained")):
        if name == "zero":  # the saddle: its most negative curvature against a random direction
            d1, kinds = zmin, ["most negative curvature", "random"]
        else:
            d1, kinds = norm(center, random_direction(center, generator=g)), ["random", "random"]
        d2 = norm(center, random_direction(center, generator=g))
        slices_2d.append(
            {
                "center": name,
                "directions": kinds,
                "label": f"at the {name} point: {kinds[0]} vs {kinds[1]} direction",
                "alphas": a2,
                "betas": a2,
                "values": slice_grid(problem, center, d1, d2, alphas=a2, betas=a2).tolist(),
            }
        )
    spectra = [_spectrum(problem, center, name) for center, name in ((zero, "zero"), (trained, "trained"))]
    S0 = problem.evaluate(problem.zeros()).S
    closed = min(lam - float(torch.linalg.matrix_norm(S, ord=2)) for lam, S in zip(problem.lam, S0))
    return {
        "format": SLICES_FORMAT,
        "version": SLICES_VERSION,
        "hessian_spectra": spectra,
        "zero_lambda_min_closed_form": closed,
        "problem": problem.fingerprint(),
        "rank": ranks,
        "r_max": r_max(problem.K, problem.N),
        "normalization": normalization,
        "seed": seed,
        "nuc_optimum": sol.certificate.primal,
        "nuc_rel_gap": sol.certificate.rel_gap,
        "trained_objective": lora_value(problem, trained.U, trained.V),
        "zero_objective": lora_value(problem, zero.U, zero.V),
        "slices_1d": slices_1d,
        "slices_2d": slices_2d,
    }
