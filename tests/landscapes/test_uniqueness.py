"""NUC uniqueness certificates when the computed duality gap sits at round-off."""

import pytest
import torch

from landscapes import gaussian_problem, solve_nuc
from landscapes.nuc import truncate_to_numerical_rank
from landscapes.uniqueness import nuc_uniqueness, roundoff_gap


@pytest.mark.parametrize("gap", [0.0, -1e-17])
def test_a_gap_at_round_off_does_not_shrink_the_face(gap):
    # A tight solve's computed gap can be zero or negative at round-off.  Taken as exactly zero,
    # the face kept only singular values >= lam to the last bit: rank 3 for a rank-4 minimizer,
    # with a rank error of 0, i.e. "certified" ranks that were too small.
    P = gaussian_problem(K=1, N=20, blocks=[(12, 10)], lam=0.05, seed=0)
    D = truncate_to_numerical_rank(solve_nuc(P, gap_rtol=1e-13).D, 1e-8)
    rank = int(torch.linalg.matrix_rank(D[0]))
    assert rank == 4
    u = nuc_uniqueness(P, D, P.evaluate(D).S, gap=gap)
    assert u.face_dims[0] >= rank and u.rank_error > 0
    assert u.rank_error == nuc_uniqueness(P, D, P.evaluate(D).S, gap=roundoff_gap(P, D, gap)).rank_error
