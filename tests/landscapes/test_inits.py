"""LoRA initializations: closed forms, the first-step identity, the offset, and bad input."""

import math

import pytest
import scipy.stats
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes import gaussian_problem
from landscapes.inits import (
    DIRECTIONS,
    direction_indices,
    first_step_change,
    full_gradient,
    gradient_svd,
    init_lora,
    lora_scale,
    sampled_gradient,
    shifted_problem,
    synthetic_weights,
)
from landscapes.problem import Problem


def _problem(seed=0, blocks=((12, 10),), K=2, N=8, loss="cross_entropy"):
    return gaussian_problem(K=K, N=N, blocks=list(blocks), lam=0.01, loss=loss, seed=seed)


def _best(G, k):
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    return (U[:, :k] * s[:k]) @ Vh[:k]


def _rel(a, b):
    return float((a - b).norm() / b.norm())


# ---- closed forms ------------------------------------------------------------------------------


def test_scale_is_alpha_over_r_or_sqrt_r():
    assert lora_scale(16, 8) == 2.0
    assert lora_scale(16, 4, rslora=True) == 8.0


def test_vanilla_is_zero_b_and_kaiming_uniform_a():
    p = _problem(blocks=((40, 300),))
    ini = init_lora(p, "vanilla", rank=4, seed=3)
    assert not bool(ini.B[0].any()) and not bool(ini.offset[0].any())
    a = ini.A[0]
    bound = 1 / math.sqrt(300)
    assert float(a.abs().max()) <= bound
    # Kaiming-uniform with a = sqrt(5) on (r, n): U(-1/sqrt(n), 1/sqrt(n))
    assert scipy.stats.kstest(a.flatten().numpy(), "uniform", args=(-bound, 2 * bound)).pvalue > 1e-3
    again = init_lora(p, "vanilla", rank=4, seed=3)
    other = init_lora(p, "vanilla", rank=4, seed=4)
    assert torch.equal(again.A[0], a) and not torch.equal(other.A[0], a)


def test_gaussian_init_has_std_one_over_r():
    p = _problem(blocks=((40, 400),))
    ini = init_lora(p, "gaussian", rank=5, seed=0)
    assert not bool(ini.B[0].any())
    assert abs(float(ini.A[0].std()) - 1 / 5) < 0.01


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_loraga_reference_factors_are_scaled_singular_vectors(direction):
    p = _problem(blocks=((12, 10), (9, 14)))
    r = 2
    ini = init_lora(p, "loraga", rank=r, direction=direction, gamma=16, seed=1)
    ia, ib = ini.details["indices_A"], ini.details["indices_B"]
    assert sorted(ia + ib) == list(range(2 * r))
    for (m, _), G, a, b, o in zip(p.blocks, full_gradient(p), ini.A, ini.B, ini.offset):
        U, s, Vh = torch.linalg.svd(G, full_matrices=False)
        c = m**0.25 / 4.0
        # sign-free comparisons: the projectors onto the chosen singular vectors
        assert torch.allclose(a.T @ a, c * c * Vh[ia].T @ Vh[ia], atol=1e-12)
        assert torch.allclose(b @ b.T, c * c * U[:, ib] @ U[:, ib].T, atol=1e-12)
        assert torch.allclose(o, ini.scale * b @ a, atol=0)
    assert all(float(d.abs().max()) == 0.0 for d in ini.delta())  # unchanged at step 0, bit for bit


def test_pissa_offset_is_the_best_rank_r_part_of_w0():
    p = _problem(blocks=((12, 10),))
    W = synthetic_weights(p, seed=2)
    ini = init_lora(p, "pissa", rank=3, weights=W, alpha=6.0)
    assert _rel(ini.offset[0], _best(W[0], 3)) < 1e-13
    assert torch.allclose(ini.B[0].T @ ini.B[0], ini.A[0] @ ini.A[0].T, atol=1e-12)  # balanced


# ---- the first-step identity (Hypothesis over random G and r) ------------------------------------


@given(seed=st.integers(0, 2**31 - 1), r=st.integers(1, 4), m=st.integers(8, 16), n=st.integers(8, 16))
def test_first_step_of_reference_init_is_best_rank_2r_gradient(seed, r, m, n):
    p = _problem(seed=seed, blocks=((m, n),), K=2, N=6)
    G = full_gradient(p)
    lr = 1e-3
    for d in DIRECTIONS:
        ini = init_lora(p, "loraga", rank=r, direction=d, seed=seed)
        first, second, stepped = first_step_change(ini, G, lr)
        zeta = ini.scale**2 * ini.details["stable_scale"][0] ** 2
        assert _rel(first[0], -lr * zeta * _best(G[0], 2 * r)) < 1e-12
        assert _rel(stepped[0], first[0] + second[0]) < 1e-10


@given(seed=st.integers(0, 2**31 - 1), r=st.integers(1, 3))
def test_peft_variant_breaks_the_identity(seed, r):
    p = _problem(seed=seed, blocks=((14, 12),), K=2, N=6)
    G = full_gradient(p)
    ini = init_lora(p, "loraga-peft", rank=r, seed=seed)
    first, _, _ = first_step_change(ini, G, 1e-3)
    ref = _best(G[0], 2 * r)
    t = float((first[0] * ref).sum() / (ref * ref).sum())
    # even at its best scale, the PEFT first step is not proportional to G_[2r]
    assert float((first[0] - t * ref).norm()) > 1e-3 * abs(t) * float(ref.norm())


def test_randomized_svd_matches_full_on_a_low_rank_gradient():
    g = torch.Generator().manual_seed(0)
    G = torch.randn(30, 6, generator=g, dtype=torch.float64) @ torch.randn(
        6, 25, generator=g, dtype=torch.float64
    )
    U1, s1, V1 = gradient_svd(G, 4, svd="full")
    U2, s2, V2 = gradient_svd(G, 4, svd="randomized", generator=torch.Generator().manual_seed(1))
    assert torch.allclose(s1, s2, rtol=1e-10)
    assert torch.allclose(U1 @ U1.T, U2 @ U2.T, atol=1e-9)
    state = torch.get_rng_state()
    gradient_svd(G, 4, svd="randomized", generator=torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.get_rng_state())  # the global generator is left alone


def test_sampled_gradient_is_the_mean_over_the_examples_it_uses():
    p = _problem(N=10)
    full = full_gradient(p)[0]
    # 64 batches of 2 cover N = 10 (each example once): the full gradient, summed in another order
    S = sampled_gradient(p, batch_size=2, batches=64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(S[0], full)
    S3 = sampled_gradient(p, batch_size=3, batches=3, generator=torch.Generator().manual_seed(0))
    # 9 of the 10 examples, batches of 3: the mean risk over them
    idx9 = torch.randperm(10, generator=torch.Generator().manual_seed(0))[:9]
    assert torch.allclose(S3[0], p.subset(idx9).evaluate(p.zeros()).S[0], atol=1e-15)
    # 2 batches of 3: the gradient of the mean risk over the 6 examples of the seeded permutation
    part = sampled_gradient(p, batch_size=3, batches=2, generator=torch.Generator().manual_seed(5))
    idx = torch.randperm(10, generator=torch.Generator().manual_seed(5))[:6]
    assert torch.allclose(part[0], p.subset(idx).evaluate(p.zeros()).S[0], atol=1e-15)
    assert not torch.allclose(part[0], full)


def test_shifted_problem_keeps_outputs_at_the_init_point():
    p = _problem(blocks=((12, 10), (10, 12)))
    ini = init_lora(p, "loraga", rank=2)
    sp = shifted_problem(p, ini.offset)
    pt = ini.point()
    z = sp.predictions(tuple(u @ v.T for u, v in zip(pt.U, pt.V)))
    assert float((z - p.f0).abs().max()) < 1e-14
    assert shifted_problem(p, p.zeros()) is p


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="lora-ga"), "name: expected one of"),
        (dict(name="loraga", rank=0), "rank: expected a positive int"),
        (dict(name="loraga", rank=6), r"rank: LoRA-GA needs 2 r <= min\(m, n\) = 10"),
        (dict(name="vanilla", rank=11), r"rank: expected r <= min\(m, n\) = 10"),
        (dict(name="pissa"), "weights: expected 1 matrices"),
        (dict(name="loraga", gamma=0), "gamma: expected a positive finite number"),
        (dict(name="loraga", gamma=math.inf), "gamma: expected a positive finite number"),
        (dict(name="loraga", niter=-1), "niter: expected an int >= 0"),
        (dict(name="loraga", alpha=-1.0), "alpha: expected a positive finite number"),
        (dict(name="loraga", direction="BrA2r"), "direction: expected one of"),
        (dict(name="loraga", gradient=[torch.zeros(3, 3)]), r"gradient\[0\]: expected shape \(12, 10\)"),
        (dict(name="pissa", weights=[torch.full((12, 10), math.nan)]), r"weights\[0\]: expected finite"),
        (dict(name="loraga", svd="qr"), "svd: expected 'full' or 'randomized'"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    p = _problem()
    args = dict(rank=2) | kwargs
    with pytest.raises(ValueError, match=match):
        init_lora(p, **args)


def test_bad_offset_and_batches():
    p = _problem()
    with pytest.raises(ValueError, match="offset: expected 1 matrices"):
        shifted_problem(p, [])
    with pytest.raises(ValueError, match="batch_size: expected at most N = 8"):
        sampled_gradient(p, batch_size=9, generator=torch.Generator())
    with pytest.raises(ValueError, match="direction: expected one of"):
        direction_indices("ArBr2", 2)
    assert isinstance(shifted_problem(p, init_lora(p, "loraga", rank=2).offset), Problem)
