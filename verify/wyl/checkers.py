r"""Checkers of the LoRA-GA claims of [WYL24] (Wang, Yu, Li, NeurIPS 2024).

The adapter convention, the inits and the weight offset are those of :mod:`landscapes.inits`:
:math:`\Delta W = s B A - O` with :math:`O = s B_0 A_0`.  With :math:`G = \nabla_W L(W_0)`, one SGD
step of learning rate ``lr`` changes the weight by

.. math:: \Delta W_1 = -\mathrm{lr}\, s^2 (G A_0^\top A_0 + B_0 B_0^\top G)
          + \mathrm{lr}^2 s^3\, G A_0^\top B_0^\top G ,

and for the reference LoRA-GA init the first-order term is :math:`-\mathrm{lr}\,\zeta\, G_{[2r]}`,
:math:`\zeta = s^2 c^2`.  Every checker computes the step with autograd on the risk of the
linearized problem (independent of the closed forms above) and compares it with an independent
SVD of ``G``.  As in :mod:`verify.jlr.rank`, the quantitative part of each claim is an option (which
init, which variant, which predicted cosine), so a planted false variant runs through the same
code and must come out ``violated``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from landscapes.inits import (
    DIRECTIONS,
    INIT_NAMES,
    LoRAInit,
    first_step_change,
    full_gradient,
    gradient_spread,
    init_lora,
    sampled_gradient,
    shifted_problem,
    synthetic_weights,
)
from landscapes.problem import Blocks, Problem
from theory.errors import UserInputError, finite_number
from verify.checker import Judge, checker, fields, fmt, needs_float64, num, save_counterexample
from verify.options import (
    ANY,
    BOOL,
    FLOAT_TOL,
    POS,
    POS_OPT,
    SEED,
    TOL,
    TOL_OPT,
    WYL_INIT,
    Choice,
    Int,
    Rank,
    Real,
)
from verify.verdict import Verdict

__all__ = [
    "first_step",
    "FirstStep",
    "check_wyl_first_step",
    "pipeline_tolerance",
    "check_wyl_directions",
    "check_wyl_unchanged",
    "check_wyl_alignment",
]


@dataclass(frozen=True)
class FirstStep:
    r"""One SGD step from an init, by autograd, one entry per block.

    ``gB``, ``gA``: gradients of the risk in ``B``, ``A``; ``first``: the first-order change
    :math:`-\mathrm{lr}\, s (\nabla_B A_0 + B_0 \nabla_A)`; ``second``: the
    :math:`\mathrm{lr}^2 s \nabla_B \nabla_A` term; ``stepped``: :math:`s (B_1 A_1 - B_0 A_0)`.
    """

    gB: Blocks
    gA: Blocks
    first: Blocks
    second: Blocks
    stepped: Blocks


def first_step(problem: Problem, init: LoRAInit, lr: float) -> FirstStep:
    r"""One SGD step on the risk :math:`L(s B A - O)` from ``init`` (no weight decay), by autograd."""
    s = init.scale
    B = [b.detach().clone().requires_grad_(True) for b in init.B]
    A = [a.detach().clone().requires_grad_(True) for a in init.A]
    with torch.enable_grad():
        D = [s * (b @ a) - o for b, a, o in zip(B, A, init.offset)]
        z = problem.f0 + problem.J.matvec(torch.cat([d.reshape(-1) for d in D])).reshape(problem.N, problem.K)
        risk = problem.loss.value(z, problem.y).mean()
        grads = torch.autograd.grad(risk, B + A)
    b_ = len(B)
    gB = tuple(g.detach() for g in grads[:b_])
    gA = tuple(g.detach() for g in grads[b_:])
    first, second, stepped = [], [], []
    for b0, a0, gb, ga in zip(init.B, init.A, gB, gA):
        first.append(-lr * s * (gb @ a0 + b0 @ ga))
        second.append(lr * lr * s * (gb @ ga))
        stepped.append(s * ((b0 - lr * gb) @ (a0 - lr * ga) - b0 @ a0))
    return FirstStep(gB, gA, tuple(first), tuple(second), tuple(stepped))


def _best_rank(G: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``G_[k]`` and all singular values of ``G`` (full SVD)."""
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    return (U[:, :k] * s[:k]) @ Vh[:k], s


def _rel(x: Tensor, ref: Tensor) -> float:
    den = float(ref.norm())
    return float((x - ref).norm()) / den if den > 0 else float(x.norm())


def _optimal_scale_error(x: Tensor, ref: Tensor) -> tuple[float, float]:
    """``min_{t > 0} ||x - t ref|| / ||t* ref||`` and the cosine of ``x`` and ``ref``.

    Only positive scales count (a step along ``-ref`` is not proportional to ``ref`` in the
    claim's sense): ``inf`` when the best scale is not positive.
    """
    nr, nx = float(ref.norm()), float(x.norm())
    if nr == 0 or nx == 0:
        return math.inf, 0.0
    cos = float((x * ref).sum()) / (nr * nx)
    t = float((x * ref).sum()) / nr**2
    if not t > 0:
        return math.inf, cos
    return float((x - t * ref).norm()) / (abs(t) * nr), cos


def _model_or_synthetic_weights(problem: Problem, seed: int) -> tuple[Tensor, ...]:
    """Base weights for ``pissa``: the model's when the problem was built from one, else stand-ins."""
    if "model_path" in problem.meta and "targets" in problem.meta:
        from landscapes.transformer.encoder import target_weights

        return target_weights(problem)
    return synthetic_weights(problem, seed=seed)


def _check_tol(name: str, v: float) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and finite_number(v)):
        raise UserInputError(f"{name}: expected a positive finite number, got {v!r}")


def _check_common(problem: Problem, rank: int, lr: float) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserInputError(f"rank: expected a positive int (rank >= 1), got {rank!r}")
    for j, (m, n) in enumerate(problem.blocks):
        if 2 * rank > min(m, n):
            raise UserInputError(
                f"rank: LoRA-GA needs 2 r <= min(m, n) = {min(m, n)} on block {j}, got r = {rank}"
            )
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and finite_number(lr)):
        raise UserInputError(f"lr: expected a positive finite number, got {lr!r}")


def _expected_scales(
    problem: Problem, rank: int, alpha: float | None, rslora: bool, gamma: float
) -> tuple[float, list[float]]:
    r"""The LoRA scale :math:`s` and the stable scales :math:`c_j = m_j^{1/4}/\sqrt\gamma`, from the options.

    Recomputed here, independent of the init under test (``ini.scale``, ``ini.details``): ``alpha``
    defaults to ``2 r`` as in :func:`~landscapes.inits.init_lora`; :math:`s = \alpha/\sqrt r` with
    rsLoRA, :math:`\alpha / r` otherwise.
    """
    a = 2.0 * rank if alpha is None else alpha
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not (a > 0 and math.isfinite(a)):
        raise UserInputError(f"alpha: expected None or a positive finite number, got {alpha!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < math.inf:
        raise UserInputError(f"gamma: expected a positive finite number, got {gamma!r}")
    s = float(a) / (math.sqrt(rank) if rslora else rank)
    return s, [m**0.25 / math.sqrt(gamma) for m, _ in problem.blocks]


def _check_options(
    *,
    init: str,
    alpha: float | None,
    rslora: bool,
    gamma: float,
    direction: str,
    gradient: str,
    svd: str,
    batch_size: int,
    batches: int,
    sketch: int | None,
    niter: int,
    failure_probability: float,
    pipeline_rtol: float | None,
    rank: int,
) -> None:
    """Validate every option of :func:`check_wyl_first_step`, whatever the mode (ValueError naming it)."""
    if init not in INIT_NAMES:
        raise UserInputError(f"init: expected one of {INIT_NAMES}, got {init!r}")
    if gradient not in ("exact", "sampled"):
        raise UserInputError(f"gradient: expected 'exact' or 'sampled', got {gradient!r}")
    if svd not in ("full", "randomized"):
        raise UserInputError(f"svd: expected 'full' or 'randomized', got {svd!r}")
    if not isinstance(rslora, bool):
        raise UserInputError(f"rslora: expected a bool, got {rslora!r}")
    if direction not in DIRECTIONS:
        raise UserInputError(f"direction: expected one of {DIRECTIONS}, got {direction!r}")
    for name, v in (("batch_size", batch_size), ("batches", batches)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")
    if isinstance(niter, bool) or not isinstance(niter, int) or niter < 0:
        raise UserInputError(f"niter: expected an int >= 0, got {niter!r}")
    if sketch is not None and (isinstance(sketch, bool) or not isinstance(sketch, int) or sketch < 2 * rank):
        raise UserInputError(f"sketch: expected None or an int >= 2 r = {2 * rank}, got {sketch!r}")
    if not (isinstance(failure_probability, float) and 0 < failure_probability < 1):
        raise UserInputError(f"failure_probability: expected a float in (0, 1), got {failure_probability!r}")
    if pipeline_rtol is not None:
        _check_tol("pipeline_rtol", pipeline_rtol)
    if (gradient != "exact" or svd != "full") and init not in ("loraga", "loraga-peft"):
        raise UserInputError(
            f"init: the pipeline mode (gradient={gradient!r}, svd={svd!r}) expected 'loraga' or "
            f"'loraga-peft', got {init!r}"
        )


def _eckart_young_search(
    G: Tensor,
    s: float,
    zeta: float,
    rank: int,
    *,
    ref_B: Tensor,
    ref_A: Tensor,
    starts: int,
    seed: int,
    max_iter: int = 500,
) -> tuple[float, int]:
    r"""Smallest :math:`\|s^2(G A^\top A + B B^\top G) - \zeta G\|_F` found by L-BFGS over rank-r pairs."""
    import numpy as np
    import scipy.optimize as sopt

    from landscapes.threads import scipy_blas_single_thread

    m, n = G.shape
    gen = torch.Generator().manual_seed(seed)
    Gd = G.detach().to(torch.float64).cpu().numpy()
    best, its = math.inf, 0
    s2 = s * s

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        # R = s^2 (G A^T A + B B^T G) - zeta G;  df/dA = 2 s^2 A (R^T G + G^T R),
        # df/dB = 2 s^2 (R G^T + G R^T) B  for f = ||R||_F^2.
        B = x[: m * rank].reshape(m, rank)
        A = x[m * rank :].reshape(rank, n)
        R = s2 * (Gd @ A.T @ A + B @ (B.T @ Gd)) - zeta * Gd
        gA = 2 * s2 * (A @ (R.T @ Gd + Gd.T @ R))
        gB = 2 * s2 * ((R @ Gd.T + Gd @ R.T) @ B)
        return float((R * R).sum()), np.concatenate([gB.ravel(), gA.ravel()])

    # Starts: the reference init nudged by 1e-3 (is it locally beaten?), then random pairs of
    # the same scale.  The bound itself is a theorem (Eckart-Young); the search is evidence only.
    scale = math.sqrt(zeta) / s
    x_ref = np.concatenate(
        [ref_B.detach().cpu().double().numpy().ravel(), ref_A.detach().cpu().double().numpy().ravel()]
    )
    for k in range(starts):
        noise = torch.randn(m * rank + rank * n, generator=gen, dtype=torch.float64).numpy()
        x0 = x_ref + 1e-3 * scale * noise if k == 0 else scale * noise
        with scipy_blas_single_thread():
            res = sopt.minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
        best = min(best, math.sqrt(max(float(res.fun), 0.0)))
        its += int(res.nit)
    return best, its


@dataclass(frozen=True)
class _Lora:
    """The adapter options of one call: every init of it is :func:`init_lora` with these."""

    rank: int
    alpha: float | None
    rslora: bool
    seed: int
    gamma: float

    def init(self, problem: Problem, name: str, **kw: Any) -> LoRAInit:
        """The init ``name`` of this adapter (``kw``: the other arguments of :func:`init_lora`)."""
        return init_lora(
            problem,
            name,
            rank=self.rank,
            alpha=self.alpha,
            rslora=self.rslora,
            seed=self.seed,
            gamma=self.gamma,
            **kw,
        )


@dataclass(frozen=True)
class _Pipeline:
    """The pipeline options of :func:`check_wyl_first_step` (the options of its pipeline mode, in order)."""

    gradient: str
    svd: Literal["full", "randomized"]
    batch_size: int
    batches: int
    sketch: int | None
    niter: int
    failure_probability: float
    pipeline_rtol: float | None


def _step_options(lora: _Lora, init: str, lr: float, direction: str) -> dict[str, Any]:
    """The options both modes of WYL-first-step record first (then their own, then ``seed``)."""
    return {
        "rank": lora.rank,
        "init": init,
        "alpha": lora.alpha,
        "rslora": lora.rslora,
        "lr": lr,
        "gamma": lora.gamma,
        "direction": direction,
    }


def _first_step_evidence(c: Mapping[str, Any], d: Mapping[str, Any]) -> list[str]:
    """Pipeline mode: each block's error against its tolerance; exact mode: the checked init's errors."""
    if "pipeline" in c:
        return [
            f"pipeline rel err {fmt(b.get('rel_error'))} vs tol {fmt(b.get('tolerance'))} "
            f"(gap {fmt(b.get('gap'))}, eps {fmt(b.get('eps'))})"
            for b in c.get("blocks", [])
        ]
    if "inits" not in c:
        return []
    parts: list[str] = []
    init = d.get("options", {}).get("init", "loraga")
    mine = c["inits"].get(init, [])
    errs = [num(r.get("predicted_scale_rel_error", r.get("best_scale_rel_error"))) for r in mine]
    if errs:
        parts.append(f"{init} first step vs -lr zeta G_[2r]: rel err {fmt(max(errs))}")
    exact = [num(r.get("exact_step_rel_error")) for r in mine]
    if exact:
        parts.append(f"exact step {fmt(max(exact))}")
    ey = [num(e.get("attained_rel_error")) for e in c.get("eckart_young", [])]
    if ey:
        parts.append(f"Eckart-Young attained to {fmt(max(ey))}")
    peft = [num(r.get("best_scale_rel_error")) for r in c["inits"].get("loraga-peft", [])]
    if peft and init != "loraga-peft":
        parts.append(f"PEFT variant off by {fmt(max(peft))}")
    return parts


@checker(
    "WYL-first-step",
    options={
        "rank": Rank(),
        "init": WYL_INIT,
        "alpha": POS_OPT,
        "rslora": BOOL,
        "lr": POS,
        "gamma": POS,
        "direction": Choice(("ArB2r", "A2rBr", "ArBr", "random")),
        "weights": ANY,
        "rtol": TOL,
        "search_starts": Int(0, 1_000),
        "seed": SEED,
        "gradient": Choice(("exact", "sampled")),
        "svd": Choice(("full", "randomized")),
        "batch_size": Int(1, 10**6, expect="a positive int (at most 1000000)"),
        "batches": Int(1, 10**6, expect="a positive int (at most 1000000)"),
        "sketch": Int(2, 100_000, optional=True, expect="None or an int >= 2 r (at most 100000)"),
        "niter": Int(0, 100, expect="an int >= 0 (at most 100)"),
        "failure_probability": FLOAT_TOL,
        "pipeline_rtol": Real(0.0, 1.0, optional=True, expect="a positive finite number below 1, or None"),
    },
    certificate={
        "holds": [("inits", "eckart_young", "G_norms", "scale_s"), ("pipeline", "blocks", "scale_s")],
        "violated": [("inits", "eckart_young", "G_norms", "scale_s"), ("pipeline", "blocks", "scale_s")],
    },
    evidence=_first_step_evidence,
)
def check_wyl_first_step(
    problem: Problem,
    *,
    rank: int = 4,
    init: str = "loraga",
    alpha: float | None = None,
    rslora: bool = True,
    lr: float = 1e-3,
    gamma: float = 16.0,
    direction: str = "ArB2r",
    weights: Sequence[Tensor] | None = None,
    rtol: float = 1e-10,
    search_starts: int = 2,
    seed: int = 0,
    gradient: Literal["exact", "sampled"] = "exact",
    svd: Literal["full", "randomized"] = "full",
    batch_size: int = 2,
    batches: int = 64,
    sketch: int | None = None,
    niter: int = 4,
    failure_probability: float = 0.01,
    pipeline_rtol: float | None = None,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""WYL-first-step: the first step of ``init`` is :math:`-\mathrm{lr}\,\zeta G_{[2r]}` to first order.

    **Two modes.**  With ``gradient="exact"`` and ``svd="full"`` (the default) the init is built from
    the exact gradient and an exact SVD, and the statement checked is the algebraic identity below.
    With ``gradient="sampled"`` and/or ``svd="randomized"`` the init is built as the reference code
    builds it (``G`` from ``batches`` mini-batches of ``batch_size``, a randomized SVD with a sketch
    of ``sketch`` columns, default ``4 r``, and ``niter`` power iterations), and its first step is
    compared with the exact-``G`` first step :math:`-\mathrm{lr}\,\zeta G_{[2r]}` against a tolerance
    derived from the estimator and the gap (:func:`pipeline_tolerance`; ``pipeline_rtol`` replaces it
    by a claimed tolerance).  See :func:`_check_pipeline` for that rule.  The pipeline mode takes
    ``init="loraga"`` or ``"loraga-peft"`` only; every option is validated whatever the mode (a
    ``ValueError`` naming the argument).  In both modes :math:`\zeta = s^2 c^2` is recomputed from the
    options (:func:`_expected_scales`), never read from the init under test.

    **Exact mode.**
    For ``init`` (default the reference LoRA-GA init) the checked statement is that the first-order
    change, computed by autograd, is proportional to :math:`G_{[2r]}` to ``rtol`` (relative error
    at the best scale; for the reference init also at the predicted scale
    :math:`\zeta = s^2 c^2`), and that the exact one-step change by autograd equals the closed
    form :math:`-\mathrm{lr}\, s^2 (G A_0^\top A_0 + B_0 B_0^\top G) + \mathrm{lr}^2 s^3 G A_0^\top
    B_0^\top G` (with ``G`` from ``J^T g``) to ``rtol``.  The Eckart--Young half: the residual
    :math:`\|s^2(G A_0^\top A_0 + B_0 B_0^\top G) - \zeta G\|_F` of the reference init attains
    :math:`\zeta\sqrt{\sum_{i>2r}\sigma_i^2}`; an L-BFGS search over rank-``r`` pairs
    (``search_starts`` starts: the reference init nudged, then random) not getting below it is
    evidence only (the bound is a theorem).

    ``violated`` when the relative error exceeds ``rtol`` (e.g. ``init="loraga-peft"`` or
    ``"vanilla"``: planted false variants) or the search beats the Eckart--Young bound.  The
    certificate also reports every other init's deviation (best-scale relative error and cosine
    to :math:`-G_{[2r]}`), so the PEFT variant's deviation is measured by the same run.

    Certificate (exact mode): ``inits`` (per init, per block: ``best_scale_rel_error``,
    ``cosine_to_minus_G2r``, ``exact_step_rel_error``; for ``loraga`` also ``zeta`` and
    ``predicted_scale_rel_error``), ``eckart_young`` (per block: ``bound``, ``reference_residual``,
    ``attained_rel_error``, ``search_min_residual``, ``search_iterations``), ``scale_s`` (the checked
    init's :math:`s`), ``singular_values_G`` (the top :math:`2r + 2`), ``G_norms``, ``G2r_fraction``
    (:math:`\|G_{[2r]}\|/\|G\|`).  Pipeline mode: see :func:`_check_pipeline`.
    """
    _check_common(problem, rank, lr)
    _check_tol("rtol", rtol)
    if isinstance(search_starts, bool) or not isinstance(search_starts, int) or search_starts < 0:
        raise UserInputError(f"search_starts: expected an int >= 0, got {search_starts!r}")
    _check_options(
        init=init, alpha=alpha, rslora=rslora, gamma=gamma, direction=direction, gradient=gradient,
        svd=svd, batch_size=batch_size, batches=batches, sketch=sketch, niter=niter,
        failure_probability=failure_probability, pipeline_rtol=pipeline_rtol, rank=rank,
    )  # fmt: skip
    scales = _expected_scales(problem, rank, alpha, rslora, gamma)
    lora = _Lora(rank, alpha, rslora, seed, gamma)
    if gradient != "exact" or svd != "full":
        pipe = _Pipeline(
            gradient, svd, batch_size, batches, sketch, niter, failure_probability, pipeline_rtol
        )
        return _check_pipeline(problem, lora, init, lr, direction, pipe, scales, save_dir)
    return _check_exact(problem, lora, init, lr, direction, weights, rtol, search_starts, scales, save_dir)


def _check_exact(
    problem: Problem,
    lora: _Lora,
    init: str,
    lr: float,
    direction: str,
    weights: Sequence[Tensor] | None,
    rtol: float,
    search_starts: int,
    scales: tuple[float, list[float]],
    save_dir: str | Path | None,
) -> Verdict:
    """WYL-first-step in exact mode (exact ``G``, exact SVD): see :func:`check_wyl_first_step`."""
    claim = "WYL-first-step"
    opts = _step_options(lora, init, lr, direction)
    opts |= {"rtol": rtol, "search_starts": search_starts, "seed": lora.seed}
    if (early := needs_float64(claim, problem, opts)) is not None:
        return early
    judge = Judge(claim, problem.fingerprint(), opts)
    t0 = time.perf_counter()
    G = full_gradient(problem)
    best = [_best_rank(g, 2 * lora.rank) for g in G]
    W = weights if weights is not None else _model_or_synthetic_weights(problem, lora.seed)
    rows, scale = _first_steps(problem, lora, G, best, W, lr, direction, init, scales)
    judge.timings["first_steps"] = time.perf_counter() - t0
    failures = _first_step_failures(rows[init], init, rtol)
    # Eckart-Young: the reference init attains the bound; a search cannot beat it.
    ref = lora.init(problem, "loraga", gradient=G, direction=direction)
    ts = time.perf_counter()
    ey, missed = _eckart_young(G, best, ref, lora, scales, search_starts, rtol if init == "loraga" else None)
    failures += missed
    judge.timings["eckart_young"] = time.perf_counter() - ts
    judge.timings["total"] = time.perf_counter() - t0
    cert: dict[str, Any] = {
        "inits": rows,
        "eckart_young": ey,
        "scale_s": scale,
        "singular_values_G": [sv[: 2 * lora.rank + 2].tolist() for _, sv in best],
        "G_norms": [float(g.norm()) for g in G],
        "G2r_fraction": [float(g2.norm() / max(float(g.norm()), 1e-300)) for (g2, _), g in zip(best, G)],
    }
    if failures:
        path = save_counterexample(problem, save_dir, claim, problem.zeros(), opts)
        return judge.violated(cert, "; ".join(failures), counterexample=path)
    worst = max(max(r["best_scale_rel_error"], r.get("predicted_scale_rel_error", 0.0)) for r in rows[init])
    searched = f", not beaten by a search from {search_starts} starts" if search_starts else ""
    peft = max(r["best_scale_rel_error"] for r in rows["loraga-peft"])
    return judge.holds(
        cert,
        f"the first step of {init!r} is -lr zeta G_[2r] to {worst:.1e} (exact step to "
        f"{max(r['exact_step_rel_error'] for r in rows[init]):.1e}); Eckart-Young bound attained by the "
        f"reference init{searched}; PEFT variant deviates by {peft:.2g}",
    )


def _first_steps(
    problem: Problem,
    lora: _Lora,
    G: Sequence[Tensor],
    best: Sequence[tuple[Tensor, Tensor]],
    W: Sequence[Tensor],
    lr: float,
    direction: str,
    init: str,
    scales: tuple[float, list[float]],
) -> tuple[dict[str, Any], float]:
    """Per init, per block: the first step against :math:`-G_{[2r]}` and the closed-form exact step.

    Returns the rows of the certificate's ``inits`` and the scale :math:`s` of ``init``.
    """
    s_exp, c_exp = scales
    rows: dict[str, Any] = {}
    scale = math.nan
    for name in INIT_NAMES:
        ini = lora.init(problem, name, gradient=G, weights=W, direction=direction)
        st = first_step(problem, ini, lr)
        # The closed-form step (gradients s G A0^T, s B0^T G from G = J^T g) against the autograd
        # one (gradients of the risk in B, A): two routes to the same exact change.
        c_first, c_second, _ = first_step_change(ini, G, lr)
        per_block = []
        for j, (g2r, _) in enumerate(best):
            err, cos = _optimal_scale_error(st.first[j], -g2r)
            exact = _rel(st.stepped[j], c_first[j] + c_second[j])
            row: dict[str, Any] = {
                "best_scale_rel_error": err,
                "cosine_to_minus_G2r": cos,
                "exact_step_rel_error": exact,
            }
            if name == "loraga":
                zeta = s_exp**2 * c_exp[j] ** 2
                row["zeta"] = zeta
                row["predicted_scale_rel_error"] = _rel(st.first[j], -lr * zeta * g2r)
            per_block.append(row)
        rows[name] = per_block
        if name == init:
            scale = ini.scale
    return rows, scale


def _first_step_failures(rows: Sequence[Mapping[str, Any]], init: str, rtol: float) -> list[str]:
    """The blocks where the first step of ``init`` is not proportional to :math:`G_{[2r]}` or not exact."""
    failures = []
    for j, row in enumerate(rows):
        worst = max(row["best_scale_rel_error"], row.get("predicted_scale_rel_error", 0.0))
        if not worst <= rtol:
            failures.append(
                f"block {j}: the first step of {init!r} is not proportional to G_[2r] "
                f"(relative error {worst:.3g} > {rtol:g})"
            )
        if not row["exact_step_rel_error"] <= rtol:
            failures.append(
                f"block {j}: the autograd step differs from the closed-form exact change by "
                f"{row['exact_step_rel_error']:.3g}"
            )
    return failures


def _eckart_young(
    G: Sequence[Tensor],
    best: Sequence[tuple[Tensor, Tensor]],
    ref: LoRAInit,
    lora: _Lora,
    scales: tuple[float, list[float]],
    search_starts: int,
    rtol: float | None,
) -> tuple[list[dict[str, Any]], list[str]]:
    r"""The Eckart--Young half: the reference init ``ref`` attains the bound, a search does not beat it.

    :math:`\zeta = s^2 c^2` from ``scales`` (the options).  The reference residual is checked against
    the bound to ``rtol`` (``None``: not checked, the init under test is another one).  Returns the
    certificate's ``eckart_young`` rows and the failures.
    """
    rank, (s, c_exp) = lora.rank, scales  # s and c from the options, not from the init
    ey: list[dict[str, Any]] = []
    failures: list[str] = []
    for j, (Gj, (_, sv)) in enumerate(zip(G, best)):
        zeta = s * s * c_exp[j] ** 2
        bound = zeta * float(sv[2 * rank :].pow(2).sum().sqrt())
        b0, a0 = ref.B[j], ref.A[j]
        attained = float((s * s * (Gj @ a0.T @ a0 + b0 @ (b0.T @ Gj)) - zeta * Gj).norm())
        found, its = (
            _eckart_young_search(
                Gj, s, zeta, rank, ref_B=b0, ref_A=a0, starts=search_starts, seed=lora.seed + j
            )
            if search_starts > 0
            else (math.inf, 0)
        )
        scale = max(bound, 1e-300)
        ey.append(
            {
                "bound": bound,
                "reference_residual": attained,
                "attained_rel_error": abs(attained - bound) / scale,
                "search_min_residual": found,
                "search_iterations": its,
            }
        )
        if found < bound * (1 - 1e-8) - 1e-300:
            failures.append(
                f"block {j}: a rank-{rank} pair got residual {found:.6g} below the bound {bound:.6g}"
            )
        if rtol is not None and not abs(attained - bound) <= rtol * scale + 1e-15 * zeta * float(sv[0]):
            failures.append(f"block {j}: the reference residual {attained:.6g} misses the bound {bound:.6g}")
    return ey, failures


def _hmt_bound(sv: Tensor, k: int, q: int, niter: int, delta: float) -> float:
    r"""Probability-``1 - delta`` bound on :math:`\|\hat G - H\|_2` of ``torch.svd_lowrank``.

    :math:`\|\hat G - H\|_2` is :math:`\|(I - QQ^\top)\hat G\|_2` (``m >= n``) or
    :math:`\|\hat G(I - QQ^\top)\|_2` (``m < n``, the sketch of :math:`\hat G^\top`): the same bound.
    0 when ``q`` is the smaller dimension (``sv.numel()``): the sketch spans that side.

    Halko, Martinsson and Tropp (SIAM Review 2011), Thm. 10.6 on :math:`B = (\hat G\hat G^\top)^{i}
    \hat G` (singular values :math:`\sigma_j^{2i+1}`, ``i = niter``), with oversampling ``p = q - k``:
    :math:`\mathbb E\|(I - P_Y)B\| \le (1 + \sqrt{k/(p-1)})\,\sigma_{k+1}^{2i+1} + \frac{e\sqrt{k+p}}{p}
    (\sum_{j>k}\sigma_j^{2(2i+1)})^{1/2}`; Markov's inequality at ``delta`` and their Prop. 8.6,
    :math:`\|(I - P_Y)\hat G\| \le \|(I - P_Y)B\|^{1/(2i+1)}`.  ``inf`` when ``p < 2``.
    """
    if q >= sv.numel():
        return 0.0  # the sketch spans all of the smaller side: Q Q^T G_hat = G_hat (G_hat Q Q^T)
    p = q - k
    if p < 2:
        return math.inf
    top = float(sv[0])
    if top == 0:
        return 0.0
    x = (sv / top).double()
    e = 2 * niter + 1
    tail = x[k:]
    lead = float(tail[0]) ** e if tail.numel() else 0.0
    expect = (1 + math.sqrt(k / (p - 1))) * lead + math.e * math.sqrt(k + p) / p * float(
        tail.pow(2 * e).sum().sqrt()
    )
    return top * (expect / delta) ** (1.0 / e)


def _sampling_bound(spread: dict[str, float], n_used: int, N: int, m: int, n: int, delta: float) -> float:
    r"""Probability-``1 - delta`` bound on :math:`\|\hat G - G\|_2`, the mean of ``n_used`` of ``N`` examples.

    The smaller of two bounds, each valid at ``delta`` (both are numbers fixed by the population, so
    their minimum is one of them): Chebyshev's inequality on the exact finite-population variance,
    :math:`\|\hat G - G\|_2 \le \|\hat G - G\|_F \le (\frac{N-n}{n(N-1)} S^2/\delta)^{1/2}`; and the
    rectangular matrix Bernstein inequality (Tropp, *An Introduction to Matrix Concentration
    Inequalities*, 2015, Thm. 6.1.1) for :math:`\sum_k (g_{I_k} - G)/n` with per-term bound
    :math:`L = \max_i\|g_i - G\|_2 / n` and variance :math:`v = \max(\|\Sigma_L\|, \|\Sigma_R\|)/n`,
    :math:`t = \frac{L\ell}{3} + \sqrt{(\frac{L\ell}{3})^2 + 2 v \ell}` with
    :math:`\ell = \log((m + n)/\delta)`; it holds for draws without replacement too (Gross and
    Nesme 2010, via Hoeffding's 1963 convex-order comparison).
    """
    fpc = (N - n_used) / (n_used * max(N - 1, 1))
    cheb = math.sqrt(fpc * spread["fro2"] / delta)
    ell = math.log((m + n) / delta)
    L = spread["max2"] / n_used
    v = max(spread["left"], spread["right"]) / n_used
    bern = L * ell / 3 + math.sqrt((L * ell / 3) ** 2 + 2 * v * ell)
    return min(cheb, bern)


def pipeline_tolerance(sigma: Tensor, rank: int, eps: float) -> tuple[float, float]:
    r"""Bound on the pipeline's step error :math:`\|X - G_{[2r]}\|_F` from a perturbation of norm ``eps``.

    Let :math:`H` be the matrix whose exact top-``2r`` singular triplets
    :math:`(\hat U, \hat\Sigma, \hat V)` the pipeline used (the randomized SVD returns the exact SVD
    of :math:`H = QQ^\top \hat G` for :math:`m \ge n`, of :math:`H = \hat G QQ^\top` for
    :math:`m < n`: ``torch.svd_lowrank`` sketches the longer side), :math:`E = H - G` with
    :math:`\|E\|_2 \le \varepsilon`, ``k = 2r``,
    :math:`\sigma_i` the singular values of ``G`` and :math:`\delta = \sigma_k - \sigma_{k+1} -
    \varepsilon`.  The pipeline's first-order step divided by :math:`-\mathrm{lr}\,\zeta` is
    :math:`X = G P_{\hat V_A} + P_{\hat U_B} G = H_{[k]} + (G - H) P_{\hat V_A} + P_{\hat U_B}(G - H)`
    (:math:`\hat V_A`, :math:`\hat U_B` are ``r`` of ``H``'s singular vectors each, together the top
    ``k`` pairs).  With :math:`P, \hat P` (:math:`R, \hat R`) the left (right) top-``k`` projectors
    of ``G`` and ``H``, :math:`H_{[k]} - G_{[k]} = \hat P E + \hat P P_\perp G_\perp
    - (I - \hat P) G_{[k]}` and :math:`(I - \hat P) G_{[k]} = H_\perp \hat R_\perp R - (I - \hat P) E R`,
    so by Wedin's :math:`\sin\Theta` theorem (Wedin 1972; Stewart and Sun, *Matrix Perturbation
    Theory*, Thm. V.4.4: :math:`(\|\sin\Phi\|_F^2 + \|\sin\Theta\|_F^2)^{1/2} \le
    (\|E\hat V\|_F^2 + \|E^\top \hat U\|_F^2)^{1/2} / \delta \le \sqrt{2k}\,\varepsilon/\delta`) and
    Weyl's inequality (:math:`\hat\sigma_{k+1} \le \sigma_{k+1} + \varepsilon`):

    .. math:: \|X - G_{[2r]}\|_F \le \varepsilon\Bigl(2\sqrt{2r} + 2\sqrt r
              + 2\sqrt{2r}\,\frac{\sigma_{2r+1} + \varepsilon}
              {\sigma_{2r} - \sigma_{2r+1} - \varepsilon}\Bigr).

    Returns (the bound, :math:`\delta`); the bound is ``inf`` when :math:`\delta \le 0` (the gap is not
    larger than the perturbation: Wedin says nothing).
    """
    k = 2 * rank
    s_k = float(sigma[k - 1])
    s_k1 = float(sigma[k]) if sigma.numel() > k else 0.0
    delta = s_k - s_k1 - eps
    if not math.isfinite(eps) or delta <= 0:
        return math.inf, delta
    r = rank
    return eps * (
        2 * math.sqrt(2 * r) + 2 * math.sqrt(r) + 2 * math.sqrt(2 * r) * (s_k1 + eps) / delta
    ), delta


def _check_pipeline(
    problem: Problem,
    lora: _Lora,
    init: str,
    lr: float,
    direction: str,
    pipe: _Pipeline,
    scales: tuple[float, list[float]],
    save_dir: str | Path | None,
) -> Verdict:
    r"""WYL-first-step for the pipeline the reference code runs (sampled ``G``, randomized SVD).

    Measured, per block: :math:`d = \|\Delta W_1^{\text{pipe}} - \Delta W_1^{\text{exact}}\|_F /
    \|\Delta W_1^{\text{exact}}\|_F` with the first-order steps by autograd on the full risk, the
    pipeline's from the init built on :math:`\hat G`, the exact one :math:`-\mathrm{lr}\,\zeta G_{[2r]}`.

    Tolerance, at failure probability :math:`\delta_p` (``failure_probability``) for the whole run: a
    union bound over the two parts and the ``B`` blocks, :math:`\delta_p / (2B)` to each event:
    :math:`\|H - G\|_2 \le \varepsilon = \varepsilon_s + \varepsilon_r` where

    * sampling: :math:`\hat G` is the mean of ``n = min(N, batch_size * batches)`` per-example
      gradients drawn without replacement, so :math:`\mathbb E\|\hat G - G\|_F^2 = \frac{N-n}{n(N-1)}
      S^2` (:func:`~landscapes.inits.gradient_spread`) and by Chebyshev's inequality
      :math:`\varepsilon_s = (\frac{N-n}{n(N-1)} S^2 / (\delta_p/(2B)))^{1/2}`, or matrix Bernstein,
      whichever is smaller (:func:`_sampling_bound`; 0 when ``n = N``);
    * randomized SVD: :math:`\varepsilon_r` the Halko--Martinsson--Tropp bound on
      :math:`\|(I - QQ^\top)\hat G\|_2` for the stated ``sketch`` and ``niter`` (:func:`_hmt_bound`,
      ``inf`` with fewer than 2 oversampling columns; 0 with ``svd="full"`` or ``q = min(m, n)``);

    and :math:`\tau = (` :func:`pipeline_tolerance` :math:`+ f) / \|G_{[2r]}\|_F` with the round-off
    floor :math:`f = 10^3\,\epsilon_{\mathrm{mach}} \sqrt{mn}\,\sigma_1` (an exact pipeline, e.g.
    ``N <= 128`` with ``svd="full"``, has :math:`\varepsilon = 0` but a step off by round-off), the
    same floor in the measured-perturbation tolerance.  :math:`\zeta = s^2 c^2` comes from the
    options (:func:`_expected_scales`); for ``init="loraga"`` the checker also checks
    :math:`A_0 A_0^\top = B_0^\top B_0 = c^2 I_r` and :math:`O = s B_0 A_0` to ``1e-10`` relative
    (``violated`` if not: these do not depend on :math:`\hat G`), and :math:`\tau` applies to the
    remaining error.  Everything runs in units of a power of two near :math:`\max|G|` (an exact
    rescaling; absolute numbers in the certificate are in ``G``'s units).  ``holds``: :math:`d \le
    \tau` on every block; ``violated``: :math:`d > \tau` on a block (the step is further from the
    exact one than the estimator's stated accuracy allows: for a correct pipeline this has probability
    at most :math:`\delta_p`) or :math:`d` exceeds the same bound with the *measured*
    :math:`\|H - G\|_2` (a theorem: only a wrong init breaks it); ``inconclusive`` when the gap
    :math:`\sigma_{2r} - \sigma_{2r+1}` is not larger than :math:`\varepsilon` or :math:`\tau \ge 1`
    (the bound allows an error as large as the step).  With ``pipeline_rtol`` the claim is
    :math:`d \le` ``pipeline_rtol`` instead (e.g. ``1e-10``: "the pipeline gives the exact step", a
    planted false statement on ``N > batch_size * batches``).

    Certificate: ``pipeline`` (which ``G`` and which SVD), ``examples_used``, ``failure_probability``,
    ``scale_s`` (the init's :math:`s`) and ``blocks``, per block: ``rel_error`` (:math:`d`),
    ``tolerance`` (:math:`\tau`), ``tolerance_measured_perturbation``, ``roundoff_floor`` (:math:`f`
    relative to :math:`\|G_{[2r]}\|_F`), ``zeta``, ``gap``, ``gap_minus_eps``, ``sigma_2r``,
    ``sigma_2r_plus_1``, ``eps`` (:math:`\varepsilon`) with ``eps_sampling_bound`` and ``eps_rsvd_bound``,
    the measured ``sampling_error_fro``, ``sampling_error_2`` and ``sketch_residual_2``,
    ``gradient_spread_rms`` (:math:`S`), ``G_norm``, ``G2r_norm``, ``sketch`` (``q``; ``None`` without a
    randomized SVD).
    """
    claim = "WYL-first-step"
    opts = _step_options(lora, init, lr, direction) | {"seed": lora.seed, **asdict(pipe)}
    if (early := needs_float64(claim, problem, opts)) is not None:
        return early
    judge = Judge(claim, problem.fingerprint(), opts)
    t0 = time.perf_counter()
    G, G_hat, used, gs, spread = _pipeline_gradients(problem, pipe, lora.seed)
    ini = lora.init(
        problem, init, gradient=G_hat, direction=direction, svd=pipe.svd, niter=pipe.niter, sketch=pipe.sketch
    )
    # Half to each part (sampling, sketch), split over the blocks: a union bound over 2 B events.
    dp = pipe.failure_probability / (2 * len(problem.blocks))
    run = _PipelineRun(ini, pipe, lora.rank, lr, scales, gs, used, problem.N, spread, dp)
    blocks: list[dict[str, Any]] = []
    failures: list[str] = []
    open_blocks: list[str] = []
    for j, (Gr, Ghr, dWr) in enumerate(zip(G, G_hat, first_step(problem, ini, lr).first)):
        if init == "loraga":
            failures += _reference_scale_failures(j, ini, lora.rank, scales[0], scales[1][j])
        block = run.block(j, Gr, Ghr, dWr)
        blocks.append(block.certificate)
        failed, undecided = block.judged(j)
        failures += [failed] if failed is not None else []
        open_blocks += [undecided] if undecided is not None else []
    judge.timings["total"] = time.perf_counter() - t0
    what = run.what(blocks[0]["sketch"])
    cert: dict[str, Any] = {
        "pipeline": what,
        "blocks": blocks,
        "examples_used": used,
        "failure_probability": pipe.failure_probability,
        "scale_s": ini.scale,
    }
    nums = "; ".join(
        f"rel error {b['rel_error']:.3g} vs tolerance {b['tolerance']:.3g} (gap {b['gap']:.3g})"
        for b in blocks
    )
    if failures:
        path = save_counterexample(problem, save_dir, claim, problem.zeros(), opts)
        return judge.violated(cert, f"{init!r} via {what}: " + "; ".join(failures), counterexample=path)
    if open_blocks:
        return judge.inconclusive(
            cert, f"{init!r} via {what}: {nums}; " + "; ".join(open_blocks) + " (Wedin says nothing here)"
        )
    rule = (
        f"the claimed tolerance {pipe.pipeline_rtol:g}"
        if pipe.pipeline_rtol is not None
        else "the tolerance from the estimator and the gap (Wedin, failure prob. "
        f"{pipe.failure_probability:g})"
    )
    return judge.holds(
        cert, f"the first step of {init!r} via {what} is within {rule} of -lr zeta G_[2r]: {nums}"
    )


def _reference_scale_failures(j: int, ini: LoRAInit, rank: int, s: float, c: float) -> list[str]:
    r"""The scale of the reference init, which does not depend on :math:`\hat G`, on block ``j``.

    :math:`A_0 A_0^\top = B_0^\top B_0 = c^2 I_r` and :math:`O = s B_0 A_0`, to ``1e-10`` relative
    (``s``, ``c`` from the options, not from the init).
    """
    a0, b0 = ini.A[j], ini.B[j]
    eye = c**2 * torch.eye(rank, dtype=a0.dtype, device=a0.device)
    errs = {
        "A0 A0^T = c^2 I_r": _rel(a0 @ a0.T, eye),
        "B0^T B0 = c^2 I_r": _rel(b0.T @ b0, eye),
        "offset = s B0 A0": _rel(ini.offset[j], s * (b0 @ a0)),
    }
    return [
        f"block {j}: {what} fails by {e:.3g} (relative) > 1e-10" for what, e in errs.items() if not e <= 1e-10
    ]


def _pipeline_gradients(
    problem: Problem, pipe: _Pipeline, seed: int
) -> tuple[Blocks, Blocks, int, float, tuple[dict[str, float], ...]]:
    r"""The exact and the pipeline's ``G``, the examples it used, the unit and the gradients' spread.

    The unit is a power of two near :math:`\max|G|`; the spread (:func:`~landscapes.inits.gradient_spread`,
    in that unit) is 0 when every example was used.
    """
    G = full_gradient(problem)
    used = min(problem.N, pipe.batch_size * pipe.batches) if pipe.gradient == "sampled" else problem.N
    if pipe.gradient == "sampled":
        G_hat = sampled_gradient(
            problem,
            batch_size=min(pipe.batch_size, problem.N),
            batches=pipe.batches,
            generator=torch.Generator().manual_seed(seed),
        )
    else:
        G_hat = G
    # Work in units of a power of two near max |G| (exact rescaling: the same bits at ordinary scales,
    # no overflow / underflow of squares at |G| ~ 1e+-170); absolute numbers are reported in G's units.
    gmax = max(float(g.abs().max()) for g in G)
    gs = math.ldexp(1.0, math.frexp(gmax)[1]) if 0 < gmax < math.inf else 1.0
    spread = (
        gradient_spread(problem, scale=gs)
        if used < problem.N
        else tuple({"fro2": 0.0, "left": 0.0, "right": 0.0, "max2": 0.0} for _ in problem.blocks)
    )
    return G, G_hat, used, gs, spread


@dataclass(frozen=True)
class _PipelineRun:
    """One run of the pipeline mode: its init, and what bounds its error on each block."""

    ini: LoRAInit
    pipe: _Pipeline
    rank: int
    lr: float
    scales: tuple[float, list[float]]
    gs: float  # the unit: a power of two near max |G|
    used: int  # examples in G_hat
    N: int
    spread: Sequence[dict[str, float]]  # per block, gradient_spread in units of gs
    dp: float  # the failure probability of each of the 2 B events

    def what(self, q: int | None) -> str:
        """Which ``G`` and which SVD the pipeline used (``q``: the sketch's columns)."""
        pipe = self.pipe
        g_what = (
            f"sampled G ({self.used} of N = {self.N} examples)" if pipe.gradient == "sampled" else "exact G"
        )
        s_what = (
            f"randomized SVD (q = {q}, niter = {pipe.niter})" if pipe.svd == "randomized" else "exact SVD"
        )
        return f"{g_what}, {s_what}"

    def block(self, j: int, Gr: Tensor, Ghr: Tensor, dWr: Tensor) -> _PipelineBlock:
        """Block ``j``: the step's error against the exact one, and its tolerances (Wedin)."""
        pipe, rank, gs = self.pipe, self.rank, self.gs
        Gj, Ghj, dW = Gr / gs, Ghr / gs, dWr / gs
        m, n = Gj.shape
        sig = torch.linalg.svdvals(Gj)
        g2r, _ = _best_rank(Gj, 2 * rank)
        zeta = self.scales[0] ** 2 * self.scales[1][j] ** 2
        d = _rel(dW, -self.lr * zeta * g2r)
        # Round-off floor: a float computation of an exact pipeline is off by about eps_mach sqrt(mn) sigma_1.
        floor = 1e3 * torch.finfo(Gj.dtype).eps * math.sqrt(m * n) * float(sig[0])
        eps_s = (
            _sampling_bound(self.spread[j], self.used, self.N, m, n, self.dp) if self.used < self.N else 0.0
        )
        q = min(4 * rank if pipe.sketch is None else pipe.sketch, m, n)
        randomized = pipe.svd == "randomized"
        eps_r = _hmt_bound(torch.linalg.svdvals(Ghj), 2 * rank, q, pipe.niter, self.dp) if randomized else 0.0
        eps = eps_s + eps_r
        bound, delta = pipeline_tolerance(sig, rank, eps)
        norm2r = float(g2r.norm())
        tau = (bound + floor) / max(norm2r, 1e-300)
        sampled_err_2 = float(torch.linalg.matrix_norm(Ghj - Gj, ord=2))
        sketch_res = float(self.ini.details["sketch_residual"][j]) / gs if randomized else 0.0
        post, _ = pipeline_tolerance(sig, rank, sampled_err_2 + sketch_res)
        tau_post = (post + floor) / max(norm2r, 1e-300)
        b: dict[str, Any] = {
            "rel_error": d,
            "roundoff_floor": floor / max(norm2r, 1e-300),
            "zeta": zeta,
            "tolerance": tau,
            "tolerance_measured_perturbation": tau_post,
            "gap": gs * float(sig[2 * rank - 1] - (sig[2 * rank] if sig.numel() > 2 * rank else 0.0)),
            "gap_minus_eps": gs * delta,
            "sigma_2r": gs * float(sig[2 * rank - 1]),
            "sigma_2r_plus_1": gs * float(sig[2 * rank]) if sig.numel() > 2 * rank else 0.0,
            "eps": gs * eps,
            "eps_sampling_bound": gs * eps_s,
            "eps_rsvd_bound": gs * eps_r,
            "sampling_error_fro": gs * float((Ghj - Gj).norm()),
            "sampling_error_2": gs * sampled_err_2,
            "sketch_residual_2": gs * sketch_res,
            "gradient_spread_rms": gs * math.sqrt(self.spread[j]["fro2"]),
            "G_norm": gs * float(Gj.norm()),
            "G2r_norm": gs * norm2r,
            "sketch": q if randomized else None,
        }
        over = []
        if sampled_err_2 > eps_s:
            over.append(f"||G_hat - G||_2 = {b['sampling_error_2']:.3g} > {b['eps_sampling_bound']:.3g}")
        if sketch_res > eps_r:
            over.append(f"||(I - QQ^T) G_hat||_2 = {b['sketch_residual_2']:.3g} > {b['eps_rsvd_bound']:.3g}")
        return _PipelineBlock(pipe, d, tau, tau_post, delta, over, b)


@dataclass(frozen=True)
class _PipelineBlock:
    """One block of the pipeline mode: the step's error ``d``, its tolerances, and its certificate."""

    pipe: _Pipeline
    d: float
    tau: float  # from the bounds on the perturbation
    tau_post: float  # from the measured perturbation
    delta: float  # the gap minus the perturbation bound, in units of gs
    over: list[str]  # the measured errors above their bounds
    certificate: dict[str, Any]

    def judged(self, j: int) -> tuple[str | None, str | None]:
        """The failure (``violated``) or the reason it is open (``inconclusive``) on block ``j``, if any."""
        d, tau, tau_post, b, pipe = self.d, self.tau, self.tau_post, self.certificate, self.pipe
        if pipe.pipeline_rtol is not None:
            if not d <= pipe.pipeline_rtol:
                return (
                    f"block {j}: the pipeline's first step is off the exact one by {d:.3g} > the claimed "
                    f"{pipe.pipeline_rtol:g}"
                ), None
            return None, None
        if math.isfinite(tau_post) and tau_post < 1 and not d <= tau_post * (1 + 1e-9):
            return (
                f"block {j}: the pipeline's first step is off by {d:.3g}, more than Wedin allows for the "
                f"measured "
                f"perturbation ({tau_post:.3g}): the init does not use the singular vectors it computed"
            ), None
        if not (math.isfinite(tau) and tau < 1):
            why = (
                f"the gap sigma_2r - sigma_2r+1 = {b['gap']:.3g} is not larger than the perturbation bound "
                f"{b['eps']:.3g}"
                if self.delta <= 0
                else f"the bound allows {tau:.3g} (>= 1, the size of the step)"
            )
            return None, f"block {j}: {why}"
        if not d <= tau:
            return (
                f"block {j}: the pipeline's first step is off the exact one by {d:.3g} > tolerance {tau:.3g} "
                f"(Wedin, gap {b['gap']:.3g}, eps {b['eps']:.3g} at failure probability "
                f"{pipe.failure_probability:g}" + (f"; {', '.join(self.over)}" if self.over else "") + ")"
            ), None
        return None, None


def _directions_evidence(c: Mapping[str, Any], d: Mapping[str, Any]) -> list[str]:
    """The largest relative difference of a direction's step to the ArB2r step."""
    if "rel_difference_to_ArB2r" not in c:
        return []
    worst = max(num(x) for v in c["rel_difference_to_ArB2r"].values() for x in v)
    return [f"max rel difference to ArB2r {fmt(worst)}"]


@checker(
    "WYL-directions",
    options={
        "rank": Rank(),
        "variant": Choice(("reference", "peft")),
        "alpha": POS_OPT,
        "rslora": BOOL,
        "lr": POS,
        "gamma": POS,
        "rtol": TOL,
        "seed": SEED,
    },
    certificate={
        "holds": [("rel_difference_to_ArB2r", "step_norms")],
        "violated": [("rel_difference_to_ArB2r", "step_norms")],
    },
    evidence=_directions_evidence,
)
def check_wyl_directions(
    problem: Problem,
    *,
    rank: int = 4,
    variant: Literal["reference", "peft"] = "reference",
    alpha: float | None = None,
    rslora: bool = True,
    lr: float = 1e-3,
    gamma: float = 16.0,
    rtol: float = 1e-10,
    seed: int = 0,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""WYL-directions: ArB2r, A2rBr, ArBr (and a random split) give the same first-order step.

    Compares the autograd first-order changes of the four directions pairwise (relative Frobenius
    difference to the ArB2r step, per block).  ``variant="peft"`` runs the same comparison on
    PEFT's LoRA-GA (``B`` scaled by its singular values; a planted false variant: its directions
    differ).

    Certificate: ``rel_difference_to_ArB2r`` (per other direction, per block: the relative
    Frobenius difference of its first-order step to the ArB2r one) and ``step_norms`` (per direction,
    per block: the Frobenius norm of the first-order step).
    """
    claim = "WYL-directions"
    _check_common(problem, rank, lr)
    _check_tol("rtol", rtol)
    if variant not in ("reference", "peft"):
        raise UserInputError(f"variant: expected 'reference' or 'peft', got {variant!r}")
    opts: dict[str, Any] = {
        "rank": rank,
        "variant": variant,
        "alpha": alpha,
        "rslora": rslora,
        "lr": lr,
        "rtol": rtol,
        "seed": seed,
        "gamma": gamma,
    }
    if (early := needs_float64(claim, problem, opts)) is not None:
        return early
    judge = Judge(claim, problem.fingerprint(), opts)
    t0 = time.perf_counter()
    G = full_gradient(problem)
    name = "loraga" if variant == "reference" else "loraga-peft"
    lora = _Lora(rank, alpha, rslora, seed, gamma)
    steps = {
        d: first_step(problem, lora.init(problem, name, gradient=G, direction=d), lr).first
        for d in DIRECTIONS
    }
    base = steps["ArB2r"]
    diffs = {d: [_rel(x, b) for x, b in zip(steps[d], base)] for d in DIRECTIONS if d != "ArB2r"}
    worst = max(max(v) for v in diffs.values())
    cert = {
        "rel_difference_to_ArB2r": diffs,
        "step_norms": {d: [float(x.norm()) for x in v] for d, v in steps.items()},
    }
    judge.timings["total"] = time.perf_counter() - t0
    if worst <= rtol:
        return judge.holds(
            cert, f"the four directions give the same first step to {worst:.1e} (rtol {rtol:g})"
        )
    d_bad = max(diffs, key=lambda d: max(diffs[d]))
    return judge.violated(
        cert,
        f"{variant} direction {d_bad} differs from ArB2r by {max(diffs[d_bad]):.3g} (> {rtol:g})",
        counterexample=save_counterexample(problem, save_dir, claim, problem.zeros(), opts),
    )


@checker(
    "WYL-unchanged",
    options={
        "rank": Rank(),
        "init": WYL_INIT,
        "alpha": POS_OPT,
        "rslora": BOOL,
        "gamma": POS,
        "encoder": ANY,
        "offset": BOOL,
        "rtol64": TOL,
        "rtol32": TOL,
        "seed": SEED,
    },
    certificate={
        "holds": [("linearized_rel_max_error", "offset_norms", "adapter_norms")],
        "violated": [("linearized_rel_max_error", "offset_norms", "adapter_norms")],
    },
    evidence=fields(
        ("linearized_rel_max_error", "linearized"),
        ("real_float64_rel_max_error", "real float64"),
        ("real_float32_rel_max_error", "real float32"),
    ),
)
def check_wyl_unchanged(
    problem: Problem,
    *,
    rank: int = 4,
    init: str = "loraga",
    alpha: float | None = None,
    rslora: bool = True,
    gamma: float = 16.0,
    encoder: Any = None,
    offset: bool = True,
    rtol64: float = 1e-10,
    rtol32: float = 1e-4,
    seed: int = 0,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""WYL-unchanged: with :math:`W_0 \leftarrow W_0 - s B_0 A_0` step-0 outputs are the pretrained ones.

    On the linearized problem: the predictions of :func:`~landscapes.inits.shifted_problem` at the
    init's LoRA point against :math:`f_0` (relative max error).  With ``encoder`` (a
    :class:`~landscapes.transformer.encoder.LinearizedEncoder` of the real model the problem came from, or
    ``"auto"`` to rebuild it from the meta of a :func:`~landscapes.transformer.encoder.review_problem`):
    the real model's logits with each adapted ``nn.Linear`` replaced by PEFT's forward,
    :math:`x (W_0 - O)^\top + s (x A_0^\top) B_0^\top`, against the pretrained logits, in float64
    and float32.  ``offset=False`` leaves :math:`W_0` as it is (a planted false variant: the outputs
    move by :math:`s B_0 A_0`).

    Certificate: ``linearized_rel_max_error`` (the linearized outputs' largest change, relative to
    the larger of :math:`f_0` and the offset's share of it), ``offset_norms`` (:math:`\|O_j\|_F`),
    ``adapter_norms`` (:math:`\|s B_{0,j} A_{0,j}\|_F`), and with ``encoder``
    ``real_float64_rel_max_error`` and ``real_float32_rel_max_error`` (the real model's logits).
    """
    claim = "WYL-unchanged"
    if init not in INIT_NAMES:
        raise UserInputError(f"init: expected one of {INIT_NAMES}, got {init!r}")
    opts: dict[str, Any] = {
        "rank": rank,
        "init": init,
        "alpha": alpha,
        "rslora": rslora,
        "offset": offset,
        "rtol64": rtol64,
        "rtol32": rtol32,
        "seed": seed,
        "gamma": gamma,
        # A replay can rebuild the encoder only from a review problem's meta.
        "encoder": None if encoder is None or problem.meta.get("data") != "reviews" else "auto",
    }
    _check_tol("rtol64", rtol64)
    _check_tol("rtol32", rtol32)
    judge = Judge(claim, problem.fingerprint(), opts)
    t0 = time.perf_counter()
    if isinstance(encoder, str):
        if encoder != "auto":
            raise UserInputError(f"encoder: expected None, 'auto' or a LinearizedEncoder, got {encoder!r}")
        from landscapes.transformer.encoder import review_encoder

        encoder = review_encoder(problem)
    W = None
    if init == "pissa":
        W = (
            tuple(w.detach().to(problem.dtype) for w in encoder._W0)
            if encoder is not None
            else _model_or_synthetic_weights(problem, seed)
        )
    ini = _Lora(rank, alpha, rslora, seed, gamma).init(problem, init, weights=W)
    off = ini.offset if offset else tuple(torch.zeros_like(o) for o in ini.offset)
    shifted = shifted_problem(problem, off)
    pt = ini.point()
    z = shifted.predictions(tuple(u @ v.T for u, v in zip(pt.U, pt.V)))
    # Relative to the larger of the pretrained outputs and the offset's share of them (the terms
    # that must cancel; f0 may be 0 on synthetic problems).
    moved = (
        problem.J.matvec(problem.vec(ini.offset)).abs().max()
        if any(bool(o.any()) for o in ini.offset)
        else 0.0
    )
    scale = max(float(problem.f0.abs().max()), float(moved), 1e-300)
    lin_err = float((z - problem.f0).abs().max()) / scale
    tol_lin = rtol64 if problem.dtype == torch.float64 else rtol32
    cert: dict[str, Any] = {
        "linearized_rel_max_error": lin_err,
        "offset_norms": [float(o.norm()) for o in ini.offset],
        "adapter_norms": [float((ini.scale * (b @ a)).norm()) for b, a in zip(ini.B, ini.A)],
    }
    failures = []
    if not lin_err <= tol_lin:
        failures.append(f"linearized outputs move by {lin_err:.3g} (relative max, tol {tol_lin:g})")
    if encoder is not None:
        for dt, tol in ((torch.float64, rtol64), (torch.float32, rtol32)):
            err = _real_model_error(encoder, ini, dt, offset=offset)
            cert[f"real_{str(dt).replace('torch.', '')}_rel_max_error"] = err
            if not err <= tol:
                failures.append(f"real-model logits ({dt}) move by {err:.3g} (relative max, tol {tol:g})")
    judge.timings["total"] = time.perf_counter() - t0
    if failures:
        path = save_counterexample(problem, save_dir, claim, problem.zeros(), opts)
        return judge.violated(cert, "; ".join(failures), counterexample=path)
    where = (
        "linearized problem and real model (float64, float32)"
        if encoder is not None
        else "linearized problem"
    )
    return judge.holds(
        cert,
        f"outputs unchanged at step 0 on the {where}: worst relative error "
        f"{max(v for k, v in cert.items() if k.endswith('error')):.1e}",
    )


def _real_model_error(encoder: Any, ini: LoRAInit, dtype: torch.dtype, *, offset: bool) -> float:
    """Relative max change of the real model's logits with PEFT-style adapters (offset base weight)."""
    from landscapes.transformer.encoder import adapted_logits

    before = adapted_logits(encoder, None, dtype=dtype)
    after = adapted_logits(encoder, ini, dtype=dtype, offset=offset)
    return float((after - before).abs().max()) / max(float(before.abs().max()), 1e-300)


def _about_distribution(
    G: Tensor, rank: int, init: str, cos: float, *, samples: int, level: float, seed: int, chunk: int = 2000
) -> dict[str, Any]:
    r"""Distribution over random :math:`A_0` of :math:`\rho = \|G P_{\mathrm{row}}(A_0)\|/\|G\|` and of cos.

    ``samples`` draws of :math:`A_0` from ``init``'s distribution (``vanilla``: i.i.d.
    :math:`\mathcal U(-1/\sqrt n, 1/\sqrt n)`, ``gaussian``: i.i.d. normal; both quantities are
    scale-free), each giving :math:`\rho` and the exact first-step cosine
    :math:`\|G A_0^\top\|^2/(\|G A_0^\top A_0\| \|G\|)`.  The band of :math:`\rho` is its central
    ``1 - level`` interval: for a rank-one ``G`` and the ``gaussian`` init exactly
    :math:`\sqrt{\cdot}` of the :math:`\mathrm{Beta}(r/2, (n-r)/2)` quantiles (the row space is then a
    uniformly random ``r``-plane); otherwise the empirical quantiles at levels
    :math:`\mathrm{level}/2 - \epsilon` and :math:`1 - \mathrm{level}/2 + \epsilon`, widened by the
    Dvoretzky--Kiefer--Wolfowitz half-width :math:`\epsilon = \sqrt{\log(2/\beta)/(2S)}`
    (:math:`\beta = 0.01`; the lower / higher order statistic), so that the band contains the true
    central interval with probability :math:`\ge 1 - \beta`.  Where a widened level leaves
    :math:`(0, 1)` no sample quantile bounds anything (the sample min / max is not a DKW bound), and
    that end is the support of :math:`\rho`: 0 or 1.  The median cosine's interval is the empirical
    cosine quantiles at
    :math:`1/2 \pm \epsilon` (it contains the true median with probability :math:`\ge 1 - \beta`).
    """
    m, n = G.shape
    gen = torch.Generator().manual_seed(seed)
    gn = float(G.norm())
    rho, cs = [], []
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        if init == "vanilla":
            A = torch.rand(k, rank, n, generator=gen, dtype=torch.float64) * 2 - 1
        else:
            A = torch.randn(k, rank, n, generator=gen, dtype=torch.float64)
        A = A.to(G.dtype)
        Q, _ = torch.linalg.qr(A.transpose(1, 2))
        rho.append(torch.linalg.matrix_norm(G @ Q) / gn)
        GA = G @ A.transpose(1, 2)
        M = GA @ A
        cs.append(GA.pow(2).sum((1, 2)) / (torch.linalg.matrix_norm(M) * gn))
    r_all = torch.cat(rho).double().cpu()
    c_all = torch.cat(cs).double().cpu()
    eps = math.sqrt(math.log(2 / 0.01) / (2 * samples))
    sv = torch.linalg.svdvals(G)
    rank_one = float(sv[1]) <= 1e-12 * float(sv[0]) if sv.numel() > 1 else True
    if rank_one and init == "gaussian":
        from scipy.stats import beta

        lo, hi = (math.sqrt(float(beta.ppf(x, rank / 2, (n - rank) / 2))) for x in (level / 2, 1 - level / 2))
        source = f"exact: rho^2 ~ Beta({rank}/2, {n - rank}/2)"
    else:
        # Where the DKW-widened level leaves [0, 1], no sample quantile is a bound: use the support of
        # rho ([0, 1]) on that side.  Conservative order statistics: lower / higher interpolation.
        ql, qh = level / 2 - eps, 1 - level / 2 + eps
        lo = float(torch.quantile(r_all, ql, interpolation="lower")) if ql > 0 else 0.0
        hi = float(torch.quantile(r_all, qh, interpolation="higher")) if qh < 1 else 1.0
        source = f"empirical, {samples} draws, DKW-widened" + (
            " (support where the widened level leaves (0, 1))" if ql <= 0 or qh >= 1 else ""
        )
    return {
        "band": [lo, hi],
        "band_source": source,
        "median_cos": float(torch.quantile(c_all, 0.5)),
        "median_cos_interval": [
            float(torch.quantile(c_all, 0.5 - eps, interpolation="lower")) if eps < 0.5 else 0.0,
            float(torch.quantile(c_all, 0.5 + eps, interpolation="higher")) if eps < 0.5 else 1.0,
        ],
        "median_rho": float(torch.quantile(r_all, 0.5)),
        "quantile_of_this_cos_in_rho": float((r_all <= cos).double().mean()),
        "rank_one": rank_one,
        "samples": samples,
    }


def _alignment_evidence(c: Mapping[str, Any], d: Mapping[str, Any]) -> list[str]:
    """Per block: the cosine, its prediction, the gap to the row projection and the median cosine's band."""
    if "blocks" not in c:
        return []
    blocks = c["blocks"]
    parts = [
        "cos " + "/".join(fmt(b.get("cosine")) for b in blocks),
        "predicted " + "/".join(fmt(b.get("predicted")) for b in blocks),
    ]
    if all("row_projection_gap" in b for b in blocks):
        parts.append("gap " + "/".join(fmt(b["row_projection_gap"]) for b in blocks))
    if all("about_distribution" in b for b in blocks):
        dists = [b["about_distribution"] for b in blocks]
        parts.append(
            "median cos "
            + "/".join(f"{fmt(x['median_cos'])} in [{fmt(x['band'][0])}, {fmt(x['band'][1])}]" for x in dists)
        )
    return parts


@checker(
    "WYL-alignment",
    options={
        "rank": Rank(),
        "init": Choice(
            tuple(i for i in WYL_INIT.values if i != "pissa"), expect=f"one of {WYL_INIT.values[:-1]}"
        ),
        "prediction": Choice(
            ("rank-2r", "row-projection"),
            optional=True,
            expect="'rank-2r' or 'row-projection' (None: from init)",
        ),
        "alpha": POS_OPT,
        "rslora": BOOL,
        "lr": POS,
        "gamma": POS,
        "rtol": TOL,
        "about_rtol": TOL_OPT,
        "samples": Int(100, 10**7, expect="an int >= 100 (at most 10000000)"),
        "about_level": FLOAT_TOL,
        "seed": SEED,
    },
    certificate={"holds": [("blocks",)], "violated": [("blocks",)]},
    evidence=_alignment_evidence,
)
def check_wyl_alignment(
    problem: Problem,
    *,
    rank: int = 4,
    init: str = "loraga",
    prediction: Literal["rank-2r", "row-projection"] | None = None,
    alpha: float | None = None,
    rslora: bool = True,
    lr: float = 1e-3,
    gamma: float = 16.0,
    rtol: float = 1e-10,
    about_rtol: float | None = None,
    samples: int = 20000,
    about_level: float = 0.05,
    seed: int = 0,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""WYL-alignment: the cosine between the first step and :math:`-G`.

    The cosine is measured on the autograd first-order step and compared with its closed form
    :math:`\langle G A_0^\top A_0 + B_0 B_0^\top G, G\rangle / (\|G A_0^\top A_0 + B_0 B_0^\top G\|
    \|G\|)` (to ``rtol``).  Predictions:

    * ``"rank-2r"`` -- :math:`\cos = \|G_{[2r]}\|_F / \|G\|_F`, exact for the reference LoRA-GA
      init, checked to ``rtol``;
    * ``"row-projection"`` -- "about" :math:`\|G P_{\mathrm{row}}(A_0)\|_F / \|G\|_F` for the
      zero-B inits.  What is exact there is :math:`\cos = \|G A_0^\top\|^2 / (\|G A_0^\top A_0\|
      \|G\|) \le \|G P_{\mathrm{row}}\| / \|G\|` (Cauchy--Schwarz; equality when the rows of
      :math:`A_0` are orthogonal with equal norms): the inequality is checked (to ``rtol``) and the
      relative gap is reported; ``about_rtol`` (default ``None``: not checked) bounds that gap.
      For the random inits (``vanilla``, ``gaussian``) "about" is then checked against the
      distribution of :math:`\rho(A_0) = \|G P_{\mathrm{row}}(A_0)\|_F / \|G\|_F` over random
      :math:`A_0` (:func:`_about_distribution`): ``violated`` when the typical cosine (the median of
      :math:`\cos(A_0)` over ``samples`` draws, with its Monte Carlo error) lies outside the central
      ``1 - about_level`` band of :math:`\rho`, i.e. the cosine misses the prediction by more than the
      prediction's own spread over inits; ``inconclusive`` when the median's error interval straddles
      an end of the band.  For a rank-one :math:`G = \sigma u v^\top` and the rotation-invariant
      ``gaussian`` init the band is exact: :math:`\rho^2 = \|P v\|^2 \sim
      \mathrm{Beta}(r/2, (n - r)/2)`.

    Default prediction: ``"rank-2r"`` for the LoRA-GA inits (so ``loraga-peft``, whose first step
    is not :math:`G_{[2r]}`, comes out ``violated``), ``"row-projection"`` otherwise; a mismatched
    pair (``init="vanilla", prediction="rank-2r"``) is a planted false variant.  The certificate
    reports both predictions, the measured cosine and :math:`\sqrt{r/n}` (the isotropic-G value).

    Certificate: ``blocks``, per block: ``cosine`` (autograd), ``closed_form_cosine``,
    ``G2r_over_G``, ``row_projection_over_G``, ``sqrt_r_over_n``, ``predicted`` (the prediction's
    value), with ``"rank-2r"`` its ``rel_error``, with ``"row-projection"`` the ``row_projection_gap``
    (:math:`1 - \cos/\rho`) and, for the random inits, ``about_distribution``
    (:func:`_about_distribution`).
    """
    claim = "WYL-alignment"
    _check_common(problem, rank, lr)
    _check_tol("rtol", rtol)
    if about_rtol is not None:
        _check_tol("about_rtol", about_rtol)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 100:
        raise UserInputError(f"samples: expected an int >= 100, got {samples!r}")
    if not (isinstance(about_level, float) and 0 < about_level < 1):
        raise UserInputError(f"about_level: expected a float in (0, 1), got {about_level!r}")
    if init not in INIT_NAMES or init == "pissa":
        raise UserInputError(
            f"init: expected one of {tuple(i for i in INIT_NAMES if i != 'pissa')}, got {init!r}"
        )
    if prediction is None:
        prediction = "rank-2r" if init.startswith("loraga") else "row-projection"
    if prediction not in ("rank-2r", "row-projection"):
        raise UserInputError(f"prediction: expected 'rank-2r' or 'row-projection', got {prediction!r}")
    opts: dict[str, Any] = {
        "rank": rank,
        "init": init,
        "prediction": prediction,
        "alpha": alpha,
        "rslora": rslora,
        "lr": lr,
        "gamma": gamma,
        "rtol": rtol,
        "about_rtol": about_rtol,
        "samples": samples,
        "about_level": about_level,
        "seed": seed,
    }
    if (early := needs_float64(claim, problem, opts)) is not None:
        return early
    judge = Judge(claim, problem.fingerprint(), opts)
    t0 = time.perf_counter()
    G = full_gradient(problem)
    ini = _Lora(rank, alpha, rslora, seed, gamma).init(problem, init, gradient=G)
    st = first_step(problem, ini, lr)
    blocks = []
    failures: list[str] = []
    undecided: list[str] = []
    for j, (Gj, dW, a0, b0) in enumerate(zip(G, st.first, ini.A, ini.B)):
        b = _alignment_block(j, Gj, dW, a0, b0, rank, prediction, rtol, about_rtol, failures)
        if prediction == "row-projection" and init in ("vanilla", "gaussian"):
            dist = _about_distribution(
                Gj, rank, init, b["cosine"], samples=samples, level=about_level, seed=seed + 7919 * (j + 1)
            )
            b["about_distribution"] = dist
            _about_judged(j, dist, samples, about_level, failures, undecided)
        blocks.append(b)
    judge.timings["total"] = time.perf_counter() - t0
    cert = {"blocks": blocks}
    if failures:
        path = save_counterexample(problem, save_dir, claim, problem.zeros(), opts)
        return judge.violated(cert, "; ".join(failures), counterexample=path)
    if undecided:
        return judge.inconclusive(
            cert, f"cos(dW, -G) of {init!r} is at most ||G P_row(A0)||/||G||, but " + "; ".join(undecided)
        )
    return judge.holds(
        cert,
        f"cos(dW, -G) of {init!r} {_alignment_text(blocks, prediction, about_level, samples)}; cosines "
        + ", ".join(f"{b['cosine']:.3g}" for b in blocks),
    )


def _alignment_block(
    j: int,
    Gj: Tensor,
    dW: Tensor,
    a0: Tensor,
    b0: Tensor,
    rank: int,
    prediction: str,
    rtol: float,
    about_rtol: float | None,
    failures: list[str],
) -> dict[str, Any]:
    """Block ``j``'s cosines and its prediction (its certificate entry); adds its failures to ``failures``."""
    gn = float(Gj.norm())
    cos = float(-(dW * Gj).sum()) / max(float(dW.norm()) * gn, 1e-300)
    M = Gj @ a0.T @ a0 + b0 @ (b0.T @ Gj)
    closed = float((M * Gj).sum()) / max(float(M.norm()) * gn, 1e-300)
    g2r, _ = _best_rank(Gj, 2 * rank)
    Q, _ = torch.linalg.qr(a0.T)  # orthonormal basis of the row space of A0
    row = float((Gj @ Q).norm()) / max(gn, 1e-300)
    rank2r = float(g2r.norm()) / max(gn, 1e-300)
    b: dict[str, Any] = {
        "cosine": cos,
        "closed_form_cosine": closed,
        "G2r_over_G": rank2r,
        "row_projection_over_G": row,
        "sqrt_r_over_n": math.sqrt(rank / Gj.shape[1]),
    }
    if abs(cos - closed) > rtol * max(abs(closed), 1e-300):
        failures.append(f"block {j}: autograd cosine {cos:.12g} differs from its closed form {closed:.12g}")
    if prediction == "rank-2r":
        b["predicted"] = rank2r
        b["rel_error"] = abs(cos - rank2r) / max(rank2r, 1e-300)
        if not b["rel_error"] <= rtol:
            failures.append(
                f"block {j}: cos = {cos:.6g}, predicted ||G_[2r]||/||G|| = {rank2r:.6g} "
                f"(rel error {b['rel_error']:.2g} > {rtol:g})"
            )
        return b
    b["predicted"] = row
    b["row_projection_gap"] = 1.0 - cos / max(row, 1e-300)
    if cos > row * (1 + rtol):
        failures.append(f"block {j}: cos = {cos:.6g} exceeds its upper bound ||G P_row||/||G|| = {row:.6g}")
    elif about_rtol is not None and b["row_projection_gap"] > about_rtol:
        failures.append(
            f"block {j}: cos = {cos:.6g} is {b['row_projection_gap']:.2g} below ||G P_row||/||G|| "
            f"= {row:.6g} (more than about_rtol = {about_rtol:g})"
        )
    return b


def _about_judged(
    j: int,
    dist: Mapping[str, Any],
    samples: int,
    about_level: float,
    failures: list[str],
    undecided: list[str],
) -> None:
    """Judge the typical cosine against the band of the row projection (:func:`_about_distribution`)."""
    lo, hi = dist["band"]
    mlo, mhi = dist["median_cos_interval"]
    if mhi < lo or mlo > hi:
        failures.append(
            f"block {j}: the typical cosine (median over {samples} random A0: "
            f"{dist['median_cos']:.4g}) "
            f"is outside the central {1 - about_level:g} band [{lo:.4g}, {hi:.4g}] of "
            f"||G P_row(A0)||/||G|| ({dist['band_source']}): 'about' misses by more than the "
            "prediction's spread over inits"
        )
    elif not (lo <= mlo and mhi <= hi):
        undecided.append(
            f"block {j}: the median cosine's interval [{mlo:.4g}, {mhi:.4g}] straddles an end of "
            "the "
            f"band [{lo:.4g}, {hi:.4g}]"
        )


def _alignment_text(
    blocks: Sequence[Mapping[str, Any]], prediction: str, about_level: float, samples: int
) -> str:
    """What a ``holds`` of WYL-alignment says about the cosine, for its reason."""
    if prediction == "rank-2r":
        return f"equals ||G_[2r]||/||G|| to {max(b['rel_error'] for b in blocks):.1e}"
    gaps = ", ".join(f"{b['row_projection_gap']:.2g}" for b in blocks)
    what = f"is at most ||G P_row(A0)||/||G||, below it by (relative) {gaps}"
    if all("about_distribution" in b for b in blocks):
        bands = []
        for b in blocks:
            d = b["about_distribution"]
            bands.append(f"[{d['band'][0]:.3g}, {d['band'][1]:.3g}] (median cos {d['median_cos']:.3g})")
        what += (
            f"; the typical cosine is inside the central {1 - about_level:g} band "
            + ", ".join(bands)
            + f" of ||G P_row(A0)||/||G|| over random A0 ({samples} draws)"
        )
    return what
