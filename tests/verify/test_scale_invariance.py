"""A rescaled problem gets the same verdicts: tolerances follow the problem's scale.

Scaling ``(J, f0, y)`` by ``s`` and ``lam`` by ``s^2`` multiplies the objective by ``s^2`` and
keeps every minimizer ``D`` (squared loss), so every verdict, rank and relative gap must come out
the same. Floors such as ``max(1, |P|)`` in a relative tolerance break this: at ``s = 1e-30`` the
NUC solver stopped at once and "certified" a rank-2 point as the minimizer of a rank-1 problem
(its gap, 1e-65, was below an absolute floor of 1e-8); at ``s = 1e30`` JLR-rank-FT came out
inconclusive.  The magnitudes stay inside the accepted range (``landscapes.problem.magnitude_bound``).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from landscapes.nuc import solve_nuc
from landscapes.problem import Problem
from landscapes.synthetic import gaussian_problem
from verify.run.audits import audit

CLAIMS = ["JLR-rank-FT", "JLR-rank-NUC", "JLR-equiv", "JLR-magnitude", "JLR-zero-saddle"]
SCALES = [1e-30, 1e-8, 1e8, 1e30]


def _scaled(P: Problem, s: float) -> Problem:
    return Problem(
        P.J.matrix * s, P.f0 * s, P.y * s, loss="squared", blocks=P.blocks, lam=[v * s * s for v in P.lam]
    )


def _summary(P: Problem) -> list[tuple]:
    res = audit(P, claims=CLAIMS, progress=False)
    out = []
    for v in res.verdicts:
        c = v.to_dict()["certificate"]
        out.append((v.claim, v.status, c.get("ranks")))
    return out


@pytest.mark.parametrize("seed", [0, 3])
def test_rescaled_problem_gets_the_same_verdicts_and_ranks(seed):
    P = gaussian_problem(K=1, N=6, blocks=[(5, 4)], lam=0.05, loss="squared", seed=seed)
    ref = _summary(P)
    assert all(status == "holds" for _, status, _ in ref), ref
    for s in SCALES:
        assert _summary(_scaled(P, s)) == ref, s


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    log_s=st.sampled_from([-30, -12, 12, 30]),
    lam=st.sampled_from([0.01, 0.05, 0.2]),
)
def test_nuc_solution_is_scale_equivariant(seed, log_s, lam):
    P = gaussian_problem(K=1, N=5, blocks=[(4, 4)], lam=lam, loss="squared", seed=seed)
    s = 10.0**log_s
    a, b = solve_nuc(P), solve_nuc(_scaled(P, s))
    assert a.certificate.within(1e-8) and b.certificate.within(1e-8)
    assert a.ranks == b.ranks
    assert abs(b.certificate.primal / (s * s) - a.certificate.primal) <= 1e-7 * abs(a.certificate.primal)


def test_relative_scales_in_certificates_follow_the_problem():
    """The scales the checkers divide by are the problem's own: x s^2 when the objective is.

    With a floor such as ``max(1, |P*|)`` JLR-equiv's scale stayed 1 at ``s = 1e-30``, so any
    training end point passed its ``gap_rtol`` test there.
    """
    P = gaussian_problem(K=1, N=6, blocks=[(5, 4)], lam=0.05, loss="squared", seed=0)

    def scales(Q: Problem) -> tuple[float, float]:
        res = audit(Q, claims=["JLR-rank-FT", "JLR-equiv"], progress=False)
        ft, eq = (v.to_dict()["certificate"] for v in res.verdicts)
        return ft["grad_scale"], eq["objective_scale"]

    ref = scales(P)
    for s in (1e-30, 1e30):
        got = scales(_scaled(P, s))
        assert got == pytest.approx(tuple(x * s * s for x in ref), rel=1e-6), s
