r"""The data of the [JLR24] phase diagram: how often LoRA training ends at the global minimum.

For each cell ``(r, K, N)`` of a grid, a synthetic problem (one per ``(K, N)``, Gaussian ``J``) is
solved once to a certified NUC optimum :math:`P^\star`; then ``runs`` LoRA trainings at rank ``r``
(L-BFGS with negative-curvature escapes, :func:`landscapes.sosp.find_sosp`) start from diverse
inits.  A run *ends at a global minimum* when its objective is within
``gap_rtol * max(|P*|, L(0))`` of :math:`P^\star` (then its product is a NUC minimizer); a run that
ends at an approximate SOSP above that is a *certified spurious* point when an exact local
minimizer is certified near it with an objective still above :math:`P^\star`
(:func:`verify.jlr.second_order.counterexample_test`; for ``r`` at least the rank of the NUC minimizer,
where the global LoRA minimum equals :math:`P^\star`).  The theory predicts 100%
global convergence above the curve :math:`r(r+1)/2 = KN`.

The results are JSON (format ``loracheck.phase``, version 1: :mod:`verify.results`), rewritten
atomically after every cell so an interrupted sweep keeps its finished cells; the figure is drawn
by ``figures`` from this file.

The same computation runs as a distributed sweep (``loracheck sweep``, :mod:`verify.sweep.config`): one
task (:data:`PHASE_TASK`) is one training, and :func:`phase_data_from_store` builds the same
``loracheck.phase`` data from the sweep's result store.  Both routes share the building blocks
:func:`phase_problem`, :func:`phase_reference` (the certified NUC optimum, solved with a fixed
certificate schedule so that it is reproducible bit for bit) and :func:`phase_run` (one
training, classified).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from landscapes.losses import LOSS_NAMES
from landscapes.nuc import solve_nuc
from landscapes.problem import Problem
from landscapes.sosp import INIT_KINDS, find_sosp, make_init, objective_scale
from landscapes.synthetic import gaussian_problem
from theory.bounds import r_max, triangular
from theory.errors import InputTypeError, UserInputError, shown
from verify.jlr.second_order import counterexample_test
from verify.results import ResultsFile
from verify.taskkind import Param, TaskKind, derive_seed

__all__ = [
    "DEFAULT_KN",
    "DEFAULT_RANKS",
    "PHASE_MEMORY_BUDGET",
    "PHASE_FORMAT",
    "PHASE_VERSION",
    "PHASE_TASK",
    "PhaseReference",
    "PhaseRun",
    "phase_cell",
    "phase_memory_estimate",
    "phase_problem",
    "phase_reference",
    "phase_run",
    "phase_summary",
    "phase_sweep",
    "phase_table",
    "phase_task",
]

#: The format of the phase data (:mod:`verify.results`), at version :data:`PHASE_VERSION`; files
#: written before the ``version`` key said ``"schema": "loracheck.phase/1"`` and are still drawn.
PHASE_FORMAT = "loracheck.phase"
PHASE_VERSION = 1
DEFAULT_KN: tuple[tuple[int, int], ...] = ((1, 3), (1, 6), (1, 10), (1, 15), (2, 10), (1, 28))
DEFAULT_RANKS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
#: Bytes one phase problem may plan for (:func:`phase_memory_estimate`); a larger one is refused
#: before anything is allocated, by :func:`phase_sweep` and by the sweep task's check.
PHASE_MEMORY_BUDGET = 4 * 2**30
#: Most trainings :func:`phase_sweep` runs (cells x runs); a larger phase diagram is a sweep
#: (``loracheck sweep``, whose limit ``--max-tasks`` can be raised).
MAX_PHASE_RUNS = 10**6


def phase_memory_estimate(K: int, N: int, size: int) -> int:
    r"""Bytes of the largest arrays of one phase problem: a lower bound on what solving it needs.

    The Jacobian :math:`J` (:math:`KN \times size^2`, float64) and one temporary of its size,
    plus the Gram matrix :math:`JJ^\top` (:math:`KN \times KN`) of its operator norm.

    >>> phase_memory_estimate(1, 3, 12)  # the default diagram's smallest problem
    6984
    """
    kn = K * N
    return 8 * (2 * kn * size * size + kn * kn)


def _check_phase_size(K: int, N: int, size: int, where: str) -> None:
    """Refuse a problem over :data:`PHASE_MEMORY_BUDGET` before anything is allocated."""
    need = phase_memory_estimate(K, N, size)
    if need > PHASE_MEMORY_BUDGET:
        # ints of any size (10**400 from a TOML file): no float division, no repr beyond shown()
        gib = f"{need / 2**30:.3g}" if need.bit_length() < 1000 else f"2**{need.bit_length() - 31}"
        raise UserInputError(
            f"{where}: expected a problem within the phase memory budget of "
            f"{PHASE_MEMORY_BUDGET / 2**30:g} GiB, got K = {shown(K)}, N = {shown(N)}, size = {shown(size)}: "
            f"its Jacobian ({shown(K * N)} x {shown(size * size)} float64) and Gram matrix need about "
            f"{gib} GiB"
        )


@dataclass(frozen=True)
class PhaseReference:
    r"""The certified NUC optimum of a phase-diagram problem: what a training is compared with.

    ``primal`` is the NUC objective at the returned point (an upper bound on :math:`P^\star`),
    ``dual`` a certified lower bound, ``rel_gap`` their relative gap, ``rank`` the numerical rank
    of the minimizer (one block).
    """

    problem: Problem = field(repr=False)
    primal: float
    dual: float
    rel_gap: float
    rank: int
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the problem)."""
        return {
            "primal": self.primal,
            "dual": self.dual,
            "rel_gap": self.rel_gap,
            "rank": self.rank,
            "converged": self.converged,
        }


@dataclass(frozen=True)
class PhaseRun:
    r"""One LoRA training of the phase diagram, from its init to a certified end point, classified.

    ``is_global``: the end objective is within ``gap_rtol * max(|P*|, L(0))`` of the certified lower
    bound (the NUC dual value); ``certified_sosp``: the end point is an approximate SOSP;
    ``spurious``: an exact local minimizer is certified near it, with an objective above the NUC
    primal value by that tolerance (``None`` when not tested: global, not an approximate SOSP, or
    ``r`` below the NUC rank);
    ``S_op_over_lam``: :math:`\|\nabla L(UV^\top)\|_{op} / \lambda` (at most 1 at a NUC minimizer).
    """

    init: str
    rank: int
    objective: float
    objective_minus_nuc: float
    is_global: bool
    certified_sosp: bool
    product_rank: int
    S_op_over_lam: float
    grad_norm: float
    lambda_min_lower: float
    escapes: int
    iterations: int
    spurious: bool | None = None

    def end(self) -> dict[str, Any]:
        """The run as an entry of a cell's ``ends`` in the phase data (``loracheck.phase``)."""
        return {
            "init": self.init,
            "objective_minus_nuc": self.objective_minus_nuc,
            "global": self.is_global,
            "certified_sosp": self.certified_sosp,
            "spurious": self.spurious,
            "product_rank": self.product_rank,
            "S_op_over_lam": self.S_op_over_lam,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field (JSON-friendly; no timings, so equal runs give equal dicts)."""
        return {
            **self.end(),
            "rank": self.rank,
            "objective": self.objective,
            "grad_norm": self.grad_norm,
            "lambda_min_lower": self.lambda_min_lower,
            "escapes": self.escapes,
            "iterations": self.iterations,
        }


def phase_problem(K: int, N: int, *, size: int, loss: str, lam: float, seed: int) -> Problem:
    """The phase diagram's problem for ``(K, N)``: Gaussian ``J``, one ``size x size`` block."""
    return gaussian_problem(K=K, N=N, blocks=[(size, size)], lam=lam, loss=loss, seed=seed)


def phase_reference(problem: Problem, *, gap_rtol: float = 1e-8) -> PhaseReference:
    """Solve NUC to a relative gap of ``min(1e-10, gap_rtol / 100)``, reproducibly.

    The certificate schedule is fixed (``check_schedule="fixed"``), so the optimum is a function
    of the problem alone (and the thread settings), never of the wall clock.
    """
    nuc = solve_nuc(problem, gap_rtol=min(1e-10, 0.01 * gap_rtol), check_schedule="fixed")
    c = nuc.certificate
    if c.rel_gap < -gap_rtol:  # dual above primal beyond round-off: neither bound can be trusted
        raise ArithmeticError(
            f"the NUC reference of K = {problem.K}, N = {problem.N}, lam = {problem.lam[0]:.3g} has a "
            f"dual bound above its primal value (relative gap {c.rel_gap:.2g}): the bounds are lost to "
            "round-off, so no run can be classified; choose a larger lam"
        )
    return PhaseReference(
        problem=problem,
        primal=c.primal,
        dual=c.dual,
        rel_gap=c.rel_gap,
        rank=nuc.ranks[0],
        converged=nuc.converged,
    )


def phase_run(
    reference: PhaseReference,
    *,
    rank: int,
    init: str,
    init_seed: int,
    sosp_seed: int,
    gap_rtol: float = 1e-8,
) -> PhaseRun:
    """Train LoRA at ``rank`` from an ``init`` start to a certified end point and classify it.

    :func:`landscapes.sosp.find_sosp` (L-BFGS with negative-curvature escapes, ``seed =
    sosp_seed``) from :func:`landscapes.sosp.make_init` (``kind = init``, a generator seeded with
    ``init_seed``); an ``"adversarial"`` start at ``rank = 1`` (where it would be the point next
    to zero) is replaced by ``"large"``.
    """
    P = reference.problem
    kind = "large" if init == "adversarial" and rank == 1 else init
    gen = torch.Generator().manual_seed(init_seed)
    run = find_sosp(P, make_init(P, [rank], kind, generator=gen), seed=sosp_seed)  # type: ignore[arg-type]
    c = run.certificate
    tol = gap_rtol * objective_scale(P, reference.primal)
    is_global = c.objective - reference.dual <= tol
    spurious = None
    if c.is_sosp and not is_global and c.objective - reference.primal > tol and rank >= reference.rank:
        test = counterexample_test(
            P,
            run.point,
            None,
            c.stacked_ranks,
            [rank],
            reference.primal,
            order=2,
            grad_norm=c.grad_norm,
            grad_tol=c.grad_tol,
            gap_rtol=gap_rtol,
            method="auto",
        )
        spurious = bool(test["certified"])
    return PhaseRun(
        init=kind,
        rank=rank,
        objective=c.objective,
        objective_minus_nuc=c.objective - reference.primal,
        # global: within tol of the certified lower bound (NUC dual value)
        is_global=is_global,
        certified_sosp=c.is_sosp,
        product_rank=c.product_ranks[0],
        S_op_over_lam=c.S_op[0] / P.lam[0],
        grad_norm=c.grad_norm,
        lambda_min_lower=c.curvature.lower,
        escapes=run.escapes,
        iterations=run.iterations,
        spurious=spurious,
    )


def phase_cell(
    *,
    K: int,
    N: int,
    r: int,
    reference: Mapping[str, Any],
    ends: Sequence[Mapping[str, Any]],
    gap_rtol: float,
) -> dict[str, Any]:
    """One cell of the phase data (``loracheck.phase``) from its runs' ``ends`` and the NUC ``reference``.

    A run is *certified spurious* when an exact local minimizer is certified near its end point
    with an objective above the NUC primal value (:class:`PhaseRun`'s ``spurious``, decided when
    the run was classified); the count is ``None`` below the NUC rank, where the LoRA optimum
    itself lies above the NUC one.  (``gap_rtol`` is kept for the record of the cell.)
    """
    runs = len(ends)
    n_glob = sum(bool(e["global"]) for e in ends)
    spurious = sum(bool(e.get("spurious")) for e in ends)
    return {
        "r": r,
        "K": K,
        "N": N,
        "KN": K * N,
        "r(r+1)/2": triangular(r),
        "above_bound": triangular(r) > K * N,
        "nuc_rank": int(reference["rank"]),
        "nuc_rel_gap": float(reference["rel_gap"]),
        "runs": runs,
        "global": n_glob,
        "fraction_global": n_glob / runs if runs else math.nan,
        "certified_sosp": sum(bool(e["certified_sosp"]) for e in ends),
        "certified_spurious": spurious if r >= int(reference["rank"]) else None,
        "ends": [dict(e) for e in ends],
    }


def phase_summary(cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Totals above and below the bound: runs, global runs, certified spurious points."""
    above = [c for c in cells if c["above_bound"]]
    return {
        "cells": len(cells),
        "runs_above_bound": sum(c["runs"] for c in above),
        "global_above_bound": sum(c["global"] for c in above),
        "certified_spurious_above_bound": sum(c["certified_spurious"] or 0 for c in above),
        "certified_spurious_below_bound": sum(
            c["certified_spurious"] or 0 for c in cells if not c["above_bound"]
        ),
    }


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
        raise UserInputError(f"kn: expected non-empty (K, N) pairs of positive ints, got {list(kn)!r}")
    if not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks):
        raise UserInputError(f"ranks: expected positive ints, got {list(ranks)!r}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise UserInputError(f"runs: expected a positive int, got {runs!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserInputError(f"size: expected a positive int, got {size!r}")
    if not inits or any(i not in INIT_KINDS for i in inits):
        raise UserInputError(
            f"inits: expected start kinds among {', '.join(INIT_KINDS)}, got {list(inits)!r}"
        )
    kn = [(int(K), int(N)) for K, N in kn]
    total = len(kn) * len(ranks) * runs
    if total > MAX_PHASE_RUNS:
        raise UserInputError(
            f"runs: expected at most {MAX_PHASE_RUNS} trainings in all, got {total} ({len(kn)} (K, N) "
            f"pairs x {len(ranks)} ranks x {runs} runs); run a larger diagram as a sweep (loracheck "
            "sweep, --max-tasks)"
        )
    for K, N in kn:  # every problem checked before the first is built
        _check_phase_size(K, N, size, "size")
    t0 = time.perf_counter()
    data: dict[str, Any] = {
        "format": PHASE_FORMAT,
        "version": PHASE_VERSION,
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
            P = phase_problem(K, N, size=size, loss=loss, lam=lam, seed=seed * 1000 + pi)
            ref = phase_reference(P, gap_rtol=gap_rtol)
            for r in ranks:
                rr = min(r, size)
                ends = [
                    phase_run(
                        ref,
                        rank=rr,
                        init=inits[i % len(inits)],
                        init_seed=seed * 7919 + pi * 131 + r * 17 + i,
                        sosp_seed=i,
                        gap_rtol=gap_rtol,
                    ).end()
                    for i in range(runs)
                ]
                data["cells"].append(
                    phase_cell(K=K, N=N, r=rr, reference=ref.to_dict(), ends=ends, gap_rtol=gap_rtol)
                )
                data["seconds"] = time.perf_counter() - t0
                if out is not None:
                    _write(data, out)
                bar.update(1)
    finally:
        bar.close()
    data["complete"] = True
    data["seconds"] = time.perf_counter() - t0
    data["summary"] = phase_summary(data["cells"])
    if out is not None:
        _write(data, out)
    return data


def _write(data: dict[str, Any], out: str | Path) -> Path:
    return ResultsFile(out, fmt=PHASE_FORMAT, version=PHASE_VERSION).save(data, default=_default)


def _default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise InputTypeError(f"not JSON serializable: {type(x).__name__}")


# ---------------------------------------------------------------------------------------------
# The phase diagram as a sweep: one task = one training
# ---------------------------------------------------------------------------------------------
#: Parameters that identify one diagram (every other parameter varies within it).
DIAGRAM_KEYS = ("size", "loss", "lam", "gap_rtol", "seed", "problem_seed")


@functools.lru_cache(maxsize=16)
def _cached_reference(
    K: int, N: int, size: int, loss: str, lam: float, seed: int, gap_rtol: float
) -> PhaseReference:
    # One NUC solve per problem and worker process: the tasks of a problem share it.  Caching
    # cannot change a result, since the solve is a deterministic function of its arguments.
    return phase_reference(phase_problem(K, N, size=size, loss=loss, lam=lam, seed=seed), gap_rtol=gap_rtol)


def phase_task(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One training of the phase diagram as a sweep task (:data:`PHASE_TASK`).

    The problem's seed is derived from ``(seed, K, N, size, loss, lam, problem_seed)`` only, so
    every rank, init and replicate of a ``(K, N)`` trains on the same problem against the same
    certified NUC optimum; the init's and the optimizer's seeds are derived from the whole spec.
    Returns :meth:`PhaseRun.to_dict` plus ``r``, the reference (``nuc``) and the ``seeds``.
    """
    K, N, r = int(spec["K"]), int(spec["N"]), int(spec["r"])
    size, loss, lam = int(spec["size"]), str(spec["loss"]), float(spec["lam"])
    gap_rtol = float(spec["gap_rtol"])
    problem_seed = derive_seed("phase.problem", spec["seed"], K, N, size, loss, lam, spec["problem_seed"])
    ref = _cached_reference(K, N, size, loss, lam, problem_seed, gap_rtol)
    init_seed = derive_seed("phase.init", dict(spec))
    sosp_seed = derive_seed("phase.sosp", dict(spec)) >> 32  # 31 bits: find_sosp adds escape counts
    run = phase_run(
        ref, rank=r, init=str(spec["init"]), init_seed=init_seed, sosp_seed=sosp_seed, gap_rtol=gap_rtol
    )
    return {
        **run.to_dict(),
        "r": r,
        "nuc": ref.to_dict(),
        "seeds": {"problem": problem_seed, "init": init_seed, "sosp": sosp_seed},
    }


def _check_phase_spec(spec: Mapping[str, Any]) -> None:
    if spec["r"] > spec["size"]:
        raise UserInputError(f"r: expected at most size = {spec['size']}, got {spec['r']}")
    _check_phase_size(spec["K"], spec["N"], spec["size"], "size")
    if spec["loss"] == "logistic" and spec["K"] != 1:
        raise UserInputError(f"K: the logistic loss has K = 1, got {spec['K']}")
    if spec["loss"] == "cross_entropy" and spec["K"] < 2:
        raise UserInputError(f"K: cross_entropy needs K >= 2, got {spec['K']}")


#: The sweep task kind ``"phase"``: one LoRA training of the [JLR24] phase diagram.
PHASE_TASK = TaskKind(
    name="phase",
    function=phase_task,
    params={
        "K": Param("int", doc="outputs per example", low=1),
        "N": Param("int", doc="examples", low=1),
        "r": Param("int", doc="LoRA rank (at most size)", low=1),
        "init": Param("str", "gaussian", doc="start kind of landscapes.sosp.make_init", choices=INIT_KINDS),
        "size": Param("int", 12, doc="m = n of the adapted matrix", low=1),
        "loss": Param("str", "squared", doc="loss of the problem", choices=LOSS_NAMES),
        "lam": Param("float", 1e-3, doc="weight decay", positive=True),
        "gap_rtol": Param(
            "float", 1e-8, doc="global: objective within gap_rtol * max(1, |P*|)", positive=True
        ),
        "problem_seed": Param("int", 0, doc="problem instance per (K, N) (enters the problem's seed)", low=0),
    },
    check=_check_phase_spec,
    doc="one LoRA training of the [JLR24] phase diagram, classified against the certified NUC optimum",
)


def phase_table(data: Mapping[str, Any]) -> str:
    """The phase data as a text table: rows KN, columns r, entries the fraction of global runs.

    ``*`` marks cells above the bound :math:`r(r+1)/2 > KN`; a last line sums up.
    """
    cells = data["cells"]
    runs = sorted({c["runs"] for c in cells})
    runs_txt = str(runs[0]) if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"
    lines = [
        f"fraction of {runs_txt} runs ending at the global minimum (* = above the bound r(r+1)/2 > KN; "
        "below the NUC rank the global minimum is out of reach)"
    ]
    rs = sorted({c["r"] for c in cells})
    lines.append("   KN  NUC rank" + "".join(f"{'r=' + str(r):>8}" for r in rs))
    for K, N in data["config"]["kn"]:
        row = {c["r"]: c for c in cells if (c["K"], c["N"]) == (K, N)}
        entries = "".join(
            f"{(format(row[r]['fraction_global'], '.2f') + ('*' if row[r]['above_bound'] else ' ')):>8}"
            if r in row
            else f"{'':>8}"
            for r in rs
        )
        nuc_rank = next(iter(row.values()))["nuc_rank"] if row else "-"
        lines.append(f"{K * N:>5}  {nuc_rank:>8}{entries}")
    s = data["summary"]
    lines.append(
        f"\nabove the bound: {s['global_above_bound']} of {s['runs_above_bound']} runs global, "
        f"{s['certified_spurious_above_bound']} certified spurious; below: "
        f"{s['certified_spurious_below_bound']} certified spurious."
    )
    return "\n".join(lines)
