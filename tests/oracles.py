"""Reference solutions shared by several test modules (independent of the code under test)."""

from __future__ import annotations

import numpy as np
import pytest

from landscapes import Problem


def cvxpy_nuc_objective(P: Problem, solver: str = "CLARABEL") -> float:
    r"""Optimal value of :math:`\min_D L(D) + \lambda\|D\|_*` for a one-block dense problem, by cvxpy."""
    cp = pytest.importorskip("cvxpy")
    ((m, n),) = P.blocks
    D = cp.Variable((m, n))
    J = P.J.matrix.numpy()
    z = P.f0.numpy().reshape(-1) + J @ cp.vec(D, order="C")
    N, K = P.N, P.K
    if P.loss.name == "squared":
        risk = 0.5 * cp.sum_squares(z - P.y.numpy().reshape(-1)) / N
    elif P.loss.name == "logistic":
        y = P.y.numpy().astype(float)
        risk = cp.sum(cp.logistic(z) - cp.multiply(y, z)) / N
    else:
        Z = cp.reshape(z, (N, K), order="C")
        pick = np.zeros((N, K))
        pick[np.arange(N), P.y.numpy()] = 1.0
        risk = (cp.sum(cp.log_sum_exp(Z, axis=1)) - cp.sum(cp.multiply(pick, Z))) / N
    prob = cp.Problem(cp.Minimize(risk + P.lam[0] * cp.normNuc(D)))
    prob.solve(solver=solver)
    return float(prob.value)
