r"""Training at scale of seeds on non-linearized problems, and the [KKR25] table per configuration.

A *configuration* is a problem (:data:`KKR_PROBLEMS`, or any
:class:`~landscapes.nonlinear.problems.NonlinearProblem`), an init and the LoRA rank.  Each run trains
:math:`L^{\mathrm{lora}}_\lambda(A, B)` from its init (Adam with weight decay in the gradient,
then L-BFGS), classifies its end point with :func:`landscapes.nonlinear.sosp.end_point` (gradient
norm, Lanczos :math:`\lambda_{\min}`) and records the spectrum of :math:`X = AB^\top`,
:math:`\|X\|_F`, the risk, the penalized value, the held-out risk.

Inits (``X = A B^T``, ``A`` is ``m x r``):

* ``zero`` -- ``A = 0``, ``B`` Gaussian with variance ``1/n`` (LoRA's zero init);
* ``small`` -- both Gaussian with standard deviation ``small`` (default 0.01);
* ``large`` -- both Gaussian, scaled so that :math:`\|A_0B_0^\top\|_F` is ``large`` (default 5)
  times :math:`\max(1, \|X^\star_\lambda\|_F)`;
* ``loraga`` -- the reference LoRA-GA init (:mod:`landscapes.inits`) from :math:`\nabla L(0)`;
  its offset makes it a problem of its own (:func:`landscapes.nonlinear.problems.shifted`), with its own
  reference minimum.

The reference :math:`X^\star_\lambda` comes from :func:`landscapes.nonlinear.penalized.minimize_penalized`
(certified for convex risks; the best point found otherwise, refined from every end point that
beats it).  An end point is

* ``global`` -- penalized value within ``global_rtol`` of the reference's (certified when the
  reference is);
* ``spurious`` -- a certified approximate SOSP whose penalized value exceeds the reference's by
  more than that (certified non-global: the reference is a feasible point);
* ``not-sosp`` -- the run did not reach a certified SOSP (budget, negative curvature, or an
  unconverged Lanczos run).

``success`` counts ``global`` end points, ``failure`` counts ``spurious`` ones; the *separation
ratio* is :math:`\min\|X\|_F` over failures divided by :math:`\max\|X\|_F` over successes (> 1:
the failures are loud).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from landscapes.catalog import KKR_PROBLEMS, build_kkr_problem
from landscapes.nonlinear.penalized import PenalizedMinimum
from landscapes.nonlinear.problems import NonlinearProblem
from landscapes.nonlinear.sosp import (
    EndPoint,
    Factors,
    end_point,
    polish_nonzero_columns,
    train_lora,
    truncate_factors,
)
from theory.errors import UserInputError

__all__ = [
    "KKR_FORMAT",
    "KKR_INITS",
    "DENSE_MAX",
    "sosp_certified",
    "KKR_PROBLEMS",
    "build_kkr_problem",
    "make_init",
    "kkr_run",
    "classify",
    "kkr_table",
    "wilson_interval",
    "global_tolerance",
    "end_point_matrices",
    "end_point_record",
    "frobenius_norm",
    "problem_fingerprint",
    "product_change",
    "reference_dict",
    "same_problem",
    "truncated_polished",
]

#: The format id of kkr.json (with ``"version": 1``; files before the version key said "loracheck.kkr/1").
KKR_FORMAT = "loracheck.kkr"
KKR_INITS: tuple[str, ...] = ("zero", "small", "large", "loraga", "adversarial")

#: LoRA points with at most this many parameters get the dense curvature certificate (one HVP per
#: parameter): a *certified* SOSP.  Larger ones get Lanczos, an *approximate* SOSP at best.
DENSE_MAX = 1024


def frobenius_norm(X: Sequence[Tensor]) -> float:
    """The Frobenius norm of a point given as its blocks, over all blocks together."""
    return math.sqrt(sum(float(x.pow(2).sum()) for x in X))


def make_init(
    problem: NonlinearProblem,
    init: str,
    *,
    rank: int,
    seed: int,
    small: float = 0.01,
    large: float = 5.0,
    reference_norm: float = 1.0,
) -> tuple[Factors, tuple[Tensor, ...] | None]:
    """The initial factors of ``init`` and, for ``loraga``, the weight offset it subtracts."""
    if init not in KKR_INITS:
        raise UserInputError(f"init: expected one of {KKR_INITS}, got {init!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserInputError(f"rank: expected a positive int, got {rank!r}")
    gen = torch.Generator().manual_seed(seed)
    dt, dev = problem.dtype, problem.device
    A, B = [], []
    if init == "adversarial":
        # A start designed to reach a known spurious SOSP; seeds > 0 perturb it by 10 % (relative).
        if problem.meta.get("family") != "spurious_sensing":
            raise UserInputError(
                "init: 'adversarial' needs a problem with a designed start (spurious_sensing), got "
                f"{problem.name!r}"
            )
        from landscapes.nonlinear.spurious_sensing import adversarial_start

        st = adversarial_start(config=str(problem.meta["config"]))
        if st.A[0].shape[1] != rank:
            raise UserInputError(f"rank: the adversarial start has rank {st.A[0].shape[1]}, got {rank}")
        if seed == 0:
            return st, None

        def jitter(x: Tensor) -> Tensor:
            e = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x)
            return x + 0.1 * float(x.norm()) / max(float(e.norm()), 1e-300) * e

        return Factors(tuple(jitter(a) for a in st.A), tuple(jitter(b) for b in st.B)), None
    if init == "loraga":
        from landscapes.inits import init_lora

        # init_lora reads only the shapes, dtype and device of the problem besides the gradient.
        ini = init_lora(
            problem,  # type: ignore[arg-type]
            "loraga",
            rank=rank,
            seed=seed,
            gradient=problem.grad(problem.zeros()),
        )
        pt = ini.point()
        return Factors(tuple(pt.U), tuple(pt.V)), tuple(ini.offset)
    for m, n in problem.blocks:
        a = torch.randn(m, rank, generator=gen, dtype=torch.float64)
        b = torch.randn(n, rank, generator=gen, dtype=torch.float64)
        if init == "zero":
            a = torch.zeros_like(a)
            b = b / math.sqrt(n)
        elif init == "small":
            a, b = small * a, small * b
        else:
            # Scale both factors alike so that ||A B^T||_F = large * max(1, ||X*||_F).
            c = math.sqrt(large * max(1.0, reference_norm) / max(float((a @ b.T).norm()), 1e-300))
            a, b = c * a, c * b
        A.append(a.to(dtype=dt, device=dev))
        B.append(b.to(dtype=dt, device=dev))
    return Factors(tuple(A), tuple(B)), None


def kkr_run(
    problem: NonlinearProblem,
    start: Factors,
    *,
    steps: int,
    lr: float,
    polish: int = 3000,
    grad_tol: float = 1e-10,
    rank_rtol: float = 1e-6,
    lanczos_maxiter: int | None = None,
    truncate: bool = False,
    dense_max: int = DENSE_MAX,
) -> dict[str, Any]:
    r"""Train from ``start`` and return the end point's numbers (see the module docstring).

    ``polish`` L-BFGS iterations follow the Adam ``steps``; ``lanczos_maxiter`` caps the Lanczos
    iterations of the curvature certificate (an unconverged run certifies no SOSP).

    The curvature certificate is the dense Hessian (one HVP per parameter, ``eigh``) when the LoRA
    point has at most ``dense_max`` parameters: its lower bound on :math:`\lambda_{\min}` is
    rigorous up to the round-off model of :func:`~landscapes.nonlinear.sosp.lambda_min_lora`, and
    the record's ``sosp_certified`` is ``True`` for an SOSP.  Above it, Lanczos gives a Ritz value
    (an *upper* bound on :math:`\lambda_{\min}`): the point is at most an *approximate* SOSP
    (``sosp`` true, ``sosp_certified`` false).

    ``truncate``: the trained factors are replaced by the balanced factors of :math:`X = AB^\top`
    truncated at ``rank_rtol`` (:func:`~landscapes.nonlinear.sosp.truncate_factors`: trailing
    columns exactly zero), polished again by L-BFGS on the non-zero columns only, and that point
    is classified: its curvature certificate splits off the zero columns in closed form
    (:func:`~landscapes.nonlinear.sosp.lambda_min_lora`).  ``truncation_change`` records
    :math:`\|X_{\text{trained}} - X_{\text{end}}\|_F`.
    """
    t0 = time.perf_counter()
    try:
        end, hist = train_lora(problem, start, steps=steps, lr=lr, polish=polish, grad_tol=grad_tol)
        trained = end
        if truncate:
            end = truncated_polished(problem, end, rank_rtol=rank_rtol, max_iter=polish, grad_tol=grad_tol)
    except FloatingPointError as exc:
        return {"status": "diverged", "error": str(exc), "seconds": time.perf_counter() - t0}
    ep = end_point(problem, end, rank_rtol=rank_rtol, maxiter=lanczos_maxiter, dense_max=dense_max)
    out = end_point_record(problem, ep.to_dict(), end)
    out.update(
        start_norm=frobenius_norm(tuple(a @ b.T for a, b in zip(start.A, start.B))),
        truncated=truncate,
        truncation_change=product_change(trained, end),
        curve=[list(h) for h in hist[:: max(1, len(hist) // 50)]],
        seconds=time.perf_counter() - t0,
    )
    return out


def product_change(a: Factors, b: Factors) -> float:
    """The Frobenius distance between the products ``A B^T`` of two factorizations, over all blocks."""
    return frobenius_norm(tuple(x @ y.T - u @ v.T for x, y, u, v in zip(a.A, a.B, b.A, b.B)))


def truncated_polished(
    problem: NonlinearProblem, point: Factors, *, rank_rtol: float, max_iter: int, grad_tol: float
) -> Factors:
    """``point`` truncated to its numerical rank (exact zero columns), then polished on the other columns."""
    return polish_nonzero_columns(
        problem, truncate_factors(point, rank_rtol=rank_rtol), max_iter=max_iter, grad_tol=grad_tol
    )


def end_point_record(problem: NonlinearProblem, ep: Mapping[str, Any], point: Factors) -> dict[str, Any]:
    """The stored numbers of an end point (``ep``: :meth:`EndPoint.to_dict`) and its factors ``point``."""
    X = tuple(a @ b.T for a, b in zip(point.A, point.B))
    # The penalized problem's first-order condition ||grad L(X)_j||_op <= lam_j (necessary for a
    # rank-deficient LoRA SOSP: otherwise the free columns give a direction of negative curvature).
    grad_op = [float(torch.linalg.matrix_norm(g, ord=2)) for g in problem.grad(X)]
    out = {k: ep[k] for k in EndPoint.__dataclass_fields__}
    lm = out.pop("lambda_min")
    out.update(
        status="finished",
        lambda_min=lm["value"],
        lambda_min_lower=lm["lower"],
        lambda_min_lower_is_rigorous=lm["lower_is_rigorous"],
        # An SOSP by a rigorous lower bound on lambda_min (dense or closed-form route), not by a Ritz value.
        sosp_certified=bool(ep["sosp"] and lm["lower_is_rigorous"]),
        lambda_min_residual=lm["residual"],
        lambda_min_converged=lm["converged"],
        lambda_max=lm["lambda_max"],
        lambda_min_method=lm["method"],
        lambda_min_matvecs=lm["matvecs"],
        lambda_min_seconds=lm["seconds"],
        **{
            f"lambda_min_{k}": lm[k]
            for k in ("closed_form_lambda_min", "reduced_ritz_value", "reduced_params", "closed_form_check")
            if k in lm
        },
        test_risk=problem.test_value(X),
        grad_op_over_lam=[g / lam if lam > 0 else math.inf for g, lam in zip(grad_op, problem.lam)],
        # The end point as its factors (X = A B^T): far smaller than X for r << min(m, n).
        A=[a.detach().cpu().tolist() for a in point.A],
        B=[b.detach().cpu().tolist() for b in point.B],
    )
    return out


def global_tolerance(reference_value: float, *, global_rtol: float, depth: float | None = None) -> float:
    r"""How far above the reference value a point still counts as global.

    With ``depth`` :math:`= L(0) - F^\star` (the problem's own scale: it scales with the risk and
    ignores a constant added to it): ``global_rtol * depth`` plus the round-off of the values,
    ``64 eps |F*|``.  Without it (records that lack it): ``global_rtol * max(1, |F*|)``.
    """
    if depth is None:
        return global_rtol * max(1.0, abs(reference_value))
    return global_rtol * depth + 64 * 2.0**-52 * abs(reference_value)


def classify(
    run: Mapping[str, Any], reference_value: float, *, global_rtol: float = 1e-6, depth: float | None = None
) -> str:
    """``global``, ``spurious``, ``not-sosp`` or ``rank-limited`` against a reference value.

    ``rank-limited``: the reference has rank ``r* > r`` (``run["reference_rank"] >
    run["lora_rank"]``), so no LoRA point of rank ``r`` reaches it and the theorems, which assume
    ``r >= r*``, say nothing about the run.  The global test's tolerance is
    :func:`global_tolerance` (``depth`` = L(0) - F*).
    """
    if run.get("status") != "finished" or not run.get("sosp"):
        return "not-sosp"
    if int(run.get("reference_rank", 0)) > int(run.get("lora_rank", 1 << 30)):
        return "rank-limited"
    excess = float(run["penalized"]) - reference_value
    tol = global_tolerance(reference_value, global_rtol=global_rtol, depth=depth)
    return "global" if excess <= tol else "spurious"


def sosp_certified(run: Mapping[str, Any]) -> bool:
    """Whether a run's end point is a *certified* SOSP: an SOSP by a rigorous lower bound on lambda_min.

    The dense or closed-form curvature route gives one; a Lanczos Ritz value is an upper bound, so an
    SOSP accepted from it is approximate.  Records written before the field existed are judged by
    ``lambda_min_lower_is_rigorous``.
    """
    if run.get("status") != "finished" or not run.get("sosp"):
        return False
    return bool(run.get("sosp_certified", run.get("lambda_min_lower_is_rigorous", False)))


def _excess(run: Mapping[str, Any]) -> float:
    return float(run["penalized"]) - float(run["reference_value"])


def wilson_interval(successes: int, n: int, *, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success fraction (95 % by default); ``(0, 1)`` when ``n = 0``."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def kkr_table(
    runs: Sequence[Mapping[str, Any]],
    reference: Mapping[str, Any],
    *,
    global_rtol: float = 1e-6,
    depth: float | None = None,
) -> dict[str, Any]:
    """Per init: counts, success fraction with its Wilson interval, norms and test risk per class.

    Counts are runs, converged (SOSPs: certified by a dense curvature bound, or approximate by a
    Lanczos Ritz value; ``certified_sosps`` counts the former), successes, failures; the separation
    ratio is the smallest failure norm over the largest success norm.
    """
    out: dict[str, Any] = {}
    inits = list(dict.fromkeys(r["init"] for r in runs))
    groups = [(i, [r for r in runs if r["init"] == i]) for i in inits]
    if len(inits) > 1:
        # Every init together, except the shifted problems (another problem, another reference).
        groups.append(("all", [r for r in runs if not r.get("shifted")]))
    for init, rows in groups:
        cls = [
            classify(
                r,
                float(r.get("reference_value", reference["value"])),
                global_rtol=global_rtol,
                depth=None if r.get("shifted") else depth,
            )
            for r in rows
        ]

        def above(r: Mapping[str, Any]) -> bool:
            ref_value = float(r["reference_value"])
            d = None if r.get("shifted") else depth
            return _excess(r) > global_tolerance(ref_value, global_rtol=global_rtol, depth=d)

        succ = [r for r, c in zip(rows, cls) if c == "global"]
        fail = [r for r, c in zip(rows, cls) if c == "spurious"]
        limited = sum(1 for c in cls if c == "rank-limited")
        conv = len(succ) + len(fail)

        def med(xs: list[float]) -> float:
            xs = sorted(x for x in xs if isinstance(x, (int, float)) and math.isfinite(x))
            return xs[len(xs) // 2] if xs else math.nan

        sep = (
            min(r["frobenius"] for r in fail) / max(max(r["frobenius"] for r in succ), 1e-300)
            if succ and fail
            else math.nan
        )
        out[init] = {
            "runs": len(rows),
            "converged": conv,
            "certified_sosps": sum(1 for r in succ + fail if sosp_certified(r)),
            "successes": len(succ),
            "failures": len(fail),
            "not_sosp": len(rows) - conv - limited,
            # Runs without an SOSP certificate (e.g. Lanczos unconverged on a real model) still
            # compare with the reference: above it is certified non-global.
            "not_sosp_at_best": sum(
                1
                for r, c in zip(rows, cls)
                if c == "not-sosp" and r.get("status") == "finished" and not above(r)
            ),
            "not_sosp_above": sum(
                1 for r, c in zip(rows, cls) if c == "not-sosp" and r.get("status") == "finished" and above(r)
            ),
            "rank_limited": limited,
            "success_fraction": len(succ) / conv if conv else math.nan,
            "success_interval": wilson_interval(len(succ), conv),
            "separation_ratio": sep,
            "success_norm_median": med([r["frobenius"] for r in succ]),
            "failure_norm_median": med([r["frobenius"] for r in fail]),
            "success_rank_median": med([max(r["ranks"]) for r in succ]),
            "failure_rank_median": med([max(r["ranks"]) for r in fail]),
            "success_test_median": med([r["test_risk"] for r in succ]),
            "end_norm_median": med([r["frobenius"] for r in rows if r.get("status") == "finished"]),
            "end_rank_median": med([max(r["ranks"]) for r in rows if r.get("status") == "finished"]),
            "end_test_median": med([r["test_risk"] for r in rows if r.get("status") == "finished"]),
            "failure_test_median": med([r["test_risk"] for r in fail]),
        }
    return out


def problem_fingerprint(problem: NonlinearProblem) -> dict[str, Any]:
    """What identifies a non-linearized problem in a file: name, shapes, decays, and its risk at a probe.

    ``probe_value`` is the penalized value at a fixed point (a ramp of all entries times 0.1);
    ``sha256`` hashes it with the rest (:func:`same_problem` compares the value up to round-off).
    """
    probe = tuple(
        torch.linspace(-1, 1, m * n, dtype=problem.dtype).reshape(m, n).to(problem.device) * 0.1
        for m, n in problem.blocks
    )
    val = problem.value(probe)
    h = hashlib.sha256(
        json.dumps([problem.name, repr(val), list(problem.blocks), list(problem.lam)]).encode()
    )
    return {
        "name": problem.name,
        "blocks": problem.blocks,
        "lam": problem.lam,
        "sha256": h.hexdigest()[:16],
        "probe_value": val,
    }


def same_problem(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Same name, shapes, decays, and risk at the probe point up to round-off (thread counts differ)."""
    from verify.verdict import jsonable

    keys = ("name", "blocks", "lam")
    if any(jsonable(old.get(k)) != jsonable(new.get(k)) for k in keys):
        return False
    if "probe_value" not in old:  # files of earlier versions: the exact hash
        return bool(old.get("sha256") == new.get("sha256"))
    a, b = float(old["probe_value"]), float(new["probe_value"])
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def reference_dict(ref: PenalizedMinimum) -> dict[str, Any]:
    """A reference minimum as stored in a file: its numbers, and ``X`` as factors ``U``, ``V``."""
    d = ref.to_dict()
    # X_j = U_j V_j^T with U_j = P_j diag(s_j) over the singular values above round-off (1e-13
    # sigma_1: singular-value thresholding leaves exact zeros, which the SVD of X returns at the
    # 1e-15 level); the stored factors reconstruct X to round-off.
    d["U"], d["V"] = [], []
    for x in ref.X:
        P, s, Qh = torch.linalg.svd(x.detach().to(torch.float64).cpu(), full_matrices=False)
        k = int((s > 1e-13 * float(s[0])).sum()) if s.numel() and float(s[0]) > 0 else 0
        d["U"].append((P[:, :k] * s[:k]).tolist())
        d["V"].append(Qh[:k].T.tolist())
    return d


def end_point_matrices(d: Mapping[str, Any], problem: NonlinearProblem) -> tuple[Tensor, ...]:
    """The matrices of a stored point: ``A B^T`` (a run), ``U V^T`` (a reference) or ``X`` itself."""

    def t(x: Any, rows: int) -> Tensor:
        out = torch.tensor(x, dtype=problem.dtype, device=problem.device)
        return out.reshape(rows, -1)

    for a, b in (("A", "B"), ("U", "V")):
        if a in d:
            return tuple(t(u, m) @ t(v, n).T for u, v, (m, n) in zip(d[a], d[b], problem.blocks))
    return tuple(torch.tensor(x, dtype=problem.dtype, device=problem.device) for x in d["X"])
