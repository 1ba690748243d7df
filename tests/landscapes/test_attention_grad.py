"""Exact LoRA gradients of one attention head ([HSK24]) against autograd, both adapter cases."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes.attention import CASES, AttentionLoRA, attention_output, exact_gradients


def _head(case: str, L: int, d: int, r: int, seed: int, beta: float = 0.5) -> AttentionLoRA:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64) / d**0.5

    W = {k: rnd(d, d) for k in "QKV"}
    A = {k: rnd(r, d) for k in CASES[case]}
    B = {k: rnd(d, r) for k in CASES[case]}
    return AttentionLoRA(rnd(L, d) * d**0.5, rnd(L, d), W, A, B, scale=2.0 / r, beta=beta)


@given(seed=st.integers(0, 2**31 - 1), case=st.sampled_from(sorted(CASES)), L=st.integers(1, 12))
def test_exact_gradients_equal_autograd(seed, case, L):
    h = _head(case, L=L, d=4, r=2, seed=seed)
    loss, gA, gB = exact_gradients(h)
    A = {k: a.clone().requires_grad_(True) for k, a in h.A.items()}
    B = {k: b.clone().requires_grad_(True) for k, b in h.B.items()}
    h2 = AttentionLoRA(h.X, h.Y, h.W, A, B, scale=h.scale, beta=h.beta)
    Z = attention_output(h2)
    ref = 0.5 * ((Z - h.Y) ** 2).sum()
    grads = torch.autograd.grad(ref, [*A.values(), *B.values()])
    assert loss == pytest.approx(float(ref.detach()), rel=1e-13)
    for k, g in zip(A, grads[: len(A)]):
        assert torch.allclose(gA[k], g, rtol=1e-10, atol=1e-12), k
    for k, g in zip(B, grads[len(A) :]):
        assert torch.allclose(gB[k], g, rtol=1e-10, atol=1e-12), k


def test_the_printed_b_gradient_has_the_wrong_shape():
    # [HSK24] prints dL/dB_Q = C1^T p A_Q C2: with C1 = X (L x d), p (L x L), A_Q (r x d) and
    # C2 = X W_K (L x d), the product p A_Q is undefined unless L = r: a dimension mismatch in the
    # formula (a typo). The derived one is C1^T p C2 A_Q^T (d x r), which is what
    # exact_gradients computes (and test_exact_gradients_equal_autograd checks).
    h = _head("C1", L=6, d=4, r=2, seed=0)
    p = torch.ones(6, 6, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        h.X.T @ p @ h.A["Q"] @ (h.X @ h.W["K"])
    _, _, gB = exact_gradients(h)
    assert gB["Q"].shape == (4, 2)


def test_bad_input():
    h = _head("C2", L=5, d=4, r=2, seed=1)
    with pytest.raises(ValueError, match="Y: expected shape"):
        AttentionLoRA(h.X, h.Y[:3], h.W, h.A, h.B)
    with pytest.raises(ValueError, match="W: expected the keys"):
        AttentionLoRA(h.X, h.Y, {"Q": h.W["Q"]}, h.A, h.B)
    with pytest.raises(ValueError, match=r"A\['Q'\], B\['Q'\]"):
        AttentionLoRA(h.X, h.Y, h.W, dict(h.A, Q=h.A["Q"].T), h.B)
    with pytest.raises(ValueError, match="beta"):
        AttentionLoRA(h.X, h.Y, h.W, h.A, h.B, beta=float("nan"))
