"""Mutation tests: a planted false variant of every checker's claim is refuted on generated problems.

Problems come from the public strategies (:mod:`verify.strategies`).  Each test draws problems on
which the variant is false (checked independently of the checker, e.g. by the certified NUC
rank), and requires ``violated``: the checker must tell the false claim from the true one through
the same code path.  Where a variant can only be refuted with a uniqueness certificate, problems
without one are discarded with ``assume`` (then the verdict must still never be ``holds``).
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from landscapes.nuc import solve_nuc
from landscapes.synthetic import gaussian_problem, teacher_problem
from theory.bounds import r_max
from verify.jlr.rank import (
    check_jlr_equiv,
    check_jlr_magnitude,
    check_jlr_rank_blocks,
    check_jlr_rank_ft,
    check_jlr_rank_nuc,
    check_jlr_zero_saddle,
)
from verify.jlr.second_order import check_jlr_gd, check_jlr_no_spurious, check_jlr_spurious_below
from verify.strategies import problems, ranks_above_bound


def _sq(N, mn, lam, blocks=1):
    return problems(K=1, N=N, m=mn, n=mn, blocks=blocks, losses=("squared",), lam=lam, kinds=("gaussian",))


def _teacher(blocks):
    return problems(
        K=1,
        N=(14, 20),
        m=(7, 9),
        n=(7, 9),
        blocks=blocks,
        losses=("squared",),
        lam=(1e-3, 3e-3),
        kinds=("teacher",),
        teacher_rank=3,
    )


# small lam: the NUC minimizer has rank >= 2, so the KN/4 bound (rank <= 1 or 2 here) is false;
# a planted rank-3 teacher keeps the minimizer's singular values well separated from 0
SQ = _sq((8, 12), (5, 8), (1e-4, 1e-3))
TEACH = _teacher(1)
# moderate lam: the minimizer's second singular value is not tiny, so rank 1 is clearly worse
SQ_MID = _sq((12, 20), (8, 12), (0.01, 0.05))
CE = problems(K=2, N=(6, 10), m=(5, 8), n=(5, 8), blocks=1, losses=("cross_entropy",), lam=(1e-3, 1e-2))
MUT = settings(max_examples=6, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])


@MUT
@given(P=TEACH)
def test_nuc_bound_kn_over_4_is_refuted(P):
    """Variant: the NUC minimizer has rank r with r(r+1)/2 <= KN/4."""
    bound = r_max(1, P.KN // 4)
    sol = solve_nuc(P, gap_rtol=1e-12)
    assume(sol.ranks[0] > bound)
    v = check_jlr_rank_nuc(P, rank_bound=bound, solution=sol)
    assert v.status != "holds", v.reason
    c = v.certificate
    if c.get("unique") and max(c.get("certified_min_ranks", [0])) > bound:
        assert v.status == "violated", v.reason  # the certificate resolves it: it must refute
    else:
        assert v.status == "inconclusive", v.reason
    event(v.status)


@settings(max_examples=5, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(P=_teacher((1, 2)))
@example(P=teacher_problem(K=1, N=16, blocks=[(10, 10)], lam=0.002, teacher_rank=3, seed=2, noise=0.0))
def test_block_bound_kn_over_4_is_refuted(P):
    """Variant: every block rank r_j satisfies r_j(r_j+1)/2 <= KN/4.

    Never ``holds`` where it is false.  A refutation needs a certificate that the minimizer is
    unique and that its rank exceeds the bound; where the certificate resolves that, the verdict
    must be ``violated`` (the pinned example is one).  Where the uniqueness or rank certificate is
    too loose (two blocks of this size often; one block sometimes) it must be ``inconclusive``.
    """
    bound = r_max(1, P.KN // 4)
    sol = solve_nuc(P, gap_rtol=1e-12)
    assume(max(sol.ranks) > bound)
    v = check_jlr_rank_blocks(P, rank_bound=bound, solution=sol)
    assert v.status != "holds", v.reason
    c = v.certificate
    if c.get("unique") and max(c.get("certified_min_ranks", [0])) > bound:
        assert v.status == "violated", v.reason
    else:
        assert v.status == "inconclusive", v.reason
    event(f"{len(P.blocks)} block(s): {v.status}")


@MUT
@given(P=_sq((10, 16), (2, 3), (0.01, 0.1)))
def test_ft_rank_one_is_refuted(P):
    """Variant: full fine-tuning has a rank-1 minimizer (false when the unique FT minimizer has rank >= 2)."""
    v = check_jlr_rank_ft(P, rank_bound=1)
    assert v.status != "holds" or max(v.certificate["ranks_before"]) <= 1, v.reason
    assume(v.certificate.get("unique") and max(v.certificate["ranks_before"]) >= 2)
    assert v.status == "violated", v.reason


@MUT
@given(P=SQ_MID)
def test_equiv_at_rank_one_is_refuted(P):
    """Variant: rank-1 LoRA reaches the NUC optimum (false when every NUC minimizer has rank >= 2)."""
    sol = solve_nuc(P, gap_rtol=1e-12)
    sv = torch.linalg.svdvals(sol.D[0])
    assume(sol.ranks[0] >= 2 and float(sv[1]) > 0.05 * float(sv[0]))
    v = check_jlr_equiv(P, rank=1, enforce_hypothesis=False, solution=sol)
    assert v.status == "violated", v.reason


@MUT
@given(P=_sq((6, 12), (4, 8), (0.05, 0.3)))
def test_magnitude_quarter_is_refuted(P):
    """Variant: lam ||D*||_* <= (L(0) - L(D*)) / 4."""
    sol = solve_nuc(P, gap_rtol=1e-12)
    L0, Ls = P.risk(P.zeros()), P.risk(sol.D)
    lam_nuc = P.lam[0] * float(torch.linalg.svdvals(sol.D[0]).sum())
    assume(lam_nuc > 0.25 * (L0 - Ls) + 1e-6)
    v = check_jlr_magnitude(P, factor=0.25, solution=sol)
    assert v.status == "violated", v.reason


@MUT
@given(P=st.one_of(SQ, CE, _teacher(2)))
def test_zero_saddle_with_a_wrong_constant_is_refuted(P):
    """Variant: lambda_min at 0 is lam - 2 ||grad L(0)||_op."""

    def wrong(lams, S):
        return min(lam - 2.0 * float(torch.linalg.matrix_norm(s, ord=2)) for lam, s in zip(lams, S))

    S = P.evaluate(P.zeros()).S
    assume(max(float(torch.linalg.matrix_norm(s, ord=2)) for s in S) > 1e-6)
    v = check_jlr_zero_saddle(P, prediction=wrong)
    assert v.status == "violated", v.reason


@MUT
@given(P=st.one_of(SQ, CE))
def test_every_first_order_point_is_global_is_refuted(P):
    """Variant: every first-order stationary point is global (U = V = 0 is one; it is not global)."""
    S = P.evaluate(P.zeros()).S
    assume(float(torch.linalg.matrix_norm(S[0], ord=2)) > 1.01 * P.lam[0])
    v = check_jlr_no_spurious(
        P, n_starts=2, inits=("zero", "small"), perturbations=("none",), order=1, enforce_hypothesis=False
    )
    assert v.status == "violated", v.reason


@settings(max_examples=4, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), P=SQ)
def test_spurious_points_above_the_bound_are_never_found(data, P):
    """Variant: spurious SOSPs exist above the bound.  An existence claim cannot be refuted by a
    search, so the honest verdict is inconclusive -- never holds (that would be a false positive)."""
    r = data.draw(ranks_above_bound(K=P.K, N=P.N, max_rank=min(P.blocks[0]) + 2))
    v = check_jlr_spurious_below(P, rank=r, n_starts=6, enforce_hypothesis=False)
    assert v.status == "inconclusive", v.reason


def test_gd_at_rank_one_is_refuted():
    """Variant: GD with weight decay at rank 1 reaches the NUC optimum (the optimum has rank 2)."""
    P = gaussian_problem(K=1, N=10, blocks=[(6, 6)], lam=5e-3, loss="squared", seed=0)
    assert solve_nuc(P, gap_rtol=1e-12).ranks == (2,)
    v = check_jlr_gd(
        P, rank=1, optimizers=("gd",), inits=("small",), steps=3000, gap_rtol=1e-8, enforce_hypothesis=False
    )
    assert v.status == "violated", v.reason


@settings(max_examples=2, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(P=_sq(10, 6, 5e-3))
def test_gd_at_rank_one_is_never_confirmed(P):
    """The same variant on random problems: never ``holds``; ``violated`` once GD converges.

    GD's decaying steps converge at rank 1 at a problem-dependent rate: a run that has not
    converged within its budget is ``inconclusive`` by the checker's contract (seen for 1 problem
    in 17 even at 20,000 steps), which is evidence neither way.
    """
    sol = solve_nuc(P, gap_rtol=1e-12)
    assume(sol.ranks[0] >= 2)
    v = check_jlr_gd(
        P, rank=1, optimizers=("gd",), inits=("small",), steps=3000, gap_rtol=1e-8, enforce_hypothesis=False
    )
    event(v.status)
    assert v.status == "violated" or (v.status == "inconclusive" and "not converged" in v.reason), v.reason
