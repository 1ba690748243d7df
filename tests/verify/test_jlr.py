"""JLR checkers: the true claims hold; planted false variants are refuted and replay."""

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes import (
    Problem,
    gaussian_problem,
    load_problem,
    random_features_problem,
    solve_nuc,
    teacher_problem,
)
from theory import r_max
from verify import (
    Verdict,
    check_jlr_equiv,
    check_jlr_magnitude,
    check_jlr_rank_blocks,
    check_jlr_rank_ft,
    check_jlr_rank_nuc,
    check_jlr_zero_saddle,
)


@pytest.fixture(scope="module")
def sq():
    return gaussian_problem(K=1, N=20, blocks=[(12, 10)], lam=0.05, seed=0)


@pytest.fixture(scope="module")
def ce():
    return random_features_problem(K=2, N=16, m=12, n=10, lam=0.01, seed=0)


# ------------------------------------------------------------------------------------ true claims
@pytest.mark.parametrize(
    "checker",
    [
        check_jlr_rank_ft,
        check_jlr_rank_nuc,
        check_jlr_rank_blocks,
        check_jlr_equiv,
        check_jlr_magnitude,
        check_jlr_zero_saddle,
    ],
)
def test_claims_hold_on_a_squared_problem(sq, checker):
    v = checker(sq)
    assert v.status == "holds", v.reason
    json.dumps(v.to_dict(), allow_nan=False)  # plain JSON
    assert Verdict.from_dict(json.loads(json.dumps(v.to_dict()))).status == "holds"


def test_rank_ft_certificate_contents(sq):
    v = check_jlr_rank_ft(sq)
    c = v.certificate
    assert c["ranks_before"] == (10,) and c["ranks"] == (r_max(1, 20),)
    assert c["prediction_residual"] <= 1e-12 and c["risk_reduced"] <= 1e-20


def test_rank_ft_without_minimizer_is_inconclusive(ce):
    v = check_jlr_rank_ft(ce)
    assert v.status == "inconclusive" and "no minimizer" in v.reason


@pytest.mark.parametrize(
    "checker", [check_jlr_rank_nuc, check_jlr_equiv, check_jlr_magnitude, check_jlr_zero_saddle]
)
def test_claims_hold_on_cross_entropy(ce, checker):
    assert checker(ce).status == "holds"


def test_rank_blocks_reports_each_block():
    P = gaussian_problem(K=2, N=10, blocks=[(12, 10), (8, 8)], lam=[0.002, 0.005], seed=0)
    v = check_jlr_rank_blocks(P)
    assert v.status == "holds"
    ranks = v.certificate["ranks"]
    assert len(ranks) == 2 and sum(r * (r + 1) // 2 for r in ranks) <= 20
    assert v.certificate["block_triangular_sum"] == sum(r * (r + 1) // 2 for r in ranks)
    with pytest.raises(ValueError, match="JLR-rank-NUC is the single-matrix claim"):
        check_jlr_rank_nuc(P)


def test_zero_saddle_closed_form_both_sides():
    # Closed-form oracle: lambda_min = lam - ||S(0)||_op; strict saddle iff negative.
    P = gaussian_problem(K=1, N=8, blocks=[(5, 4)], lam=0.05, seed=1)
    s0 = float(torch.linalg.matrix_norm(P.evaluate(P.zeros()).S[0], ord=2))
    for lam, strict in ((0.5 * s0, True), (2.0 * s0, False)):
        Q = Problem(P.J.matrix, P.f0, P.y, loss="squared", blocks=P.blocks, lam=lam)
        v = check_jlr_zero_saddle(Q, rank=2)
        assert v.status == "holds"
        assert math.isclose(v.certificate["dense_lambda_min"], lam - s0, rel_tol=1e-9, abs_tol=1e-12)
        assert v.certificate["strict_saddle"] is strict


# ------------------------------------------------------------------------- planted false claims
def _replays(v: Verdict, checker, **opts):
    assert v.counterexample is not None
    P, extras = load_problem(v.counterexample)
    assert "D0" in extras
    again = checker(P, **opts)
    assert again.status == "violated"
    assert again.problem["sha256"] == v.problem["sha256"]


def test_planted_nuc_rank_one_is_refuted(sq, tmp_path):
    # "the NUC minimizer always has rank 1": refuted by a certified unique minimizer of rank > 1
    v = check_jlr_rank_nuc(sq, rank_bound=1, save_dir=tmp_path)
    assert v.status == "violated", v.reason
    assert v.certificate["unique"] and max(v.certificate["ranks"]) > 1
    _replays(v, check_jlr_rank_nuc, rank_bound=1)


def test_planted_block_bound_quarter_is_refuted(tmp_path):
    # "sum r(r+1)/2 <= KN/4" is false: a teacher of rank 3 per block at small lam
    P = teacher_problem(K=1, N=16, blocks=[(10, 10)], lam=0.002, teacher_rank=3, seed=2, noise=0.0)
    v = check_jlr_rank_blocks(P, rank_bound=1, save_dir=tmp_path)
    assert v.status == "violated", v.reason
    _replays(v, check_jlr_rank_blocks, rank_bound=1)


def test_planted_ft_rank_one_is_refuted(tmp_path):
    P = gaussian_problem(K=1, N=20, blocks=[(3, 3)], lam=0.05, seed=0)
    v = check_jlr_rank_ft(P, rank_bound=1, save_dir=tmp_path)
    assert v.status == "violated" and v.certificate["unique"]
    _replays(v, check_jlr_rank_ft, rank_bound=1)


def test_planted_ft_variant_without_uniqueness_is_not_violated(sq):
    # p > KN: FT minimizers are not unique, so a false-looking bound cannot be *certified* false
    v = check_jlr_rank_ft(sq, rank_bound=1)
    assert v.status == "inconclusive"


def test_planted_equiv_for_every_rank_is_refuted(sq, tmp_path):
    v = check_jlr_equiv(sq, rank=1, enforce_hypothesis=False, save_dir=tmp_path)
    assert v.status == "violated", v.reason
    assert v.certificate["lora_excess"] > 1e-4
    # with the hypothesis enforced, r below the rank is "not applicable", never violated
    assert check_jlr_equiv(sq, rank=1).status == "inconclusive"


def test_planted_magnitude_quarter_is_refuted(sq, tmp_path):
    v = check_jlr_magnitude(sq, factor=0.25, save_dir=tmp_path)
    assert v.status == "violated"
    _replays(v, check_jlr_magnitude, factor=0.25)


def test_planted_zero_saddle_frobenius_is_refuted(sq, tmp_path):
    def frobenius(lams, S):
        return min(lam - float(s.norm()) for lam, s in zip(lams, S))

    v = check_jlr_zero_saddle(sq, prediction=frobenius, save_dir=tmp_path)
    assert v.status == "violated"
    assert v.certificate["eigen_residual"] <= 1e-10


@given(seed=st.integers(0, 2**31 - 1), m=st.integers(3, 8), n=st.integers(3, 8), N=st.integers(2, 6))
def test_rank_nuc_holds_on_random_problems(seed, m, n, N):
    P = gaussian_problem(K=2, N=N, blocks=[(m, n)], lam=0.01, loss="cross_entropy", seed=seed)
    v = check_jlr_rank_nuc(P)
    assert v.status == "holds", v.reason
    assert v.certificate["block_triangular_sum"] <= 2 * N


@given(seed=st.integers(0, 2**31 - 1))
def test_planted_rank_one_refuted_on_some_teacher_problems(seed):
    # A rank-3 teacher fitted at small lam has a unique NUC minimizer of rank 3: "rank <= 1"
    # must come out violated (never holds) on every such problem.
    P = teacher_problem(K=1, N=20, blocks=[(8, 8)], lam=1e-3, teacher_rank=3, seed=seed, noise=0.0)
    v = check_jlr_rank_nuc(P, rank_bound=1)
    assert v.status != "holds"
    if v.status == "inconclusive":
        assert "uniqueness is not certified" in v.reason


def test_shared_solution_is_used(sq):
    sol = solve_nuc(sq)
    v = check_jlr_rank_nuc(sq, solution=sol)
    assert v.certificate["objective"] == sol.certificate.primal


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda P: check_jlr_rank_nuc(P, rank_bound=-1), "rank_bound: expected None or an int >= 0"),
        (lambda P: check_jlr_equiv(P, rank=0), "rank: expected a positive int"),
        (lambda P: check_jlr_magnitude(P, factor=0), "factor: expected a positive number"),
        (lambda P: check_jlr_zero_saddle(P, rank=0), "rank: expected a positive int"),
    ],
)
def test_bad_options(sq, call, match):
    with pytest.raises(ValueError, match=match):
        call(sq)


def test_verdict_is_frozen(sq):
    v = check_jlr_magnitude(sq)
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        v.status = "violated"  # type: ignore[misc]
    with pytest.raises(TypeError):
        v.certificate["gap"] = 0.0  # type: ignore[index]
    with pytest.raises(ValueError, match="status: expected one of"):
        Verdict("JLR-equiv", "maybe", {}, {}, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("cond", [1e3, 1e5, 3e5, 1e7])
def test_true_rank_one_variant_is_never_violated_on_ill_conditioned_ft(cond):
    # The FT minimizer is unique and has rank 1, so "rank <= 1" is TRUE: whatever the conditioning,
    # the checker may say holds or inconclusive, never violated.
    g = torch.Generator().manual_seed(0)
    A, _ = torch.linalg.qr(torch.randn(30, 9, generator=g, dtype=torch.float64))
    B, _ = torch.linalg.qr(torch.randn(9, 9, generator=g, dtype=torch.float64))
    J = A @ torch.diag(torch.logspace(0, -math.log10(cond), 9, dtype=torch.float64)) @ B.T
    Ds = torch.outer(
        torch.randn(3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    )
    y = (J @ Ds.reshape(-1)).reshape(30, 1)
    P = Problem(J, torch.zeros(30, 1, dtype=torch.float64), y, loss="squared", blocks=[(3, 3)], lam=0.1)
    assert check_jlr_rank_ft(P, rank_bound=1).status != "violated"


def test_float32_problems_are_inconclusive_not_violated(sq):
    P32 = Problem(
        sq.J.matrix.float(), sq.f0.float(), sq.y.float(), loss="squared", blocks=sq.blocks, lam=sq.lam
    )
    for checker in (check_jlr_zero_saddle, check_jlr_rank_nuc, check_jlr_magnitude, check_jlr_rank_ft):
        v = checker(P32)
        assert v.status == "inconclusive" and "float64" in v.reason


def test_equiv_holds_when_the_optimum_is_zero(sq):
    big = Problem(sq.J.matrix, sq.f0, sq.y, loss="squared", blocks=sq.blocks, lam=100.0)
    v = check_jlr_equiv(big)
    assert v.status == "holds", v.reason


def test_zero_jacobian_ft():
    P = Problem(
        torch.zeros(6, 4, dtype=torch.float64),
        torch.zeros(6, 1, dtype=torch.float64),
        torch.tensor([0, 1, 0, 1, 1, 0]),
        loss="logistic",
        blocks=[(2, 2)],
        lam=0.1,
    )
    v = check_jlr_rank_ft(P)
    assert v.status == "holds" and v.certificate["ranks"] == (0,)


def test_passed_solution_is_recertified(sq):
    other = gaussian_problem(K=1, N=20, blocks=[(12, 10)], lam=0.05, seed=99)
    wrong = solve_nuc(other)
    v = check_jlr_magnitude(sq, solution=wrong)
    assert v.status == "inconclusive" and "not certified" in v.reason


def test_planted_rank_zero_is_refuted_by_weak_duality(tmp_path):
    # "D = 0 is a minimizer" is false exactly when some ||grad L(0)_j||_op > lam_j (the NUC
    # optimality condition at 0): the checker refutes it whatever the uniqueness certificate says.
    P = gaussian_problem(K=2, N=10, blocks=[(8, 8), (8, 6)], lam=0.01, loss="cross_entropy", seed=4)
    S0 = P.evaluate(P.zeros()).S
    assert max(float(torch.linalg.matrix_norm(s, 2)) for s in S0) > 0.01
    v = check_jlr_rank_blocks(P, rank_bound=0, save_dir=tmp_path)
    assert v.status == "violated", v.reason
    assert max(v.certificate["S_op_at_zero_over_lam"]) > 1
    # ... and holds when lam is so large that 0 is the minimizer (||grad L(0)||_op <= lam)
    lam = 1.01 * max(float(torch.linalg.matrix_norm(s, 2)) for s in S0)
    Q = Problem(P.J.matrix, P.f0, P.y, loss=P.loss, blocks=P.blocks, lam=lam)
    assert check_jlr_rank_blocks(Q, rank_bound=0).status == "holds"
