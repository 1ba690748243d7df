"""Verdicts that can be trusted: the per-block hypothesis, exact counterexamples, scale-free tolerances.

Each test here fails on the code before issue 23's fixes (the reason is stated next to it).
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from landscapes import Problem, gaussian_problem, teacher_problem
from landscapes.curvature.dense import lora_hessian
from landscapes.gauge import gauge_basis
from landscapes.local_min import certify_local_min
from landscapes.lora import LoRAPoint, minimize_lora, random_factors
from landscapes.sosp import certify_sosp, find_sosp, make_init
from theory.bounds import r_max, ranks_above_bound, ranks_within_bound
from verify.cli.main import main
from verify.jlr.second_order import (
    check_jlr_gd,
    check_jlr_no_spurious,
    check_jlr_spurious_below,
    counterexample_test,
)
from verify.report import evidence
from verify.run.audits import plan_audit


# ---------------------------------------------------------------------------------------------------
# 1. several blocks: the no-spurious hypothesis is per block
@pytest.fixture(scope="module")
def two_blocks():
    # KN = 20; ranks [7, 1]: sum r(r+1)/2 = 29 > 20, but block 2 (r = 1) is below the bound.
    return teacher_problem(
        K=1, N=20, blocks=[(8, 8), (8, 8)], lam=0.02, teacher_rank=3, loss="squared", seed=2
    )


def test_per_block_rule_is_not_the_sum():
    assert not ranks_within_bound([7, 1], 1, 20)  # the sum form would call [7, 1] "above"
    assert not ranks_above_bound([7, 1], 1, 20)
    assert ranks_above_bound([7, 7], 1, 20)
    assert ranks_above_bound([11, 11], 2, 32) and not ranks_above_bound([11, 10], 2, 32)


def test_spurious_minima_below_in_one_block_are_certified(two_blocks):
    # Old code: [7, 1] counted as above the bound, so the search refused to run (inconclusive).
    v = check_jlr_spurious_below(
        two_blocks, rank=[7, 1], n_starts=4, inits=("large", "gaussian", "small", "zero_b")
    )
    assert v.status == "holds", v.reason
    tests = [r["counterexample_test"] for r in v.certificate["runs"] if r.get("counterexample_test")]
    certified = [t for t in tests if t["certified"]]
    assert certified
    for t in certified:
        # an exact local minimizer near the end point, its objective above another rank-[7, 1] point
        assert t["distance"] < 1e-4 and t["margin"] > 1e3 * t["tolerance"]
        assert t["local_min"]["mu"] > 0 and t["local_min"]["certified"]
    # the same problem and ranks: JLR-no-spurious's hypothesis is not met (old code: it ran)
    w = check_jlr_no_spurious(two_blocks, rank=[7, 1], n_starts=2)
    assert w.status == "inconclusive" and "hypothesis not met" in w.reason
    assert w.certificate["blocks_above"] == [True, False]
    # run anyway, the statement is refuted through the real code path, by an exact local minimizer
    x = check_jlr_no_spurious(
        two_blocks,
        rank=[7, 1],
        n_starts=4,
        inits=("large", "gaussian", "small", "zero_b"),
        perturbations=("none",),
        enforce_hypothesis=False,
    )
    assert x.status == "violated", x.reason
    assert "exact local minimizer" in x.reason


def test_audit_plan_and_cli_take_per_block_ranks(two_blocks, tmp_path):
    tasks = plan_audit(two_blocks, ranks=[(7, 1)])
    ranked = [t for t in tasks if "rank" in t.options]
    assert [(t.claim, t.options["rank"]) for t in ranked] == [("JLR-spurious-below", [7, 1])]
    tasks = plan_audit(two_blocks, ranks=[7, 1])  # two uniform rank assignments
    ranked = sorted((t.claim, t.options["rank"]) for t in tasks if "rank" in t.options)
    assert ranked == [("JLR-no-spurious", 7), ("JLR-spurious-below", 1)]
    with pytest.raises(ValueError, match="one rank per block"):
        plan_audit(two_blocks, ranks=[(7, 1, 2)])
    from landscapes.io import save_problem

    path = save_problem(two_blocks, tmp_path / "two.npz")
    assert main(["audit", str(path), "--rank", "7,1,2"]) == 3
    assert main(["audit", str(path), "--rank", "7,x"]) == 3
    assert main(["audit", str(path), "--rank", "\u0667,1"]) == 3  # a non-ASCII digit
    assert main(["audit", str(path), "--rank", "7_0,1"]) == 3


def test_default_ranks_above_are_per_block():
    P = gaussian_problem(K=1, N=10, blocks=[(8, 8), (8, 8)], lam=0.05, seed=0)
    v = check_jlr_no_spurious(P, n_starts=1, inits=("small",), perturbations=("none",))
    # old default: b r(r+1)/2 > KN, r = 3 per block (3 < r_max + 1 = 4)
    assert v.certificate["ranks"] == [r_max(1, 10) + 1] * 2


# ---------------------------------------------------------------------------------------------------
# 2. violated needs an exact counterexample; curvature on the gauge complement; scale-free tolerances
def _scaled(P: Problem, c: float, lam: float | None = None) -> Problem:
    return Problem(
        c * P.J.matrix,
        P.f0,
        P.y,
        loss=P.loss.name,
        blocks=list(P.blocks),
        lam=[c * x for x in P.lam] if lam is None else [lam] * len(P.blocks),
    )


@pytest.fixture(scope="module")
def shallow_saddle():
    """U = V = 0 with lambda_min = lam - ||S0||_op = -5e-7 on a problem whose J is scaled by 1e-3."""
    base = gaussian_problem(K=1, N=8, blocks=[(7, 6)], lam=0.01, seed=3)
    tiny = _scaled(base, 1e-3)
    s0 = float(torch.linalg.matrix_norm(tiny.evaluate(tiny.zeros()).S[0], ord=2))
    return _scaled(base, 1e-3, lam=s0 - 5e-7)


def test_a_shallow_strict_saddle_is_no_counterexample(shallow_saddle):
    P = shallow_saddle
    U = (torch.zeros(7, 4, dtype=torch.float64),)
    V = (torch.zeros(6, 4, dtype=torch.float64),)
    c = certify_sosp(P, U, V)
    # inside the old curvature tolerance 1e-6 * max(1, lambda_max) = 1e-6, so an "SOSP" before;
    # now the tolerance follows lambda_max ~ 1e-3 and the negative curvature is certified
    assert c.curvature.upper < -4e-7 and c.is_saddle and not c.is_sosp
    t = counterexample_test(
        P,
        LoRAPoint(U, V),
        None,
        c.stacked_ranks,
        [4],
        0.0,
        order=2,
        grad_norm=0.0,
        grad_tol=1e-9,
        gap_rtol=1e-8,
        method="auto",
    )
    assert not t["certified"]
    # old code: the zero start was a "certified SOSP" above the optimum -> violated
    v = check_jlr_no_spurious(P, rank=4, n_starts=1, inits=("zero",), perturbations=("none",))
    assert v.status == "holds", v.reason
    assert v.certificate["runs"][0]["escapes"] >= 1


def test_gauge_directions_are_null_at_critical_points_and_left_out():
    P = gaussian_problem(K=2, N=10, blocks=[(6, 5), (5, 4)], lam=0.05, loss="cross_entropy", seed=0)
    init = random_factors(P, [3, 3], scale=0.3, generator=torch.Generator().manual_seed(0))
    res = minimize_lora(P, rank=[3, 3], init=init, grad_tol=1e-13, max_iter=5000)
    U, V = res.point.U, res.point.V
    g = gauge_basis(U, V)
    H = lora_hessian(P, U, V)
    assert (
        g.dim > 0 and float((g.basis.T @ g.basis - torch.eye(g.dim, dtype=torch.float64)).abs().max()) < 1e-12
    )
    assert float((H @ g.basis).norm()) < 1e-9  # H (R Omega) = grad(R) Omega = 0 at a critical point
    # dense oracle: eigenvalues of H on the complement of the gauge directions
    Q, _ = torch.linalg.qr(torch.cat([g.basis, torch.eye(H.shape[0], dtype=H.dtype)], dim=1))
    B = Q[:, g.dim : H.shape[0]]
    comp = float(torch.linalg.eigvalsh(B.T @ H @ B)[0])
    full = float(torch.linalg.eigvalsh(H)[0])
    assert abs(full) < 1e-10 < comp  # the full Hessian's zero is the gauge's
    c = certify_sosp(P, U, V)
    assert c.curvature.lower <= comp <= c.curvature.upper and c.curvature.lower > 0.5 * comp
    lm = certify_local_min(P, U, V)
    assert lm.certified and lm.objective_lower <= lm.objective and lm.distance < 1e-6


def test_local_min_bound_contains_the_polished_minimum():
    # oracle: L-BFGS run to round-off from the certified point stays inside [F_lower, F]
    P = gaussian_problem(K=1, N=10, blocks=[(6, 5)], lam=0.05, seed=0)
    init = random_factors(P, [3], scale=0.3, generator=torch.Generator().manual_seed(0))
    res = minimize_lora(P, rank=[3], init=init, grad_tol=1e-9, max_iter=5000)
    lm = certify_local_min(P, res.point.U, res.point.V)
    assert lm.certified
    end = minimize_lora(P, rank=[3], init=res.point, grad_tol=1e-14, max_iter=5000)
    from landscapes.lora import lora_value

    F_end = lora_value(P, end.point.U, end.point.V)
    assert lm.objective_lower - 1e-15 <= F_end <= lm.objective + 1e-15
    moved = math.sqrt(
        sum(float(((a - b) ** 2).sum()) for a, b in zip(end.point.U + end.point.V, res.point.U + res.point.V))
    )
    assert moved <= lm.distance * (1 + 1e-6) + 1e-12


def test_audit_point_exit_code_one_needs_an_exact_spurious_minimizer(two_blocks, tmp_path):
    from landscapes.io import save_problem

    path = save_problem(two_blocks, tmp_path / "two.npz")
    gen = torch.Generator().manual_seed(0)
    run = find_sosp(two_blocks, make_init(two_blocks, [7, 1], "large", generator=gen))
    pt = run.point
    np.savez(
        tmp_path / "spurious.npz",
        U0=pt.U[0].numpy(),
        V0=pt.V[0].numpy(),
        U1=pt.U[1].numpy(),
        V1=pt.V[1].numpy(),
    )
    np.savez(
        tmp_path / "off.npz",
        U0=2 * pt.U[0].numpy(),
        V0=pt.V[0].numpy(),
        U1=pt.U[1].numpy(),
        V1=pt.V[1].numpy(),
    )
    base = ["audit", str(path), "--claims", "none", "--point"]
    assert main([*base, str(tmp_path / "spurious.npz")]) == 1  # certified spurious local minimizer
    assert main([*base, str(tmp_path / "off.npz")]) == 2  # not global, but not a counterexample


def test_gd_violated_needs_an_exact_local_minimizer():
    Q = gaussian_problem(K=1, N=10, blocks=[(6, 6)], lam=0.005, seed=11)
    w = check_jlr_gd(
        Q, rank=1, optimizers=("gd",), inits=("small",), steps=4000, gap_rtol=1e-8, enforce_hypothesis=False
    )
    assert w.status == "violated", w.reason
    t = w.certificate["runs"][0]["counterexample_test"]
    assert t["certified"] and t["local_min"]["mu"] > 0 and t["margin"] > 0


@pytest.fixture(scope="module")
def scale_case():
    P = gaussian_problem(K=1, N=8, blocks=[(7, 6)], lam=0.01, seed=3)
    pts = {}
    pts["zero"] = LoRAPoint(
        (torch.zeros(7, 3, dtype=torch.float64),), (torch.zeros(6, 3, dtype=torch.float64),)
    )
    pts["random"] = random_factors(P, [3], scale=0.5, generator=torch.Generator().manual_seed(1))
    pts["end"] = find_sosp(P, make_init(P, [3], "gaussian", generator=torch.Generator().manual_seed(2))).point
    # stopped early: not stationary (old code: stationary once rescaled, its tolerance was absolute)
    early = make_init(P, [3], "gaussian", generator=torch.Generator().manual_seed(2))
    pts["early"] = minimize_lora(P, rank=[3], init=early, grad_tol=3e-6, max_iter=5000).point
    # rank 1 is below the NUC rank here: its L-BFGS end point is a local minimizer above the optimum
    pts["rank1"] = find_sosp(
        P, make_init(P, [1], "gaussian", generator=torch.Generator().manual_seed(3))
    ).point

    def status(Q, pt):
        c = certify_sosp(Q, pt.U, pt.V)
        lm = certify_local_min(Q, pt.U, pt.V)
        return (c.is_sosp, c.is_saddle, c.is_global, c.grad_norm <= c.grad_tol, lm.certified)

    base = {k: status(P, p) for k, p in pts.items()}
    assert base["end"][0] and base["end"][2]  # an approximate SOSP, certified global
    assert base["rank1"][4] and not base["rank1"][2]  # an exact local minimizer nearby, not global
    assert base["zero"][1]  # zero is a certified saddle
    assert not base["early"][3]  # not stationary
    v_base = check_jlr_no_spurious(
        P, rank=4, n_starts=3, inits=("small", "zero", "large"), perturbations=("none",)
    )
    return P, pts, status, base, v_base.status


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log10c=st.floats(min_value=-4, max_value=4, allow_nan=False))
@example(log10c=-4.0)
@example(log10c=4.0)
def test_rescaled_problems_get_the_same_answers(scale_case, log10c):
    # J -> cJ, lam -> c lam: the landscape in (U, V) / sqrt(c) is the same (objectives unchanged,
    # gradients x sqrt(c), Hessians x c).  Old code: tolerances with max(1, .) changed the statuses.
    P, pts, status, base, v_base = scale_case
    c = 10.0**log10c
    Q = _scaled(P, c)
    s = 1.0 / math.sqrt(c)
    for k, pt in pts.items():
        mapped = LoRAPoint(tuple(u * s for u in pt.U), tuple(v * s for v in pt.V))
        assert status(Q, mapped) == base[k], (k, c)
    v = check_jlr_no_spurious(
        Q, rank=4, n_starts=3, inits=("small", "zero", "large"), perturbations=("none",), init_scale=s
    )
    assert v.status == v_base, (c, v.reason)


# ---------------------------------------------------------------------------------------------------
# 5. checks that can fail independently; negative gaps
def test_negative_gaps_are_labelled_round_off():
    e = evidence(
        {"claim": "JLR-rank-NUC", "status": "holds", "certificate": {"ranks": [2], "rel_gap_reduced": -3e-16}}
    )
    assert "-3.0e-16 (< 0: round-off)" in e
    e = evidence({"claim": "JLR-magnitude", "status": "holds", "certificate": {"rel_gap": 2e-16}})
    assert "round-off" not in e


def test_zero_saddle_has_an_autodiff_route_where_the_dense_hessian_is_skipped():
    # Old code: with the dense autodiff Hessian skipped, the routes left were the closed-form HVP and
    # the structured route, which at zero *is* the closed form.  Now Lanczos on autodiff HVPs runs.
    from verify.jlr.rank import check_jlr_zero_saddle

    P = gaussian_problem(K=2, N=6, blocks=[(9, 8), (7, 6)], lam=0.01, loss="cross_entropy", seed=1)
    v = check_jlr_zero_saddle(P, max_dense=0)
    assert v.status == "holds", v.reason
    assert "Lanczos (autodiff HVP)" in v.certificate["routes"]
    assert abs(v.certificate["autodiff_lanczos_rayleigh"] - v.certificate["closed_form"]) < 1e-9

    def too_high(lams, S):
        return min(lam - float(torch.linalg.matrix_norm(s, ord=2)) for lam, s in zip(lams, S)) + 1e-3

    w = check_jlr_zero_saddle(P, max_dense=0, prediction=too_high)
    assert w.status == "violated" and "autodiff Hessian has Rayleigh quotient" in w.reason


# ---------------------------------------------------------------------------------------------------
# found by a fresh-eyes review of the first version of these fixes
def test_zero_saddle_without_a_rigorous_route_does_not_hold_a_too_low_prediction():
    # operator J with K N > 4096 (no structured route) and no dense route: only the two Lanczos
    # routes, which bound lambda_min from above; a prediction below what they find is not "holds"
    from landscapes.operators import LowRankOperator
    from verify.jlr.rank import check_jlr_zero_saddle

    g = torch.Generator().manual_seed(0)
    N = 4200
    L = torch.randn(N, 4, generator=g, dtype=torch.float64) / N**0.5
    R = torch.randn(4, 9, generator=g, dtype=torch.float64)
    y = torch.randn(N, 1, generator=g, dtype=torch.float64)
    P = Problem(
        LowRankOperator(L, R),
        torch.zeros(N, 1, dtype=torch.float64),
        y,
        loss="squared",
        blocks=[(3, 3)],
        lam=[0.01],
    )

    def too_low(lams, S):
        return min(lam - float(torch.linalg.matrix_norm(s, ord=2)) for lam, s in zip(lams, S)) - 0.05

    assert check_jlr_zero_saddle(P, max_dense=0).status == "holds"
    assert check_jlr_zero_saddle(P, max_dense=0, prediction=too_low).status == "inconclusive"
    assert check_jlr_zero_saddle(P, prediction=too_low).status == "violated"  # the dense route refutes it


def test_zero_saddle_tolerance_follows_the_scale():
    from verify.jlr.rank import check_jlr_zero_saddle

    base = gaussian_problem(K=1, N=8, blocks=[(7, 6)], lam=0.01, seed=3)

    def off(lams, S):  # 1e-4 relative off the closed form
        return min(lam - float(torch.linalg.matrix_norm(s, ord=2)) for lam, s in zip(lams, S)) * (1 + 1e-4)

    for c in (1.0, 1e-6, 1e4):
        assert check_jlr_zero_saddle(_scaled(base, c), prediction=off).status == "violated", c


def test_a_saddle_at_nudged_zero_columns_is_certified():
    # an adversarial start: a rank-1 critical point padded with zero columns plus 1e-8 nudges; the
    # compressed lambda_min is negative and the structured route with the gauge left out must see it
    P = gaussian_problem(K=1, N=6, blocks=[(6, 5)], lam=0.01, seed=2)
    pt = make_init(P, [4], "adversarial", generator=torch.Generator().manual_seed(0), adversarial_rank=1)
    dense = certify_sosp(P, pt.U, pt.V, method="dense")
    structured = certify_sosp(P, pt.U, pt.V, method="structured")
    assert dense.is_saddle and structured.is_saddle
    assert structured.curvature.upper < 0.5 * dense.curvature.upper < 0


def test_spurious_search_and_point_audit_are_the_same_after_rescaling(two_blocks):
    # L-BFGS's first step was absolute (min(1, 1/||g||)): mapped starts ended at other points
    base = check_jlr_spurious_below(two_blocks, rank=[7, 1], n_starts=2, inits=("large",), seed=0)
    for c in (1e-4, 1e4):
        v = check_jlr_spurious_below(
            _scaled(two_blocks, c), rank=[7, 1], n_starts=2, inits=("large",), seed=0, init_scale=c**-0.5
        )
        assert v.status == base.status, (c, v.reason)
        assert [round(r["objective"], 8) for r in v.certificate["runs"]] == [
            round(r["objective"], 8) for r in base.certificate["runs"]
        ]


def test_gd_with_adam_is_the_same_after_rescaling():
    P = gaussian_problem(K=1, N=6, blocks=[(5, 5)], lam=0.05, seed=0)
    for c in (1.0, 1e-4):
        v = check_jlr_gd(
            _scaled(P, c), rank=4, optimizers=("adam",), inits=("small",), steps=3000, init_scale=c**-0.5
        )
        assert v.status == "holds", (c, v.reason)


def test_phase_runs_use_the_scale_free_tolerance():
    # the same landscape with objectives x 1e-6: a rank-1 end point 19 % above the NUC optimum was
    # "global" under the absolute tolerance gap_rtol * max(1, |P*|)
    from verify.jlr.phase import phase_reference, phase_run

    P0 = gaussian_problem(K=1, N=10, blocks=[(6, 6)], lam=0.005, seed=11)
    for a in (1.0, 1e-3):
        P = Problem(
            P0.J.matrix,
            P0.f0 * a,
            P0.y * a,
            loss="squared",
            blocks=list(P0.blocks),
            lam=[a * x for x in P0.lam],
        )
        run = phase_run(phase_reference(P), rank=1, init="gaussian", init_seed=0, sosp_seed=0)
        assert not run.is_global and run.spurious is None  # r = 1 is below the NUC rank: not tested
