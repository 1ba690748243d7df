r"""Checkers of the rank-bound claims of [JLR24] (Jang, Lee, Ryu, ICML 2024).

Every checker takes a :class:`~landscapes.problem.Problem` and keyword-only options and returns a
:class:`~verify.verdict.Verdict`.  The quantitative part of each claim is an option (a rank bound,
a factor, a predicted eigenvalue) so that a *planted false variant* of the claim can be run
through exactly the same code and must come out ``violated``.

``violated`` needs a certificate that no admissible object satisfies the (variant) claim: for
rank claims, a certified optimum plus a certificate that the minimizer is unique (see
:mod:`landscapes.uniqueness`), so its rank is the minimal rank.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscapes.curvature.autodiff import AutodiffHessian, lora_hessian_dense
from landscapes.full_ft import FTSolution, solve_ft
from landscapes.lora import LoRAPoint, LoRATrainingResult, balanced_factors, lora_value, minimize_lora
from landscapes.nuc import NucSolution, nuc_certificate, solve_nuc, truncate_to_numerical_rank
from landscapes.operators import DenseOperator
from landscapes.problem import Blocks, Problem
from landscapes.rank_reduction import reduce_rank
from landscapes.uniqueness import UniquenessCertificate, ft_uniqueness, nuc_uniqueness
from theory.bounds import r_max, triangular
from theory.claims import DEFAULT_TOLERANCES
from theory.errors import UserInputError
from verify.checker import Judge, checker, fields, needs_float64, save_counterexample
from verify.options import ANY, BOOL, RANK_BOUND, SEED, TOL, Function, Int, Rank, Real
from verify.verdict import Verdict

__all__ = [
    "check_jlr_rank_ft",
    "check_jlr_rank_nuc",
    "check_jlr_rank_blocks",
    "check_jlr_equiv",
    "check_jlr_magnitude",
    "check_jlr_zero_saddle",
]

_T = DEFAULT_TOLERANCES
#: Relative change of predictions allowed in a rank reduction (round-off of O(r) rotations).
PREDICTION_RTOL = 1e-9


def _bound_text(rank_bound: int | None, problem: Problem) -> str:
    if rank_bound is None:
        return f"sum_j r_j(r_j+1)/2 <= KN = {problem.KN}"
    return f"every block rank <= {rank_bound} (variant)"


def _within(ranks: Sequence[int], rank_bound: int | None, KN: int) -> bool:
    if rank_bound is None:
        return sum(triangular(r) for r in ranks) <= KN
    return all(r <= rank_bound for r in ranks)


def _check_bound_option(rank_bound: int | None) -> None:
    if rank_bound is not None and (
        isinstance(rank_bound, bool) or not isinstance(rank_bound, int) or rank_bound < 0
    ):
        raise UserInputError(f"rank_bound: expected None or an int >= 0, got {rank_bound!r}")


def _nuc_solution(problem: Problem, solution: NucSolution | None, gap_rtol: float, seed: int) -> NucSolution:
    if solution is None:
        return solve_nuc(problem, gap_rtol=gap_rtol, seed=seed)
    # Never trust a passed-in certificate: it may belong to another problem.
    D = problem.check_point(solution.D, "solution.D")
    cert = nuc_certificate(problem, D)
    return dataclasses.replace(solution, certificate=cert, converged=cert.within(gap_rtol))


def _tight_uniqueness(
    problem: Problem, D: Blocks, gap: float, *, seed: int, rank_rtol: float
) -> tuple[Blocks, UniquenessCertificate]:
    """Uniqueness certificate of the NUC minimizer, re-solving to a tiny gap if needed.

    Its error bounds scale like sqrt(gap), so when the certificate fails at the given point, or
    its error bound does not resolve every numerical rank, the problem is solved again to a
    relative gap of 1e-13 and certified once more.
    """
    uq = nuc_uniqueness(problem, D, problem.evaluate(D).S, gap=gap)
    if uq.unique and math.isfinite(uq.rank_error):
        # The error bound must also resolve the spectrum (certify every numerical rank).
        numerical = tuple(
            int(
                (
                    torch.linalg.svdvals(Dj)
                    > rank_rtol * max(float(torch.linalg.matrix_norm(Dj, ord=2)), 1e-300)
                ).sum()
            )
            for Dj in D
        )
        if _certified_ranks(D, uq.rank_error) == numerical or gap <= 1e-13 * max(
            1.0, abs(problem.nuc_objective(D))
        ):
            return D, uq
    tight = solve_nuc(problem, gap_rtol=1e-13, seed=seed)
    Dt = truncate_to_numerical_rank(tight.D, rank_rtol)
    ct = nuc_certificate(problem, Dt)
    if ct.gap >= gap:
        return D, uq
    return Dt, nuc_uniqueness(problem, Dt, problem.evaluate(Dt).S, gap=ct.gap)


def _certified_ranks(D: Sequence[Tensor], error: float) -> tuple[int, ...]:
    """Lower bounds on the ranks of a matrix within Frobenius distance ``error`` of ``D`` (Weyl)."""
    if not math.isfinite(error):
        return tuple(0 for _ in D)
    return tuple(int((torch.linalg.svdvals(Dj) > 2.0 * error).sum()) for Dj in D)


# --------------------------------------------------------------------------------------------------
def _ft_uniqueness(
    problem: Problem, ft: FTSolution, rank_bound: int | None, cert: dict[str, Any]
) -> tuple[UniquenessCertificate, bool]:
    """The FT minimizer's uniqueness, and whether its rank is certified above the bound.

    Strong convexity of the squared loss on an injective J: mu = sigma_min(J)^2 / N, so
    ||D - D*||_op <= ||D - D*||_F <= ||grad L(D)|| / mu; by Weyl the (bound+1)-th singular value
    of the unique minimizer D* is at least ours minus that.  ``cert`` gets ``unique``,
    ``injectivity`` and, for the squared loss on a unique minimizer, ``error_bound`` and
    ``sigma_next``.
    """
    assert ft.D is not None
    uq = ft_uniqueness(problem)
    cert.update(unique=uq.unique, injectivity=uq.injectivity)
    margin_ok = False
    if uq.unique and problem.loss.name == "squared":
        smin = float(torch.linalg.svdvals(problem.J.rows())[-1])
        err = ft.grad_norm * problem.N / smin**2
        b = rank_bound if rank_bound is not None else r_max(problem.K, problem.N)
        s_next = max((float(torch.linalg.svdvals(Dj)[b]) for Dj in ft.D if min(Dj.shape) > b), default=0.0)
        cert.update(error_bound=err, sigma_next=s_next)
        margin_ok = s_next > 2 * err
    return uq, margin_ok


@checker(
    "JLR-rank-FT",
    options={"rank_bound": RANK_BOUND, "grad_rtol": TOL, "rank_rtol": TOL},
    certificate={
        "holds": [("r_max", "KN", "ranks", "ranks_before", "prediction_residual", "grad_norm")],
        "violated": [("r_max", "KN", "ranks", "unique", "injectivity", "error_bound", "sigma_next")],
    },
    evidence=fields(
        ("ranks_before", "rank before"),
        ("ranks", "rank"),
        ("r_max", "r_max"),
        ("prediction_residual", "pred. resid"),
        ("grad_norm", "|grad|"),
    ),
)
def check_jlr_rank_ft(
    problem: Problem,
    *,
    rank_bound: int | None = None,
    grad_rtol: float = _T.grad_rtol,
    rank_rtol: float = _T.rank_rtol,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""JLR-rank-FT: if FT has a minimizer, it has one of rank ``r`` with ``r(r+1)/2 <= KN``.

    Solves FT (:func:`landscapes.full_ft.solve_ft`; "no minimizer" is ``inconclusive`` with the
    separating direction as evidence), certifies stationarity :math:`\|\nabla L\|_F \le`
    ``grad_rtol * ||grad L(0)||_F``, reduces the rank constructively and checks that the
    reduced point has the same predictions and loss.  ``rank_bound`` replaces the bound by "every
    block has rank <= rank_bound" (for planted false variants); refuting it needs a unique
    FT minimizer.

    Certificate: ``r_max``, ``KN``, ``gram_rank`` (rank of ``J``'s Gram matrix) and ``bound`` (the
    bound checked, in words); ``separating_direction_norm`` when FT has no minimizer; the FT
    solution's ``risk``, ``grad_norm``, ``grad_scale`` (``||grad L(0)||_F``) and ``risk_at_zero``;
    the reduction's ``ranks_before``, ``ranks``, ``reduction_steps``, ``prediction_residual``,
    ``risk_reduced``, ``risk_change``, ``singular_values``, ``nuclear_before``, ``nuclear_after``;
    above the bound, ``unique`` and ``injectivity`` of the uniqueness certificate, and for the
    squared loss ``error_bound`` (distance to the unique minimizer) and ``sigma_next`` (the
    singular value past the bound).
    """
    _check_bound_option(rank_bound)
    claim = "JLR-rank-FT"
    opts: dict[str, Any] = {"rank_bound": rank_bound, "grad_rtol": grad_rtol, "rank_rtol": rank_rtol}
    if (early := needs_float64(claim, problem, opts)) is not None:
        return early
    judge = Judge(claim, problem.fingerprint(), opts)
    t0 = time.perf_counter()
    ft = solve_ft(problem)
    judge.timings["solve"] = time.perf_counter() - t0
    rmax = r_max(problem.K, problem.N)
    cert: dict[str, Any] = {
        "r_max": rmax,
        "KN": problem.KN,
        "gram_rank": ft.gram_rank,
        "bound": _bound_text(rank_bound, problem),
    }
    if not ft.exists:
        assert ft.direction is not None
        cert["separating_direction_norm"] = float(ft.direction.norm())
        return judge.inconclusive(cert, "FT has " + ft.reason + "; the claim's hypothesis fails")
    assert ft.D is not None
    # Relative to the problem's own scale, never to an absolute floor such as max(1, .): rescaling
    # (J, f0, y) by s multiplies gradients and the squared risk by s^2 and must not change the verdict.
    # g0 = 0 means D = 0 is stationary: then only an exactly stationary point passes.
    scale = ft.grad_norm_at_zero
    risk0 = problem.risk(problem.zeros())
    cert.update(risk=ft.risk, grad_norm=ft.grad_norm, grad_scale=scale, risk_at_zero=risk0)
    if ft.grad_norm > grad_rtol * scale:
        return judge.inconclusive(
            cert, f"FT solution not certified stationary (||grad|| = {ft.grad_norm:.2e})"
        )

    def until(ranks: tuple[int, ...]) -> bool:
        return _within(ranks, rank_bound, problem.KN)

    red = reduce_rank(problem, ft.D, until=until, weights=[1.0] * len(problem.blocks), rank_rtol=rank_rtol)
    red = dataclasses.replace(red, D=truncate_to_numerical_rank(red.D, rank_rtol))
    risk_red = problem.risk(red.D)
    cert.update(
        ranks_before=red.ranks_before,
        ranks=red.ranks_after,
        reduction_steps=red.steps,
        prediction_residual=red.prediction_residual,
        risk_reduced=risk_red,
        risk_change=abs(risk_red - ft.risk),
        singular_values=red.singular_values,
        nuclear_before=red.nuclear_before,
        nuclear_after=red.nuclear_after,
    )
    judge.timings["reduce"] = red.seconds
    same = red.prediction_residual <= PREDICTION_RTOL and (
        abs(risk_red - ft.risk) <= 1e-9 * max(ft.risk, risk0)
    )
    if not same:
        return judge.inconclusive(cert, "rank reduction changed the predictions beyond tolerance")
    if _within(red.ranks_after, rank_bound, problem.KN):
        return judge.holds(
            cert,
            f"FT minimizer of rank {list(red.ranks_after)} found (r_max = {rmax}), same "
            f"predictions (residual {red.prediction_residual:.1e})",
        )
    uq, margin_ok = _ft_uniqueness(problem, ft, rank_bound, cert)
    if uq.unique and margin_ok:
        return judge.violated(
            cert,
            f"the FT minimizer is unique ({uq.reason}) and has rank {list(red.ranks_after)}, "
            f"above the claimed bound",
            counterexample=save_counterexample(problem, save_dir, claim, ft.D, opts),
        )
    return judge.inconclusive(
        cert,
        f"could not reduce below {list(red.ranks_after)} ({red.stopped}); minimizer not "
        f"unique, so no counterexample either",
    )


# --------------------------------------------------------------------------------------------------
#: JLR-rank-NUC and JLR-rank-blocks: one checker (:func:`_rank_nuc`), the same options and fields.
_NUC_OPTIONS = {"rank_bound": RANK_BOUND, "gap_rtol": TOL, "rank_rtol": TOL, "seed": SEED, "solution": ANY}
_NUC_CERTIFICATE: dict[str, list[tuple[str, ...]]] = {
    "holds": [
        ("r_max", "KN", "objective", "dual", "gap", "rel_gap", "ranks", "block_triangular_sum")
        + ("prediction_residual", "rel_gap_reduced")
    ],
    "violated": [("r_max", "KN", "objective", "dual", "rel_gap", "ranks", "rel_gap_reduced")],
}
_NUC_EVIDENCE = fields(
    ("ranks", "rank"),
    ("r_max", "r_max"),
    ("block_triangular_sum", "sum r(r+1)/2"),
    ("KN", "KN"),
    ("rel_gap_reduced", "rel gap"),
)


def _zero_not_a_minimizer(problem: Problem, cert: dict[str, Any]) -> str | None:
    """Why ``D = 0`` is not a NUC minimizer (the variant "rank <= 0" is refuted), or ``None``.

    The bound admits only D = 0, and 0 minimizes the convex NUC objective iff 0 is in
    grad L(0) + lam d||0||_*, i.e. ||grad_j L(0)||_op <= lam_j for every block.  ``cert`` gets
    ``S_op_at_zero_over_lam``.
    """
    S0 = problem.evaluate(problem.zeros()).S
    ratios = [float(torch.linalg.matrix_norm(s, 2)) / lam for s, lam in zip(S0, problem.lam)]
    cert.update(S_op_at_zero_over_lam=ratios)
    margin = 1e-10  # far above the rounding error of a computed operator norm
    if max(ratios) <= 1.0 + margin:
        return None
    j = max(range(len(ratios)), key=lambda i: ratios[i])
    return (
        f"D = 0 is not a minimizer: ||grad L(0)||_op = {ratios[j]:.6g} lam in block {j} "
        f"(optimality at 0 needs <= lam), so every minimizer has a nonzero block"
    )


def _rank_nuc(
    claim: str,
    problem: Problem,
    rank_bound: int | None,
    gap_rtol: float,
    rank_rtol: float,
    seed: int,
    solution: NucSolution | None,
    save_dir: str | Path | None,
) -> Verdict:
    _check_bound_option(rank_bound)
    opts: dict[str, Any] = {
        "rank_bound": rank_bound,
        "gap_rtol": gap_rtol,
        "rank_rtol": rank_rtol,
        "seed": seed,
    }
    if (early := needs_float64(claim, problem, opts)) is not None:
        return early
    judge = Judge(claim, problem.fingerprint(), opts)
    t0 = time.perf_counter()
    sol = _nuc_solution(problem, solution, gap_rtol, seed)
    judge.timings["solve"] = time.perf_counter() - t0
    rmax = r_max(problem.K, problem.N)
    c0 = sol.certificate
    cert: dict[str, Any] = {
        "r_max": rmax,
        "KN": problem.KN,
        "bound": _bound_text(rank_bound, problem),
        "objective": c0.primal,
        "dual": c0.dual,
        "gap": c0.gap,
        "rel_gap": c0.rel_gap,
        "S_op_over_lam": [s / lam for s, lam in zip(c0.S_op, c0.lam)],
        "solver": sol.method,
        "solver_iterations": sol.iterations,
        "solver_seconds": sol.seconds,
        "solver_gradient_evaluations": sol.gradient_evaluations,
    }
    if not c0.within(gap_rtol):
        return judge.inconclusive(
            cert,
            f"NUC not solved to the gap tolerance (rel gap {c0.rel_gap:.1e}, not within +-{gap_rtol:.0e})",
        )

    def until(ranks: tuple[int, ...]) -> bool:
        return _within(ranks, rank_bound, problem.KN)

    red = reduce_rank(problem, sol.D, until=until, rank_rtol=rank_rtol)
    # Certify the rank-r matrix the verdict reports, not a point with sub-threshold residue.
    red = dataclasses.replace(red, D=truncate_to_numerical_rank(red.D, rank_rtol))
    c1 = nuc_certificate(problem, red.D)
    ranks = red.ranks_after
    cert.update(
        ranks_solver=sol.ranks,
        ranks=ranks,
        block_triangular_sum=sum(triangular(r) for r in ranks),
        reduction_steps=red.steps,
        prediction_residual=red.prediction_residual,
        objective_reduced=c1.primal,
        rel_gap_reduced=c1.rel_gap,
        singular_values=red.singular_values,
    )
    if c1.rel_gap < 0:
        cert["gap_note"] = "negative at round-off: primal and dual agree to rounding"
    judge.timings["reduce"] = red.seconds
    if not c1.within(gap_rtol):
        return judge.inconclusive(
            cert, f"the reduced point lost the gap certificate (rel gap {c1.rel_gap:.1e})"
        )
    if _within(ranks, rank_bound, problem.KN):
        return judge.holds(
            cert,
            f"certified NUC minimizer (rel gap {_gap_text(c1.rel_gap)}) of rank {list(ranks)}, "
            f"{_bound_text(rank_bound, problem)}",
        )
    if rank_bound == 0 and (why := _zero_not_a_minimizer(problem, cert)) is not None:
        return judge.violated(
            cert,
            f"{why}, which breaks '{_bound_text(rank_bound, problem)}'",
            counterexample=save_counterexample(problem, save_dir, claim, red.D, opts),
        )
    Du, uq = _tight_uniqueness(problem, red.D, c1.gap, seed=seed, rank_rtol=rank_rtol)
    certified = _certified_ranks(Du, uq.rank_error)
    cert.update(
        unique=uq.unique,
        injectivity=uq.injectivity,
        face_dims=uq.face_dims,
        lam_margin=uq.lam_margin,
        face_sin_theta=uq.sin_theta,
        rank_error_bound=uq.rank_error,
        certified_min_ranks=certified,
    )
    if uq.unique and not _within(certified, rank_bound, problem.KN):
        return judge.violated(
            cert,
            f"the NUC minimizer is unique ({uq.reason}) and has rank {list(ranks)}, "
            f"which breaks '{_bound_text(rank_bound, problem)}'",
            counterexample=save_counterexample(problem, save_dir, claim, red.D, opts),
        )
    return judge.inconclusive(
        cert,
        f"reduction stopped at rank {list(ranks)} ({red.stopped}); uniqueness "
        f"({uq.reason}) or the rank of the unique minimizer (certified >= {list(certified)}) "
        "does not refute the claim",
    )


@checker("JLR-rank-NUC", options=_NUC_OPTIONS, certificate=_NUC_CERTIFICATE, evidence=_NUC_EVIDENCE)
def check_jlr_rank_nuc(
    problem: Problem,
    *,
    rank_bound: int | None = None,
    gap_rtol: float = _T.gap_rtol,
    rank_rtol: float = _T.rank_rtol,
    seed: int = 0,
    solution: NucSolution | None = None,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""JLR-rank-NUC: NUC has a minimizer of rank ``r`` with ``r(r+1)/2 <= KN``.

    Solves NUC to relative gap ``gap_rtol`` (or uses ``solution``), reduces the rank keeping the
    predictions and not increasing :math:`\lambda\|D\|_*`, and re-certifies the gap of the
    reduced point.  ``rank_bound`` states a variant "rank <= rank_bound"; it is ``violated`` when
    the minimizer is certified unique and of larger rank.

    Certificate: ``r_max``, ``KN`` and ``bound`` (the bound checked, in words); the NUC solution's
    ``objective``, ``dual``, ``gap``, ``rel_gap``, ``S_op_over_lam`` (``||S_j||_op / lam_j``, at most
    1 at a minimizer), ``solver``, ``solver_iterations``, ``solver_seconds``,
    ``solver_gradient_evaluations``; the rank reduction's ``ranks_solver``, ``ranks``,
    ``block_triangular_sum`` (:math:`\sum_j r_j(r_j+1)/2`), ``reduction_steps``,
    ``prediction_residual``, ``objective_reduced``, ``rel_gap_reduced`` (the reduced point's gap),
    ``singular_values`` and ``gap_note`` when that gap is negative at round-off; for
    ``rank_bound=0``, ``S_op_at_zero_over_lam``; above the bound, the uniqueness certificate:
    ``unique``, ``injectivity``, ``face_dims``, ``lam_margin``, ``face_sin_theta``,
    ``rank_error_bound`` and ``certified_min_ranks`` (lower bounds on the unique minimizer's ranks).
    """
    if len(problem.blocks) != 1:
        raise UserInputError(
            f"problem: JLR-rank-NUC is the single-matrix claim, got {len(problem.blocks)} blocks "
            "(use check_jlr_rank_blocks)"
        )
    return _rank_nuc("JLR-rank-NUC", problem, rank_bound, gap_rtol, rank_rtol, seed, solution, save_dir)


@checker("JLR-rank-blocks", options=_NUC_OPTIONS, certificate=_NUC_CERTIFICATE, evidence=_NUC_EVIDENCE)
def check_jlr_rank_blocks(
    problem: Problem,
    *,
    rank_bound: int | None = None,
    gap_rtol: float = _T.gap_rtol,
    rank_rtol: float = _T.rank_rtol,
    seed: int = 0,
    solution: NucSolution | None = None,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""JLR-rank-blocks: NUC with several blocks has a minimizer with :math:`\sum_j r_j(r_j+1)/2 \le KN`.

    The block-diagonal Barvinok--Pataki bound, for the sum of per-block nuclear norms.

    As :func:`check_jlr_rank_nuc`, block by block; the certificate lists each block's rank and
    the sum of :math:`r_j(r_j+1)/2`.

    Certificate: the fields of :func:`check_jlr_rank_nuc`'s, with one entry per block in
    ``ranks``, ``ranks_solver``, ``S_op_over_lam``, ``certified_min_ranks`` and the other
    per-block lists.
    """
    return _rank_nuc("JLR-rank-blocks", problem, rank_bound, gap_rtol, rank_rtol, seed, solution, save_dir)


# --------------------------------------------------------------------------------------------------
def _imbalance_rel(pt: LoRAPoint) -> float:
    r"""max_j ||U_j^T U_j - V_j^T V_j||_F / max(1, ||U_j||_F^2, ||V_j||_F^2)."""
    out = 0.0
    for u, v in zip(pt.U, pt.V):
        # relative to the factors' size, but never below 1: near D = 0 both factors shrink at
        # the same rate and the *relative* imbalance cannot go down.
        size = max(float((u * u).sum()), float((v * v).sum()), 1.0)
        out = max(out, float(torch.linalg.matrix_norm(u.T @ u - v.T @ v)) / size)
    return out


def _train_lora(
    problem: Problem, r: int, P_star: float, scale: float, *, gap_rtol: float, balance_rtol: float, seed: int
) -> LoRATrainingResult:
    """LoRA at rank ``r`` by L-BFGS from a random start, until at the NUC optimum ``P_star`` and balanced."""

    def done(pt: LoRAPoint, _it: int) -> bool:
        # Stop once at the optimum *and* balanced well inside the tolerances.
        if lora_value(problem, pt.U, pt.V) - P_star > 0.5 * gap_rtol * scale:
            return False
        return _imbalance_rel(pt) <= 0.1 * balance_rtol

    return minimize_lora(problem, rank=r, seed=seed, init_scale=0.1, callback=done, callback_every=10)


def _identity_numbers(problem: Problem, D: Blocks, rank: int, P_star: float, scale: float) -> dict[str, Any]:
    """The LoRA objective at the balanced factors of ``D`` (the NUC minimizer) against ``P_star``."""
    bf = balanced_factors(D, rank=rank)
    F_bal = lora_value(problem, bf.U, bf.V)
    return {"lora_at_balanced_nuc_factors": F_bal, "identity_residual": abs(F_bal - P_star) / scale}


def _trained_numbers(problem: Problem, tr: LoRATrainingResult, P_star: float, scale: float) -> dict[str, Any]:
    """The trained LoRA point's certificate fields: its excess over NUC and its balance."""
    U, V = tr.point.U, tr.point.V
    norm_uv = max(float(u.norm() + v.norm()) for u, v in zip(U, V))
    return {
        "lora_trained_objective": tr.value,
        "lora_excess": (tr.value - P_star) / scale,
        "lora_grad_norm": tr.grad_norm,
        "lora_iterations": tr.iterations,
        "imbalance": max(float(torch.linalg.matrix_norm(u.T @ u - v.T @ v)) for u, v in zip(U, V)),
        "imbalance_bound": norm_uv * tr.grad_norm / problem.lam[0],
        "imbalance_rel": _imbalance_rel(tr.point),
    }


def _certify_nuc_rank(
    problem: Problem, D: Blocks, gap: float, *, seed: int, rank_rtol: float, cert: dict[str, Any]
) -> bool:
    """Whether the NUC minimizer is certified unique; ``cert`` gets the certificate and rank bounds.

    The fields: ``unique``, ``injectivity``, ``certified_min_ranks`` (lower bounds on the unique
    minimizer's ranks) and ``rank_error_bound``.
    """
    Du, uq = _tight_uniqueness(problem, D, gap, seed=seed, rank_rtol=rank_rtol)
    cert.update(
        unique=uq.unique,
        injectivity=uq.injectivity,
        certified_min_ranks=_certified_ranks(Du, uq.rank_error),
        rank_error_bound=uq.rank_error,
    )
    return uq.unique


@checker(
    "JLR-equiv",
    options={
        "rank": Rank(optional=True),
        "enforce_hypothesis": BOOL,
        "gap_rtol": TOL,
        "balance_rtol": TOL,
        "rank_rtol": TOL,
        "seed": SEED,
        "solution": ANY,
    },
    certificate={
        "holds": [
            ("rank", "nuc_ranks", "nuc_objective", "nuc_rel_gap", "lora_excess", "identity_residual")
            + ("imbalance_rel",)
        ],
        "violated": [("rank", "nuc_ranks", "unique", "certified_min_ranks")],
    },
    evidence=fields(
        ("rank", "r"),
        ("nuc_ranks", "NUC rank"),
        ("lora_excess", "LoRA-NUC"),
        ("identity_residual", "identity"),
        ("imbalance_rel", "imbalance"),
    ),
)
def check_jlr_equiv(
    problem: Problem,
    *,
    rank: int | None = None,
    enforce_hypothesis: bool = True,
    gap_rtol: float = _T.gap_rtol,
    balance_rtol: float = 1e-6,
    rank_rtol: float = _T.rank_rtol,
    seed: int = 0,
    solution: NucSolution | None = None,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""JLR-equiv: for ``r`` at least a NUC minimizer's rank, min LoRA = min NUC, minimizers balanced.

    Balanced means :math:`U^\top U = V^\top V`.

    Three pieces of evidence: (1) the balanced factors of the (rank-reduced) NUC minimizer give a
    LoRA objective equal to the NUC objective (the identity
    :math:`\min_{UV^\top=D}(\|U\|^2+\|V\|^2)/2 = \|D\|_*`); (2) LoRA trained by L-BFGS from a
    random start at rank ``r`` (default ``r_max + 1``) reaches the NUC optimum within the gap
    tolerance (LoRA can never go below it); (3) the trained point is balanced, with the bound
    :math:`\|U^\top U - V^\top V\| \le (\|U\| + \|V\|)\|\nabla F\| / \lambda` from the identity
    :math:`U^\top \nabla_U F - (\nabla_V F)^\top V = \lambda (U^\top U - V^\top V)`.

    ``enforce_hypothesis=False`` tests the variant "for every r" (a planted false claim): it is
    ``violated`` when the NUC minimizer is certified unique with rank above ``r``.

    Certificate: ``nuc_objective`` (``P*``), ``nuc_rel_gap``, ``nuc_ranks`` (of the reduced NUC
    minimizer), ``rank`` (``r``) and ``objective_scale`` (``|P*|``, or 1 when it is 0); below the
    NUC rank, ``unique``, ``injectivity``, ``certified_min_ranks`` and ``rank_error_bound`` of
    the uniqueness certificate; (1) ``lora_at_balanced_nuc_factors`` and ``identity_residual``;
    (2) ``lora_trained_objective``, ``lora_excess`` (relative to the scale), ``lora_grad_norm``,
    ``lora_iterations``; (3) ``imbalance`` (:math:`\max_j\|U_j^\top U_j - V_j^\top V_j\|_F`),
    ``imbalance_bound`` and ``imbalance_rel``.
    """
    claim = "JLR-equiv"
    if len(set(problem.lam)) != 1:
        raise UserInputError(f"problem: JLR-equiv needs one lam for all blocks, got {list(problem.lam)}")
    r = rank if rank is not None else r_max(problem.K, problem.N) + 1
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise UserInputError(f"rank: expected a positive int (rank >= 1), got {rank!r}")
    opts: dict[str, Any] = {
        "rank": r,
        "enforce_hypothesis": enforce_hypothesis,
        "gap_rtol": gap_rtol,
        "balance_rtol": balance_rtol,
        "seed": seed,
    }
    if (early := needs_float64(claim, problem, opts)) is not None:
        return early
    judge = Judge(claim, problem.fingerprint(), opts)
    t0 = time.perf_counter()
    sol = _nuc_solution(problem, solution, gap_rtol, seed)
    red = reduce_rank(problem, sol.D, rank_rtol=rank_rtol)
    c = nuc_certificate(problem, red.D)
    judge.timings["nuc"] = time.perf_counter() - t0
    P_star = c.primal
    # The objective's own scale, not max(1, |P*|): with that floor, at (J, f0, y) * 1e-30 every
    # training end point was within gap_rtol of P*.  P* = 0 (lam > 0) only when D = 0 fits exactly.
    scale = abs(P_star) or 1.0
    cert: dict[str, Any] = {
        "nuc_objective": P_star,
        "nuc_rel_gap": c.rel_gap,
        "nuc_ranks": red.ranks_after,
        "rank": r,
        "objective_scale": scale,
    }
    if not c.within(gap_rtol):
        return judge.inconclusive(cert, f"NUC not certified (rel gap {c.rel_gap:.1e})")
    k = max(red.ranks_after)
    if r < k:
        unique = _certify_nuc_rank(problem, red.D, c.gap, seed=seed, rank_rtol=rank_rtol, cert=cert)
        if enforce_hypothesis:
            return judge.inconclusive(
                cert,
                f"hypothesis fails: the unique NUC minimizer has rank {k} > r = {r}"
                if unique
                else f"hypothesis not met: the NUC minimizer found has rank {k} > r = {r}",
            )
    # (1) balanced factors of the NUC minimizer
    cert.update(_identity_numbers(problem, red.D, max(r, k), P_star, scale))
    # (2) train LoRA at rank r; (3) its balance
    t1 = time.perf_counter()
    tr = _train_lora(problem, r, P_star, scale, gap_rtol=gap_rtol, balance_rtol=balance_rtol, seed=seed)
    judge.timings["train"] = time.perf_counter() - t1
    cert.update(_trained_numbers(problem, tr, P_star, scale))
    excess = cert["lora_excess"]
    if r < k:
        # variant "for every r": unique minimizer of rank k > r means min over rank <= r exceeds P*.
        if cert.get("unique") and max(cert["certified_min_ranks"]) > r:
            return judge.violated(
                cert,
                f"the unique NUC minimizer has rank {k} > r = {r}, so min LoRA > min NUC "
                f"(trained LoRA stays {excess:.1e} above)",
                counterexample=save_counterexample(problem, save_dir, claim, red.D, opts),
            )
        return judge.inconclusive(cert, f"r = {r} below the NUC rank {k}, but no certified separation")
    ok_identity = cert["identity_residual"] <= 1e-10
    # LoRA can never beat NUC: a trained value below the certified dual bound is a numerical failure.
    ok_train = -gap_rtol <= excess <= gap_rtol and tr.value >= c.dual - gap_rtol * scale
    ok_bal = cert["imbalance_rel"] <= balance_rtol
    if ok_identity and ok_train and ok_bal:
        return judge.holds(
            cert,
            f"LoRA at r = {r} reaches the NUC optimum (excess {excess:.1e}), balanced "
            f"(rel. imbalance {cert['imbalance_rel']:.1e})",
        )
    if not ok_identity:
        return judge.inconclusive(
            cert,
            "numerical failure: LoRA objective at balanced factors differs from NUC by "
            f"{cert['identity_residual']:.1e}",
        )
    what = "did not reach the NUC optimum" if not ok_train else "is not balanced"
    return judge.inconclusive(
        cert,
        f"trained LoRA {what} within tolerance (excess {excess:.1e}, rel. imbalance "
        f"{cert['imbalance_rel']:.1e}); a local method's end point is no counterexample",
    )


# --------------------------------------------------------------------------------------------------
@checker(
    "JLR-magnitude",
    options={
        "factor": Real(expect="a positive number (finite)"),
        "gap_rtol": TOL,
        "seed": SEED,
        "solution": ANY,
    },
    certificate={
        "holds": [("L0", "L_star", "lam_nuclear", "rhs", "gap", "rel_gap")],
        "violated": [("L0", "L_star", "lam_nuclear", "rhs", "gap", "rel_gap")],
    },
    evidence=fields(
        ("lam_nuclear", "lam|D|*"), ("rhs", "L(0)-L(D*)"), ("L0", "L(0)"), ("rel_gap", "rel gap")
    ),
)
def check_jlr_magnitude(
    problem: Problem,
    *,
    factor: float = 1.0,
    gap_rtol: float = _T.gap_rtol,
    seed: int = 0,
    solution: NucSolution | None = None,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""JLR-magnitude: :math:`\sum_j\lambda_j\|D^\star_j\|_* \le L(0) - L(D^\star) \le L(0)`.

    Follows from :math:`P(D^\star) \le P(0) = L(0)`.  At a point with absolute gap :math:`\epsilon`
    the first inequality holds up to :math:`\epsilon`, which is the tolerance used.  ``factor``
    states the variant :math:`\lambda\|D^\star\|_* \le` ``factor`` :math:`(L(0) - L(D^\star))`;
    with ``factor < 1`` it is ``violated`` when the excess is more than 100 gaps.

    Certificate: ``lam_nuclear`` (:math:`\sum_j\lambda_j\|D^\star_j\|_*`), ``L0``, ``L_star``,
    ``rhs`` (``factor`` :math:`(L(0) - L(D^\star))`), ``excess`` (``lam_nuclear - rhs``), ``gap``
    and ``rel_gap`` of the NUC solution, ``L_star_nonnegative``, ``solver_seconds``,
    ``follows_from``, and ``gap_note`` when the gap is negative at round-off.
    """
    claim = "JLR-magnitude"
    if not (isinstance(factor, (int, float)) and factor > 0):
        raise UserInputError(f"factor: expected a positive number, got {factor!r}")
    opts: dict[str, Any] = {"factor": factor, "gap_rtol": gap_rtol, "seed": seed}
    if (early := needs_float64(claim, problem, opts)) is not None:
        return early
    judge = Judge(claim, problem.fingerprint(), opts)
    t0 = time.perf_counter()
    sol = _nuc_solution(problem, solution, gap_rtol, seed)
    c = sol.certificate
    judge.timings["solve"] = time.perf_counter() - t0
    L0 = problem.risk(problem.zeros())
    LD = problem.risk(sol.D)
    pen = problem.penalty(sol.D)
    lhs, rhs = pen, factor * (L0 - LD)
    eps = max(c.gap, 0.0)
    cert: dict[str, Any] = {
        "lam_nuclear": lhs,
        "L0": L0,
        "L_star": LD,
        "rhs": rhs,
        "excess": lhs - rhs,
        "gap": c.gap,
        "rel_gap": c.rel_gap,
        "L_star_nonnegative": LD >= 0,
        "solver_seconds": sol.seconds,
        "follows_from": "the certified gap: P(D) <= P(0) + gap, i.e. L(D) + lam||D||_* <= L(0) + gap",
    }
    if c.gap < 0:
        cert["gap_note"] = "negative at round-off: primal and dual agree to rounding"
    if not c.within(gap_rtol):
        return judge.inconclusive(cert, f"NUC not certified (rel gap {c.rel_gap:.1e})")
    if lhs <= rhs + eps and LD >= -eps:
        return judge.holds(
            cert,
            f"lam||D*||_* = {lhs:.4g} <= {factor:g}(L(0) - L(D*)) = {rhs:.4g} <= L(0) = {L0:.4g} at the "
            f"certified NUC solution (rel gap {_gap_text(c.rel_gap)}); the inequality follows from that "
            "certificate (the objective at D* is at most the objective at 0 plus the gap), so this checks "
            "the certificate's arithmetic, not more",
        )
    if lhs - rhs > 100 * eps + 1e-12 * abs(L0):
        return judge.violated(
            cert,
            f"lam||D*||_* = {lhs:.4g} exceeds {factor:g}(L(0) - L(D*)) = {rhs:.4g} by "
            f"{lhs - rhs:.2e} (gap {eps:.1e})",
            counterexample=save_counterexample(problem, save_dir, claim, sol.D, opts),
        )
    return judge.inconclusive(cert, "the inequality fails by less than 100 gaps: not certified either way")


# --------------------------------------------------------------------------------------------------
def _gap_text(g: float) -> str:
    """A (relative) duality gap for a reason: a negative one can only be rounding, and says so."""
    return f"{g:.1e}, negative at round-off" if g < 0 else f"{g:.1e}"


def _lam_minus_op(lams: Sequence[float], S: Sequence[Tensor]) -> float:
    return min(lam - float(torch.linalg.matrix_norm(s, ord=2)) for lam, s in zip(lams, S))


@dataclasses.dataclass
class _Routes:
    """The routes of one JLR-zero-saddle call: the prediction and what the routes found.

    Their names, refutations and unmatched values; their numbers go to ``cert``, seconds to ``timings``.
    """

    predicted: float
    cert: dict[str, Any]
    timings: dict[str, float]
    names: list[str] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    unmatched: list[str] = dataclasses.field(default_factory=list)


def _autodiff_lanczos_route(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    routes: _Routes,
    *,
    tol: float,
    lanczos_tol: float,
) -> None:
    """Lanczos on autodiff Hessian-vector products of the objective's definition.

    Where the dense Hessian does not fit: the structured route at zero reduces to the closed form
    the prediction comes from (eigenvalues lam +- sigma_i(S)), and this route does not.
    """
    from landscapes.curvature.lanczos import smallest_ritz_pair

    routes.names.append("Lanczos (autodiff HVP)")
    tl = time.perf_counter()
    op = AutodiffHessian(problem, U, V)
    w, X, conv, n_mv, _ = smallest_ritz_pair(
        # its Rayleigh quotient bounds lambda_min from above whatever its accuracy: a looser
        # ARPACK tolerance than the closed-form route's saves autodiff products
        op.to_scipy(),
        op.shape[0],
        tol=max(lanczos_tol, 1e-8),
        maxiter=None,
        seed=1,
        estimate_lambda_max=False,
    )
    predicted = routes.predicted
    x = torch.as_tensor(X[:, 0], dtype=problem.dtype, device=problem.device)
    x = x / x.norm()
    Hx = op.matvec(x)
    theta = float(x @ Hx)
    resid = float((Hx - theta * x).norm())
    routes.timings["lanczos_autodiff"] = time.perf_counter() - tl
    routes.cert.update(
        autodiff_lanczos_rayleigh=theta,
        autodiff_lanczos_residual=resid,
        autodiff_lanczos_matvecs=op.count,
        autodiff_lanczos_converged=conv,
    )
    # a Rayleigh quotient of the true Hessian bounds lambda_min from above, rigorously
    if predicted > theta + tol:
        routes.failures.append(
            f"autodiff Hessian has Rayleigh quotient {theta:.6g} below the predicted {predicted:.6g}"
        )
    # and an eigenvalue lies within the residual of theta (Lanczos finds the smallest in practice)
    elif abs(predicted - theta) > resid + tol:
        routes.unmatched.append(f"autodiff Lanczos found {theta:.6g} (residual {resid:.1e})")


def _dense_route(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    routes: _Routes,
    *,
    rtol: float,
    scale: float,
) -> float:
    """``eigh`` of the dense autodiff Hessian; returns the tolerance on the dense Hessian's scale."""
    td = time.perf_counter()
    routes.names.append("dense eigh (autodiff)")
    H = lora_hessian_dense(problem, U, V)
    evals, evecs = torch.linalg.eigh(H)
    routes.timings["dense"] = time.perf_counter() - td
    predicted = routes.predicted
    theta, x = float(evals[0]), evecs[:, 0]
    resid = float((H @ x - theta * x).norm())
    tol = rtol * max(scale, abs(float(evals[-1])))
    err = abs(theta - predicted)
    routes.cert.update(
        dense_lambda_min=theta,
        dense_lambda_max=float(evals[-1]),
        eigen_residual=resid,
        abs_error=err,
        tolerance=tol,
    )
    if err > tol:
        routes.failures.append(
            f"dense lambda_min = {theta:.6g} but predicted {predicted:.6g} (error {err:.1e})"
        )
    return tol


def _closed_form_routes(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    routes: _Routes,
    *,
    rtol: float,
    lanczos_tol: float,
) -> tuple[float, float, float]:
    """Lanczos on the closed-form HVP, and the structured route where it fits.

    Returns the Hessian's scale, the tolerance ``rtol * scale`` and the value found (the
    structured route's, else the Lanczos Ritz value).
    """
    from landscapes.curvature import lambda_min_lanczos, lambda_min_structured

    predicted = routes.predicted
    ta = time.perf_counter()
    la = lambda_min_lanczos(problem, U, V, tol=lanczos_tol)
    routes.timings["lanczos"] = time.perf_counter() - ta
    # the tolerance follows the Hessian's own scale (no max(1, .): a rescaled problem gets the same verdict)
    scale = abs(la.lambda_max) if math.isfinite(la.lambda_max) else abs(predicted)
    structured = None
    if isinstance(problem.J, DenseOperator) or problem.KN <= 4096:
        ts = time.perf_counter()
        structured = lambda_min_structured(problem, U, V, rtol=1e-12)
        routes.timings["structured"] = time.perf_counter() - ts
        scale = max(scale, abs(structured.lambda_max))
    tol = rtol * scale
    routes.cert.update(
        lanczos_lambda_min=la.value,
        lanczos_residual=la.residual,
        lanczos_matvecs=la.matvecs,
        lanczos_converged=la.converged,
        tolerance=tol,
    )
    routes.names.append("Lanczos")
    # A Lanczos route refutes a prediction above its Rayleigh quotient (rigorous), and matches it
    # when the prediction is within the residual of its Ritz value (an eigenvalue lies there); a
    # prediction below every eigenvalue it found is not matched, but not refuted either (Lanczos
    # does not prove that there is none lower).
    if predicted > la.upper + tol:
        routes.failures.append(f"Lanczos Rayleigh quotient {la.upper:.6g} < predicted {predicted:.6g}")
    elif abs(predicted - la.value) > la.residual + tol:
        routes.unmatched.append(f"closed-form Lanczos found {la.value:.6g} (residual {la.residual:.1e})")
    if structured is not None:
        routes.names.append("structured")
        routes.cert.update(structured_lower=structured.lower, structured_upper=structured.upper)
        if not (structured.lower - tol <= predicted <= structured.upper + tol):
            routes.failures.append(
                f"predicted {predicted:.6g} outside the structured interval "
                f"[{structured.lower:.6g}, {structured.upper:.6g}]"
            )
    return scale, tol, structured.value if structured is not None else la.value


@checker(
    "JLR-zero-saddle",
    options={
        "rank": Rank(),
        "prediction": Function(),
        "max_dense": Int(0, 10_000),
        "rtol": TOL,
        "lanczos_tol": TOL,
    },
    certificate={
        "holds": [("predicted", "closed_form", "grad_op_norms", "n_params", "routes")],
        "violated": [("predicted", "closed_form", "grad_op_norms", "n_params", "routes")],
    },
    evidence=fields(
        ("dense_lambda_min", "eigh"),
        ("predicted", "lam-|S|op"),
        ("abs_error", "err"),
        ("eigen_residual", "resid"),
    ),
)
def check_jlr_zero_saddle(
    problem: Problem,
    *,
    rank: int = 1,
    prediction: Callable[[Sequence[float], Sequence[Tensor]], float] | None = None,
    max_dense: int = 2500,
    rtol: float = 1e-10,
    lanczos_tol: float = 1e-12,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""JLR-zero-saddle: at ``U = V = 0``, :math:`\lambda_{\min} = \min_j(\lambda_j - \|S_j(0)\|_{op})`.

    Three routes are compared with the prediction (the closed form, or ``prediction`` for planted
    false variants), within ``tol = rtol * max(1, |lambda_max|)``:

    * ``eigh`` of the dense Hessian computed by autodiff (``torch.func.hessian``, independent of
      the closed forms), when :math:`\sum_j (m_j + n_j) r \le` ``max_dense`` and its
      intermediates fit; otherwise Lanczos on autodiff Hessian-vector products of the objective's
      definition (:class:`AutodiffHessian`): its Rayleigh quotient is a rigorous upper bound on
      the true :math:`\lambda_{\min}`, independent of the closed form;
    * Lanczos (``eigsh(which="SA")`` on the closed-form HVP), always: its Rayleigh quotient is a
      rigorous upper bound on :math:`\lambda_{\min}`;
    * the structured route (:func:`landscapes.curvature.structured.lambda_min_structured`): a rigorous
      interval from an eigendecomposition of the column-pair matrix and an inertia count.  At
      zero the Gauss--Newton term vanishes and this route *is* the closed form (the eigenvalues
      of the column-pair matrix are :math:`\lambda_j \pm \sigma_i(S_j)`): it checks the
      arithmetic, not the claim, which is why the autodiff route runs whenever it fits.

    ``violated``: the dense eigenvalue differs from the prediction, or the prediction lies
    outside the structured interval, or above a Lanczos Rayleigh quotient (closed-form or
    autodiff), by more than ``tol``.  ``holds``: every route that ran agrees.  Zero is a strict
    saddle iff the value is negative; the certificate states which.

    Certificate: ``predicted``, ``closed_form``, ``grad_op_norms`` (:math:`\|S_j(0)\|_{op}`),
    ``n_params``, ``routes`` (the routes that ran), ``tolerance`` and ``strict_saddle``; the
    closed-form Lanczos route's ``lanczos_lambda_min``, ``lanczos_residual``, ``lanczos_matvecs``,
    ``lanczos_converged``; the structured route's ``structured_lower`` and ``structured_upper``
    (when it runs); the dense route's ``dense_lambda_min``, ``dense_lambda_max``,
    ``eigen_residual`` and ``abs_error``, or the autodiff Lanczos route's
    ``autodiff_lanczos_rayleigh``, ``autodiff_lanczos_residual``, ``autodiff_lanczos_matvecs``,
    ``autodiff_lanczos_converged``; ``unmatched`` (what the routes found instead) when the
    verdict is ``inconclusive``.
    """
    claim = "JLR-zero-saddle"
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserInputError(f"rank: expected a positive int (rank >= 1), got {rank!r}")
    n_params = sum((m + n) * rank for m, n in problem.blocks)
    opts: dict[str, Any] = {
        "rank": rank,
        "max_dense": max_dense,
        "rtol": rtol,
        "lanczos_tol": lanczos_tol,
        "prediction": "lam - ||grad L(0)||_op"
        if prediction is None
        else getattr(prediction, "__name__", "custom"),
    }
    if (early := needs_float64(claim, problem, opts)) is not None:
        return early
    judge = Judge(claim, problem.fingerprint(), opts)
    timings = judge.timings
    t0 = time.perf_counter()
    S0 = problem.evaluate(problem.zeros()).S
    predicted = (prediction or _lam_minus_op)(problem.lam, S0)
    closed = _lam_minus_op(problem.lam, S0)
    cert: dict[str, Any] = {
        "predicted": predicted,
        "closed_form": closed,
        "grad_op_norms": [float(torch.linalg.matrix_norm(s, ord=2)) for s in S0],
        "n_params": n_params,
    }
    U = tuple(torch.zeros(m, rank, dtype=problem.dtype, device=problem.device) for m, _ in problem.blocks)
    V = tuple(torch.zeros(n, rank, dtype=problem.dtype, device=problem.device) for _, n in problem.blocks)
    routes = _Routes(predicted, cert, timings)
    scale, tol, value = _closed_form_routes(problem, U, V, routes, rtol=rtol, lanczos_tol=lanczos_tol)
    # torch.func.hessian of the objective materializes about n_params x p numbers of J products;
    # where that does not fit, Lanczos on autodiff Hessian-vector products instead.
    if n_params <= max_dense and 8 * n_params * problem.num_params <= 2**31:
        tol = _dense_route(problem, U, V, routes, rtol=rtol, scale=scale)
    else:
        _autodiff_lanczos_route(problem, U, V, routes, tol=tol, lanczos_tol=lanczos_tol)
    value = cert.get("dense_lambda_min", value)
    cert["strict_saddle"] = value < -tol
    cert["routes"] = routes.names
    timings["total"] = time.perf_counter() - t0
    if not routes.failures and routes.unmatched:
        cert["unmatched"] = routes.unmatched
        return judge.inconclusive(
            cert,
            f"predicted {predicted:.6g} lies below the eigenvalues found ({'; '.join(routes.unmatched)}); "
            "no route refutes it (Lanczos does not prove there is no lower eigenvalue) and not every "
            "route matches it",
        )
    if not routes.failures:
        kind = "a strict saddle" if value < -tol else "not a strict saddle"
        return judge.holds(
            cert,
            f"lambda_min = {value:.6g} matches the prediction by {len(routes.names)} routes "
            f"({', '.join(routes.names)}); zero is {kind}",
        )
    return judge.violated(
        cert,
        "; ".join(routes.failures),
        counterexample=save_counterexample(problem, save_dir, claim, problem.zeros(), opts),
    )


_ = np  # numpy arrays appear in saved counterexamples
