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

from landscapes.full_ft import solve_ft
from landscapes.lora import LoRAPoint, balanced_factors, lora_value, minimize_lora
from landscapes.nuc import NucSolution, nuc_certificate, solve_nuc, truncate_to_numerical_rank
from landscapes.operators import DenseOperator, LinearOperator
from landscapes.problem import Blocks, Problem
from landscapes.rank_reduction import reduce_rank
from landscapes.uniqueness import UniquenessCertificate, ft_uniqueness, nuc_uniqueness
from theory.bounds import r_max, triangular
from theory.claims import DEFAULT_TOLERANCES
from theory.errors import UserInputError
from verify.checker import Judge, checker, fields, needs_float64, save_counterexample
from verify.options import ANY, SEED, TOL, Real, validated
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
@validated("JLR-rank-FT")
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
    """
    _check_bound_option(rank_bound)
    claim = "JLR-rank-FT"
    t0 = time.perf_counter()
    opts: dict[str, Any] = {"rank_bound": rank_bound, "grad_rtol": grad_rtol, "rank_rtol": rank_rtol}
    if (early := needs_float64(claim, problem, opts)) is not None:
        return early
    ft = solve_ft(problem)
    t_solve = time.perf_counter() - t0
    rmax = r_max(problem.K, problem.N)
    cert: dict[str, Any] = {
        "r_max": rmax,
        "KN": problem.KN,
        "gram_rank": ft.gram_rank,
        "bound": _bound_text(rank_bound, problem),
    }
    if not ft.exists:
        assert ft.direction is not None
        d = ft.direction
        cert["separating_direction_norm"] = float(d.norm())
        return Verdict(
            claim,
            "inconclusive",
            problem.fingerprint(),
            cert,
            "FT has " + ft.reason + "; the claim's hypothesis fails",
            {"solve": t_solve},
            opts,
        )
    assert ft.D is not None
    # Relative to the problem's own scale, never to an absolute floor such as max(1, .): rescaling
    # (J, f0, y) by s multiplies gradients and the squared risk by s^2 and must not change the verdict.
    # g0 = 0 means D = 0 is stationary: then only an exactly stationary point passes.
    scale = ft.grad_norm_at_zero
    risk0 = problem.risk(problem.zeros())
    cert.update(risk=ft.risk, grad_norm=ft.grad_norm, grad_scale=scale, risk_at_zero=risk0)
    if ft.grad_norm > grad_rtol * scale:
        return Verdict(
            claim,
            "inconclusive",
            problem.fingerprint(),
            cert,
            f"FT solution not certified stationary (||grad|| = {ft.grad_norm:.2e})",
            {"solve": t_solve},
            opts,
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
    timings = {"solve": t_solve, "reduce": red.seconds}
    same = red.prediction_residual <= PREDICTION_RTOL and (
        abs(risk_red - ft.risk) <= 1e-9 * max(ft.risk, risk0)
    )
    if not same:
        return Verdict(
            claim,
            "inconclusive",
            problem.fingerprint(),
            cert,
            "rank reduction changed the predictions beyond tolerance",
            timings,
            opts,
        )
    if _within(red.ranks_after, rank_bound, problem.KN):
        return Verdict(
            claim,
            "holds",
            problem.fingerprint(),
            cert,
            f"FT minimizer of rank {list(red.ranks_after)} found (r_max = {rmax}), same "
            f"predictions (residual {red.prediction_residual:.1e})",
            timings,
            opts,
        )
    uq = ft_uniqueness(problem)
    cert.update(unique=uq.unique, injectivity=uq.injectivity)
    margin_ok = False
    if uq.unique and problem.loss.name == "squared":
        # Strong convexity of the squared loss on an injective J: mu = sigma_min(J)^2 / N, so
        # ||D - D*||_op <= ||D - D*||_F <= ||grad L(D)|| / mu; by Weyl the (bound+1)-th singular
        # value of the unique minimizer D* is at least ours minus that.
        smin = float(torch.linalg.svdvals(problem.J.rows())[-1])
        err = ft.grad_norm * problem.N / smin**2
        b = rank_bound if rank_bound is not None else r_max(problem.K, problem.N)
        s_next = max((float(torch.linalg.svdvals(Dj)[b]) for Dj in ft.D if min(Dj.shape) > b), default=0.0)
        cert.update(error_bound=err, sigma_next=s_next)
        margin_ok = s_next > 2 * err
    if uq.unique and margin_ok:
        path = save_counterexample(problem, save_dir, claim, ft.D, opts)
        return Verdict(
            claim,
            "violated",
            problem.fingerprint(),
            cert,
            f"the FT minimizer is unique ({uq.reason}) and has rank {list(red.ranks_after)}, "
            f"above the claimed bound",
            timings,
            opts,
            path,
        )
    return Verdict(
        claim,
        "inconclusive",
        problem.fingerprint(),
        cert,
        f"could not reduce below {list(red.ranks_after)} ({red.stopped}); minimizer not "
        f"unique, so no counterexample either",
        timings,
        opts,
    )


# --------------------------------------------------------------------------------------------------
def _rank_nuc(
    claim: str,
    problem: Problem,
    *,
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
    t0 = time.perf_counter()
    sol = _nuc_solution(problem, solution, gap_rtol, seed)
    t_solve = time.perf_counter() - t0
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
        return Verdict(
            claim,
            "inconclusive",
            problem.fingerprint(),
            cert,
            f"NUC not solved to the gap tolerance (rel gap {c0.rel_gap:.1e}, not within +-{gap_rtol:.0e})",
            {"solve": t_solve},
            opts,
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
    timings = {"solve": t_solve, "reduce": red.seconds}
    if not c1.within(gap_rtol):
        return Verdict(
            claim,
            "inconclusive",
            problem.fingerprint(),
            cert,
            f"the reduced point lost the gap certificate (rel gap {c1.rel_gap:.1e})",
            timings,
            opts,
        )
    if _within(ranks, rank_bound, problem.KN):
        return Verdict(
            claim,
            "holds",
            problem.fingerprint(),
            cert,
            f"certified NUC minimizer (rel gap {_gap_text(c1.rel_gap)}) of rank {list(ranks)}, "
            f"{_bound_text(rank_bound, problem)}",
            timings,
            opts,
        )
    if rank_bound == 0:
        # The bound admits only D = 0, and 0 minimizes the convex NUC objective iff
        # 0 is in grad L(0) + lam d||0||_*, i.e. ||grad_j L(0)||_op <= lam_j for every block.
        S0 = problem.evaluate(problem.zeros()).S
        ratios = [float(torch.linalg.matrix_norm(s, 2)) / lam for s, lam in zip(S0, problem.lam)]
        cert.update(S_op_at_zero_over_lam=ratios)
        margin = 1e-10  # far above the rounding error of a computed operator norm
        if max(ratios) > 1.0 + margin:
            j = max(range(len(ratios)), key=lambda i: ratios[i])
            path = save_counterexample(problem, save_dir, claim, red.D, opts)
            return Verdict(
                claim,
                "violated",
                problem.fingerprint(),
                cert,
                f"D = 0 is not a minimizer: ||grad L(0)||_op = {ratios[j]:.6g} lam in block {j} "
                f"(optimality at 0 needs <= lam), so every minimizer has a nonzero block, which breaks "
                f"'{_bound_text(rank_bound, problem)}'",
                timings,
                opts,
                path,
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
        path = save_counterexample(problem, save_dir, claim, red.D, opts)
        return Verdict(
            claim,
            "violated",
            problem.fingerprint(),
            cert,
            f"the NUC minimizer is unique ({uq.reason}) and has rank {list(ranks)}, "
            f"which breaks '{_bound_text(rank_bound, problem)}'",
            timings,
            opts,
            path,
        )
    return Verdict(
        claim,
        "inconclusive",
        problem.fingerprint(),
        cert,
        f"reduction stopped at rank {list(ranks)} ({red.stopped}); uniqueness "
        f"({uq.reason}) or the rank of the unique minimizer (certified >= {list(certified)}) "
        "does not refute the claim",
        timings,
        opts,
    )


@validated("JLR-rank-NUC")
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
    """
    if len(problem.blocks) != 1:
        raise UserInputError(
            f"problem: JLR-rank-NUC is the single-matrix claim, got {len(problem.blocks)} blocks "
            "(use check_jlr_rank_blocks)"
        )
    return _rank_nuc(
        "JLR-rank-NUC",
        problem,
        rank_bound=rank_bound,
        gap_rtol=gap_rtol,
        rank_rtol=rank_rtol,
        seed=seed,
        solution=solution,
        save_dir=save_dir,
    )


@validated("JLR-rank-blocks")
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
    """
    return _rank_nuc(
        "JLR-rank-blocks",
        problem,
        rank_bound=rank_bound,
        gap_rtol=gap_rtol,
        rank_rtol=rank_rtol,
        seed=seed,
        solution=solution,
        save_dir=save_dir,
    )


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


@validated("JLR-equiv")
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
    t0 = time.perf_counter()
    sol = _nuc_solution(problem, solution, gap_rtol, seed)
    red = reduce_rank(problem, sol.D, rank_rtol=rank_rtol)
    c = nuc_certificate(problem, red.D)
    t_nuc = time.perf_counter() - t0
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
        return Verdict(
            claim,
            "inconclusive",
            problem.fingerprint(),
            cert,
            f"NUC not certified (rel gap {c.rel_gap:.1e})",
            {"nuc": t_nuc},
            opts,
        )
    k = max(red.ranks_after)
    if r < k:
        Du, uq = _tight_uniqueness(problem, red.D, c.gap, seed=seed, rank_rtol=rank_rtol)
        certified = _certified_ranks(Du, uq.rank_error)
        cert.update(
            unique=uq.unique,
            injectivity=uq.injectivity,
            certified_min_ranks=certified,
            rank_error_bound=uq.rank_error,
        )
        if enforce_hypothesis and not uq.unique:
            return Verdict(
                claim,
                "inconclusive",
                problem.fingerprint(),
                cert,
                f"hypothesis not met: the NUC minimizer found has rank {k} > r = {r}",
                {"nuc": t_nuc},
                opts,
            )
        if enforce_hypothesis:
            return Verdict(
                claim,
                "inconclusive",
                problem.fingerprint(),
                cert,
                f"hypothesis fails: the unique NUC minimizer has rank {k} > r = {r}",
                {"nuc": t_nuc},
                opts,
            )
    # (1) balanced factors of the NUC minimizer
    bf = balanced_factors(red.D, rank=max(r, k))
    F_bal = lora_value(problem, bf.U, bf.V)
    cert["lora_at_balanced_nuc_factors"] = F_bal
    cert["identity_residual"] = abs(F_bal - P_star) / scale
    # (2) train LoRA at rank r
    t1 = time.perf_counter()

    def done(pt: LoRAPoint, _it: int) -> bool:
        # Stop once at the optimum *and* balanced well inside the tolerances.
        if lora_value(problem, pt.U, pt.V) - P_star > 0.5 * gap_rtol * scale:
            return False
        return _imbalance_rel(pt) <= 0.1 * balance_rtol

    tr = minimize_lora(problem, rank=r, seed=seed, init_scale=0.1, callback=done, callback_every=10)
    t_train = time.perf_counter() - t1
    excess = (tr.value - P_star) / scale
    U, V = tr.point.U, tr.point.V
    imbalance = max(float(torch.linalg.matrix_norm(u.T @ u - v.T @ v)) for u, v in zip(U, V))
    norm_uv = max(float(u.norm() + v.norm()) for u, v in zip(U, V))
    lam = problem.lam[0]
    cert.update(
        lora_trained_objective=tr.value,
        lora_excess=excess,
        lora_grad_norm=tr.grad_norm,
        lora_iterations=tr.iterations,
        imbalance=imbalance,
        imbalance_bound=norm_uv * tr.grad_norm / lam,
        imbalance_rel=_imbalance_rel(tr.point),
    )
    timings = {"nuc": t_nuc, "train": t_train}
    if r < k:
        # variant "for every r": unique minimizer of rank k > r means min over rank <= r exceeds P*.
        if cert.get("unique") and max(cert["certified_min_ranks"]) > r:
            path = save_counterexample(problem, save_dir, claim, red.D, opts)
            return Verdict(
                claim,
                "violated",
                problem.fingerprint(),
                cert,
                f"the unique NUC minimizer has rank {k} > r = {r}, so min LoRA > min NUC "
                f"(trained LoRA stays {excess:.1e} above)",
                timings,
                opts,
                path,
            )
        return Verdict(
            claim,
            "inconclusive",
            problem.fingerprint(),
            cert,
            f"r = {r} below the NUC rank {k}, but no certified separation",
            timings,
            opts,
        )
    ok_identity = cert["identity_residual"] <= 1e-10
    # LoRA can never beat NUC: a trained value below the certified dual bound is a numerical failure.
    ok_train = -gap_rtol <= excess <= gap_rtol and tr.value >= c.dual - gap_rtol * scale
    ok_bal = cert["imbalance_rel"] <= balance_rtol
    if ok_identity and ok_train and ok_bal:
        return Verdict(
            claim,
            "holds",
            problem.fingerprint(),
            cert,
            f"LoRA at r = {r} reaches the NUC optimum (excess {excess:.1e}), balanced "
            f"(rel. imbalance {cert['imbalance_rel']:.1e})",
            timings,
            opts,
        )
    if not ok_identity:
        return Verdict(
            claim,
            "inconclusive",
            problem.fingerprint(),
            cert,
            "numerical failure: LoRA objective at balanced factors differs from NUC by "
            f"{cert['identity_residual']:.1e}",
            timings,
            opts,
        )
    what = "did not reach the NUC optimum" if not ok_train else "is not balanced"
    return Verdict(
        claim,
        "inconclusive",
        problem.fingerprint(),
        cert,
        f"trained LoRA {what} within tolerance (excess {excess:.1e}, rel. imbalance "
        f"{cert['imbalance_rel']:.1e}); a local method's end point is no counterexample",
        timings,
        opts,
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


def _objective_function(problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]) -> tuple[Any, Tensor]:
    """The LoRA objective of the flat factors, written from its definition (not the closed forms)."""
    sizes = [(u.shape, v.shape) for u, v in zip(U, V)]
    x0 = torch.cat([torch.cat([u.reshape(-1), v.reshape(-1)]) for u, v in zip(U, V)])

    def f(x: Tensor) -> Tensor:
        k, Ds, reg = 0, [], x.new_zeros(())
        for (su, sv), lam in zip(sizes, problem.lam):
            nu, nv = su[0] * su[1], sv[0] * sv[1]
            u = x[k : k + nu].reshape(su)
            v = x[k + nu : k + nu + nv].reshape(sv)
            k += nu + nv
            Ds.append(u @ v.T)
            reg = reg + 0.5 * lam * ((u * u).sum() + (v * v).sum())
        z = problem.f0 + problem.J.matvec(torch.cat([d.reshape(-1) for d in Ds])).reshape(
            problem.N, problem.K
        )
        return problem.loss.value(z, problem.y).mean() + reg

    return f, x0


def lora_hessian_dense(problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]) -> Tensor:
    """Dense Hessian of the LoRA objective by autodiff (``torch.func.hessian``); small sizes only.

    Variable order: for each block, ``vec(U_j)`` then ``vec(V_j)`` (row-major).
    """
    f, x0 = _objective_function(problem, U, V)
    return torch.func.hessian(f)(x0)


class AutodiffHessian(LinearOperator):
    r"""The Hessian of the LoRA objective as an operator, by autodiff (``jvp`` of ``grad``).

    The objective is written from its definition (:func:`lora_hessian_dense`'s function), so its
    products share no code with the closed-form HVP of :mod:`landscapes.lora`; one product costs
    about two gradients.
    """

    def __init__(self, problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]) -> None:
        f, self.x0 = _objective_function(problem, U, V)
        self.grad = torch.func.grad(f)
        P = int(self.x0.numel())
        self.shape = (P, P)
        self.dtype, self.device = self.x0.dtype, self.x0.device
        self.count = 0

    def _matvec(self, x: Tensor) -> Tensor:
        self.count += 1
        return torch.func.jvp(self.grad, (self.x0,), (x,))[1]

    def _rmatvec(self, y: Tensor) -> Tensor:
        return self._matvec(y)


@validated("JLR-zero-saddle")
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
    * the structured route (:func:`landscapes.curvature.lora.lambda_min_structured`): a rigorous
      interval from an eigendecomposition of the column-pair matrix and an inertia count.  At
      zero the Gauss--Newton term vanishes and this route *is* the closed form (the eigenvalues
      of the column-pair matrix are :math:`\lambda_j \pm \sigma_i(S_j)`): it checks the
      arithmetic, not the claim, which is why the autodiff route runs whenever it fits.

    ``violated``: the dense eigenvalue differs from the prediction, or the prediction lies
    outside the structured interval, or above a Lanczos Rayleigh quotient (closed-form or
    autodiff), by more than ``tol``.  ``holds``: every route that ran agrees.  Zero is a strict
    saddle iff the value is negative; the certificate states which.
    """
    from landscapes.curvature.lora import lambda_min_lanczos, lambda_min_structured

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
    timings: dict[str, float] = {}
    failures: list[str] = []
    routes: list[str] = []
    ta = time.perf_counter()
    la = lambda_min_lanczos(problem, U, V, tol=lanczos_tol)
    timings["lanczos"] = time.perf_counter() - ta
    # the tolerance follows the Hessian's own scale (no max(1, .): a rescaled problem gets the same verdict)
    scale = abs(la.lambda_max) if math.isfinite(la.lambda_max) else abs(predicted)
    structured = None
    if isinstance(problem.J, DenseOperator) or problem.KN <= 4096:
        ts = time.perf_counter()
        structured = lambda_min_structured(problem, U, V, rtol=1e-12)
        timings["structured"] = time.perf_counter() - ts
        scale = max(scale, abs(structured.lambda_max))
    tol = rtol * scale
    cert.update(
        lanczos_lambda_min=la.value,
        lanczos_residual=la.residual,
        lanczos_matvecs=la.matvecs,
        lanczos_converged=la.converged,
        tolerance=tol,
    )
    routes.append("Lanczos")
    # A Lanczos route refutes a prediction above its Rayleigh quotient (rigorous), and matches it
    # when the prediction is within the residual of its Ritz value (an eigenvalue lies there); a
    # prediction below every eigenvalue it found is not matched, but not refuted either (Lanczos
    # does not prove that there is none lower).
    unmatched: list[str] = []
    if predicted > la.upper + tol:
        failures.append(f"Lanczos Rayleigh quotient {la.upper:.6g} < predicted {predicted:.6g}")
    elif abs(predicted - la.value) > la.residual + tol:
        unmatched.append(f"closed-form Lanczos found {la.value:.6g} (residual {la.residual:.1e})")
    if structured is not None:
        routes.append("structured")
        cert.update(structured_lower=structured.lower, structured_upper=structured.upper)
        if not (structured.lower - tol <= predicted <= structured.upper + tol):
            failures.append(
                f"predicted {predicted:.6g} outside the structured interval "
                f"[{structured.lower:.6g}, {structured.upper:.6g}]"
            )
    # torch.func.hessian of the objective materializes about n_params x p numbers of J products.
    # Where that does not fit, Lanczos on autodiff Hessian-vector products of the objective's own
    # definition: the structured route at zero reduces to the closed form the prediction comes from
    # (eigenvalues lam +- sigma_i(S)), and this route does not.
    dense_fits = n_params <= max_dense and 8 * n_params * problem.num_params <= 2**31
    if not dense_fits:
        from landscapes.curvature.lora import smallest_ritz_pair

        routes.append("Lanczos (autodiff HVP)")
        tl = time.perf_counter()
        op = AutodiffHessian(problem, U, V)
        w, X, conv, n_mv, _ = smallest_ritz_pair(
            # its Rayleigh quotient bounds lambda_min from above whatever its accuracy: a looser
            # ARPACK tolerance than the closed-form route's saves autodiff products
            op.to_scipy(),
            n_params,
            tol=max(lanczos_tol, 1e-8),
            maxiter=None,
            seed=1,
            estimate_lambda_max=False,
        )
        x = torch.as_tensor(X[:, 0], dtype=problem.dtype, device=problem.device)
        x = x / x.norm()
        Hx = op.matvec(x)
        theta = float(x @ Hx)
        resid = float((Hx - theta * x).norm())
        timings["lanczos_autodiff"] = time.perf_counter() - tl
        cert.update(
            autodiff_lanczos_rayleigh=theta,
            autodiff_lanczos_residual=resid,
            autodiff_lanczos_matvecs=op.count,
            autodiff_lanczos_converged=conv,
        )
        # a Rayleigh quotient of the true Hessian bounds lambda_min from above, rigorously
        if predicted > theta + tol:
            failures.append(
                f"autodiff Hessian has Rayleigh quotient {theta:.6g} below the predicted {predicted:.6g}"
            )
        # and an eigenvalue lies within the residual of theta (Lanczos finds the smallest in practice)
        elif abs(predicted - theta) > resid + tol:
            unmatched.append(f"autodiff Lanczos found {theta:.6g} (residual {resid:.1e})")
    if dense_fits:
        td = time.perf_counter()
        routes.append("dense eigh (autodiff)")
        H = lora_hessian_dense(problem, U, V)
        evals, evecs = torch.linalg.eigh(H)
        timings["dense"] = time.perf_counter() - td
        theta, x = float(evals[0]), evecs[:, 0]
        resid = float((H @ x - theta * x).norm())
        tol = rtol * max(scale, abs(float(evals[-1])))
        err = abs(theta - predicted)
        cert.update(
            dense_lambda_min=theta,
            dense_lambda_max=float(evals[-1]),
            eigen_residual=resid,
            abs_error=err,
            tolerance=tol,
        )
        if err > tol:
            failures.append(f"dense lambda_min = {theta:.6g} but predicted {predicted:.6g} (error {err:.1e})")
    value = cert.get("dense_lambda_min", structured.value if structured is not None else la.value)
    cert["strict_saddle"] = value < -tol
    cert["routes"] = routes
    timings["total"] = time.perf_counter() - t0
    if not failures and unmatched:
        cert["unmatched"] = unmatched
        return Verdict(
            claim,
            "inconclusive",
            problem.fingerprint(),
            cert,
            f"predicted {predicted:.6g} lies below the eigenvalues found ({'; '.join(unmatched)}); "
            "no route refutes it (Lanczos does not prove there is no lower eigenvalue) and not every "
            "route matches it",
            timings,
            opts,
        )
    if not failures:
        kind = "a strict saddle" if value < -tol else "not a strict saddle"
        return Verdict(
            claim,
            "holds",
            problem.fingerprint(),
            cert,
            f"lambda_min = {value:.6g} matches the prediction by {len(routes)} routes "
            f"({', '.join(routes)}); zero is {kind}",
            timings,
            opts,
        )
    path = save_counterexample(problem, save_dir, claim, problem.zeros(), opts)
    return Verdict(claim, "violated", problem.fingerprint(), cert, "; ".join(failures), timings, opts, path)


_ = np  # numpy arrays appear in saved counterexamples
