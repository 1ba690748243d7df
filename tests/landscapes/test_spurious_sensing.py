"""Designed sensing problems with a certified spurious SOSP of weight-decayed LoRA ([KKR25], generic regime).

Oracles: the certified NUC optimum (duality gap) for "non-global"; the dense LoRA Hessian with its
rigorous lower bound for "SOSP"; the explicit O(r) gauge directions (A K, B K), K skew, for the
near-zero eigenvalues; H's eigenvalues for alpha > 0 and rho_lo; theory.kkr.dichotomy for (i)-(iii).
"""

import math

import pytest
import torch

from landscapes.curvature.nonlinear import nonlinear_hessian
from landscapes.nonlinear.factors import Factors
from landscapes.nonlinear.penalized import minimize_penalized
from landscapes.nonlinear.restricted import restricted_bounds, restricted_witnesses, rsc_ratio, rsm_ratio
from landscapes.nonlinear.sosp import end_point, train_lora
from landscapes.nonlinear.spurious_sensing import (
    SPURIOUS_CONFIGS,
    adversarial_start,
    newton_polish,
    spurious_hessian,
    spurious_sensing,
)
from theory.kkr import dichotomy

_CACHE: dict[str, dict] = {}


def _solved(config: str) -> dict:
    """Problem, certified reference, structural bounds, and the end point from the adversarial start."""
    if config not in _CACHE:
        p = spurious_sensing(config=config)
        ref = minimize_penalized(p)
        end, _ = train_lora(p, adversarial_start(config=config), steps=0, polish=1000, grad_tol=1e-11)
        end = newton_polish(p, end, steps=3)
        ep = end_point(p, end, dense_max=10**4)
        _CACHE[config] = {"p": p, "ref": ref, "bounds": restricted_bounds(p), "end": end, "ep": ep}
    return _CACHE[config]


def _gauge_basis(point: Factors) -> torch.Tensor:
    """Orthonormal basis of the tangent directions (A K, B K), K skew: the exact null space of the gauge."""
    A, B = point.A[0], point.B[0]
    r = A.shape[1]
    cols = []
    for i in range(r):
        for j in range(i + 1, r):
            K = torch.zeros(r, r, dtype=A.dtype)
            K[i, j], K[j, i] = 1.0, -1.0
            cols.append(torch.cat([(A @ K).reshape(-1), (B @ K).reshape(-1)]))
    return torch.linalg.qr(torch.stack(cols, dim=1))[0]


def test_unknown_config_raises():
    with pytest.raises(ValueError, match="config"):
        spurious_sensing(config="kappa3")
    with pytest.raises(ValueError, match="config"):
        adversarial_start(config=4)  # type: ignore[arg-type]


@pytest.mark.parametrize("config", SPURIOUS_CONFIGS)
def test_design_has_a_certified_low_rank_optimum_and_certified_constants(config):
    s = _solved(config)
    p, ref, b = s["p"], s["ref"], s["bounds"]
    H = spurious_hessian(config)
    # The risk's Hessian is H: autodiff HVP against the stored matrix.
    Z = torch.randn(p.blocks[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(p.hvp(p.x_star, (Z,))[0].reshape(-1), H @ Z.reshape(-1), rtol=1e-10, atol=1e-12)
    assert ref.certified and ref.method == "nuc"
    assert ref.rank == p.meta["rank"] < p.meta["lora_rank"]
    # The designed X* is the penalized minimizer (NUC finds it again).
    assert float((ref.X[0] - p.x_star[0]).norm()) <= 1e-6 * float(p.x_star[0].norm())
    assert b.alpha_lower > 0.5
    kappa = b.beta_upper / b.alpha_lower
    assert 4.0 <= kappa <= 20.5
    assert math.isclose(kappa, p.meta["kappa"], rel_tol=1e-6)
    rho_lo = 2 * b.alpha_lower / b.beta_upper
    assert rho_lo <= 0.5  # generic-regime territory: rho <= 1 is not excluded by structure


@pytest.mark.parametrize("config", SPURIOUS_CONFIGS)
def test_adversarial_start_reaches_a_certified_non_global_sosp(config):
    s = _solved(config)
    p, ref, ep, end = s["p"], s["ref"], s["ep"], s["end"]
    r, lam = p.meta["lora_rank"], p.lam[0]
    # Non-global, certified: far above the certified optimum (round-off is ~1e-15 |value|).
    assert ep.penalized - ref.value >= 1.0 * abs(ref.value)
    # ... because the penalized first-order condition fails: ||P_perp G Q_perp||_op > lam.
    X = end.A[0] @ end.B[0].T
    U, _, Vh = torch.linalg.svd(X)
    G = p.grad((X,))[0]
    assert float(torch.linalg.matrix_norm(U[:, r:].T @ G @ Vh[r:].T, ord=2)) > 2 * lam
    # SOSP, certified by the dense Hessian's rigorous lower bound.
    lm = ep.lambda_min
    assert ep.sosp and lm["lower_is_rigorous"] and lm["converged"]
    assert ep.grad_norm <= 1e-12
    assert lm["lower"] >= -1e-9 * lm["lambda_max"]
    assert ep.ranks == (r,)
    assert float((X - ref.X[0]).norm()) <= p.meta["radius"]
    # The only near-zero eigenvalues are the r(r-1)/2 gauge directions; off them the Hessian is
    # positive definite (a strict local minimizer modulo the gauge).
    Hl = nonlinear_hessian(p, end)
    ev, vec = torch.linalg.eigh((Hl + Hl.T) / 2)
    k = r * (r - 1) // 2
    assert float(ev[k - 1]) <= 1e-8 * float(ev[-1])
    assert float(ev[k]) >= 1e-2
    gauge = _gauge_basis(end)
    bottom = vec[:, :k]
    assert float((bottom - gauge @ (gauge.T @ bottom)).norm()) <= 1e-6


@pytest.mark.parametrize("config", SPURIOUS_CONFIGS)
def test_theorem_1_2_inequalities_hold_at_rho_lower(config):
    s = _solved(config)
    p, ref, b, ep, end = s["p"], s["ref"], s["bounds"], s["ep"], s["end"]
    r = p.meta["lora_rank"]
    X = end.A[0] @ end.B[0].T
    dist_sq = float((X - ref.X[0]).pow(2).sum())
    res = dichotomy(
        ep.singular_values[0],
        r=r,
        r_star=ref.rank,
        alpha=b.alpha_lower,
        beta=b.beta_upper,
        distance_sq=dist_sq,
    )
    assert res["rank_is_r"] and res["sigma_ratio_ok"] and res["distance_ok"], res
    # Generic regime, certified by points of the set: 2 alpha <= 2 * (the spurious point's own RSC
    # ratio), beta >= an RSM ratio there (any sampled point bounds beta from below).
    alpha_up, _ = rsc_ratio(p, (X,), ref.X)
    beta_lo = max(rsm_ratio(p, (X,), torch.Generator().manual_seed(k)) for k in range(20))
    assert 2 * alpha_up <= beta_lo


def test_planted_larger_rho_breaks_inequality_ii():
    """The same numbers with rho doubled (a false constant) fail (ii): the check can fail."""
    s = _solved("kappa20")
    p, ref, b, ep = s["p"], s["ref"], s["bounds"], s["ep"]
    res = dichotomy(
        ep.singular_values[0],
        r=p.meta["lora_rank"],
        r_star=ref.rank,
        alpha=2 * b.alpha_lower,
        beta=b.beta_upper,
        distance_sq=1.0,
    )
    assert not res["sigma_ratio_ok"]


@pytest.mark.parametrize("config", ["kappa10", "kappa20"])
def test_witnesses_pin_rho_and_the_inequalities_hold_at_its_upper_end(config):
    """Points of the set bound alpha from above and beta from below: rho in [rho_lo, rho_up], both checked."""
    s = _solved(config)
    p, ref, b, ep, end = s["p"], s["ref"], s["bounds"], s["ep"], s["end"]
    r, D = p.meta["lora_rank"], p.meta["radius"]
    w = restricted_witnesses(p, rank=r, radius=D, x_star=ref.X, starts=4)
    # The witnesses are members of the (r, D) set, with rank-one U, V of unit Frobenius norm.
    assert int(torch.linalg.matrix_rank(w.alpha_point)) <= r
    assert int(torch.linalg.matrix_rank(w.beta_point)) <= r
    assert float((w.alpha_point - ref.X[0]).norm()) <= D
    assert float((w.beta_point - ref.X[0]).norm()) <= D
    for M in (w.beta_u, w.beta_v):
        assert int(torch.linalg.matrix_rank(M)) == 1
        assert math.isclose(float(M.norm()), 1.0, rel_tol=1e-12)
    # Consistent with the structural bounds (each side can only be approached).
    assert b.alpha_lower <= w.alpha_upper and w.beta_lower <= b.beta_upper
    assert w.rho_upper < 1.2 * (2 * b.alpha_lower / b.beta_upper)
    X = end.A[0] @ end.B[0].T
    res = dichotomy(
        ep.singular_values[0],
        r=r,
        r_star=ref.rank,
        alpha=w.alpha_upper,
        beta=w.beta_lower,
        distance_sq=float((X - ref.X[0]).pow(2).sum()),
    )
    assert res["all"], res


def test_checker_reaches_violated_only_for_a_planted_constant():
    """KKR-dichotomy through collect_evidence: not violated by the theorem; violated with rho x 1.5."""
    from verify.kkr.checkers import check_kkr_dichotomy, collect_evidence
    from verify.kkr.training import classify, sosp_certified

    p = spurious_sensing(config="kappa20")
    ev = collect_evidence(
        p,
        rank=p.meta["lora_rank"],
        radius=p.meta["radius"],
        inits=(),
        seeds=(),
        steps=0,
        samples=30,
        starts={"adversarial": adversarial_start(config="kappa20")},
    )
    (run,) = ev.runs
    assert classify(run, ev.reference.value) == "spurious" and sosp_certified(run)
    assert check_kkr_dichotomy(ev).status in ("holds", "inconclusive")
    planted = check_kkr_dichotomy(ev, rho_factor=1.5)
    assert planted.status == "violated", planted.reason
