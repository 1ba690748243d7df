"""Tests for landscapes.synthetic: determinism, label validity, planted structure, bad arguments.

Oracles: the documented recipes re-implemented here from the same seeded generator (the teacher
D* and the random-features network), autograd Jacobians of that network, least squares, and
rank/structure properties that hold whatever the draw order (Hypothesis over seeds and sizes).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes.losses import LOSS_NAMES
from landscapes.problem import Problem
from landscapes.synthetic import gaussian_problem, random_features_problem, teacher_problem

DT = torch.float64
SEEDS = st.integers(0, 2**32 - 1)


def k_of(loss: str, K: int) -> int:
    return 1 if loss == "logistic" else (max(K, 2) if loss == "cross_entropy" else K)


def gen_kwargs(kind: str, loss: str, seed: int) -> dict:
    K = k_of(loss, 3)
    if kind == "gaussian":
        return {"K": K, "N": 5, "blocks": [(3, 2), (2, 2)], "lam": 0.1, "loss": loss, "seed": seed}
    if kind == "gaussian_lowrank":
        return {
            "K": K,
            "N": 5,
            "blocks": [(3, 2)],
            "lam": 0.1,
            "loss": loss,
            "seed": seed,
            "jacobian_rank": 2,
            "f0_scale": 0.5,
        }
    if kind == "teacher":
        return {
            "K": K,
            "N": 5,
            "blocks": [(3, 4), (2, 2)],
            "lam": 0.1,
            "loss": loss,
            "seed": seed,
            "teacher_rank": 2,
        }
    return {"K": K, "N": 5, "m": 3, "n": 4, "lam": 0.1, "loss": loss, "seed": seed, "tokens": 2}


GENERATORS = {
    "gaussian": gaussian_problem,
    "gaussian_lowrank": gaussian_problem,
    "teacher": teacher_problem,
    "features": random_features_problem,
}
KINDS = list(GENERATORS)


def make(kind: str, loss: str, seed: int, **over) -> Problem:
    return GENERATORS[kind](**{**gen_kwargs(kind, loss, seed), **over})


def dense(P: Problem) -> torch.Tensor:
    return P.J.matrix  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Re-implementations of the documented recipes (same generator, same draw order)
# ---------------------------------------------------------------------------------------------


def teacher_recipe(K, N, blocks, teacher_rank, seed):
    gen = torch.Generator().manual_seed(seed)
    p = sum(m * n for m, n in blocks)
    s = max((m + n) / 2 for m, n in blocks)
    J = torch.randn(K * N, p, generator=gen, dtype=DT) / math.sqrt(s)
    Ds = []
    for m, n in blocks:
        k = min(teacher_rank, m, n)
        A = torch.randn(m, k, generator=gen, dtype=DT)
        B = torch.randn(n, k, generator=gen, dtype=DT)
        D = A @ B.T
        Ds.append(3.0 * D / torch.linalg.matrix_norm(D))
    return J, tuple(Ds)


def features_recipe(K, N, m, n, tokens, seed):
    """Inputs, weights and head of f(X; W) = C mean_t tanh(W x_t) (docstring of the generator)."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(n, n, generator=gen, dtype=DT) / math.sqrt(n)
    X = torch.randn(N, tokens, n, generator=gen, dtype=DT) @ (torch.eye(n, dtype=DT) + mix)
    W0 = torch.randn(m, n, generator=gen, dtype=DT) / math.sqrt(n)
    C = torch.randn(K, m, generator=gen, dtype=DT) / math.sqrt(m)
    a = torch.randn(m, generator=gen, dtype=DT)
    b = torch.randn(n, generator=gen, dtype=DT)
    Dstar = 3.0 * torch.outer(a, b) / (a.norm() * b.norm())
    return X, W0, C, Dstar


def network(X, W, C):
    """f(X_i; W) = C (1/T) sum_t tanh(W x_it), for all examples: shape (N, K)."""
    return torch.tanh(X @ W.T).mean(dim=1) @ C.T


# ---------------------------------------------------------------------------------------------
# Determinism and validity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_for_a_seed_and_different_for_another(kind, loss):
    a, b, c = make(kind, loss, 11), make(kind, loss, 11), make(kind, loss, 12)
    for P, Q in ((a, b),):
        assert torch.equal(dense(P), dense(Q))
        assert torch.equal(P.f0, Q.f0)
        assert torch.equal(P.y, Q.y)
        assert P.fingerprint() == Q.fingerprint()
    assert not torch.equal(dense(a), dense(c))
    assert a.fingerprint()["sha256"] != c.fingerprint()["sha256"]
    assert a.seed == 11 and c.seed == 12


@given(kind=st.sampled_from(KINDS), loss=st.sampled_from(LOSS_NAMES), seed=SEEDS)
def test_shapes_and_labels_valid(kind, loss, seed):
    P = make(kind, loss, seed)
    kw = gen_kwargs(kind, loss, seed)
    K, N = kw["K"], kw["N"]
    blocks = [(kw["m"], kw["n"])] if kind == "features" else kw["blocks"]
    p = sum(m * n for m, n in blocks)
    assert isinstance(P, Problem)
    assert (P.N, P.K) == (N, K)
    assert dense(P).shape == (K * N, p)
    assert P.blocks == tuple(blocks)
    assert P.dtype == DT and P.f0.dtype == DT
    assert P.loss.name == loss
    assert P.seed == seed
    assert P.lam == tuple(0.1 for _ in blocks)
    assert bool(torch.isfinite(dense(P)).all()) and bool(torch.isfinite(P.f0).all())
    if loss == "squared":
        assert P.y.shape == (N, K) and P.y.dtype == DT
        assert bool(torch.isfinite(P.y).all())
    else:
        assert P.y.shape == (N,)
        assert not P.y.dtype.is_floating_point
        assert int(P.y.min()) >= 0 and int(P.y.max()) <= (1 if loss == "logistic" else K - 1)
    assert (
        P.meta["generator"]
        == {
            "gaussian": "gaussian_problem",
            "gaussian_lowrank": "gaussian_problem",
            "teacher": "teacher_problem",
            "features": "random_features_problem",
        }[kind]
    )


def test_dtype_float32():
    P = gaussian_problem(K=2, N=3, blocks=[(2, 2)], lam=0.0, dtype=torch.float32)
    assert P.dtype == torch.float32 and P.y.dtype == torch.float32
    Q = teacher_problem(K=2, N=3, blocks=[(2, 2)], lam=0.0, loss="cross_entropy", dtype=torch.float32)
    assert Q.dtype == torch.float32 and not Q.y.dtype.is_floating_point


def test_single_block_tuple_is_accepted():
    P = gaussian_problem(K=1, N=3, blocks=(2, 3), lam=0.0)
    assert P.blocks == ((2, 3),)


# ---------------------------------------------------------------------------------------------
# gaussian_problem
# ---------------------------------------------------------------------------------------------


@given(seed=SEEDS, f0_scale=st.sampled_from([0.0, 0.5, 2.0]), noise=st.sampled_from([0.0, 1.0, 3.0]))
def test_gaussian_recipe(seed, f0_scale, noise):
    K, N, blocks = 2, 4, [(3, 2), (1, 5)]
    P = gaussian_problem(K=K, N=N, blocks=blocks, lam=0.0, seed=seed, f0_scale=f0_scale, noise=noise)
    gen = torch.Generator().manual_seed(seed)
    s = max((m + n) / 2 for m, n in blocks)  # = 3
    J = torch.randn(K * N, 11, generator=gen, dtype=DT) / math.sqrt(s)
    f0 = f0_scale * torch.randn(N, K, generator=gen, dtype=DT)
    y = noise * torch.randn(N, K, generator=gen, dtype=DT)
    torch.testing.assert_close(dense(P), J, rtol=0, atol=0)
    torch.testing.assert_close(P.f0, f0, rtol=0, atol=0)
    torch.testing.assert_close(P.y, y, rtol=0, atol=0)


def test_gaussian_entry_variance():
    """Entries are N(0, 1/s) with s = max_j (m_j + n_j)/2 (statistical, fixed seed, ~6 sigma)."""
    blocks = [(10, 30), (4, 4)]
    P = gaussian_problem(K=2, N=20, blocks=blocks, lam=0.0, seed=123)
    J = dense(P)
    s = 20.0
    M = J.numel()  # 40 * 316 entries
    assert abs(float((J**2).mean()) * s - 1.0) < 6 * math.sqrt(2.0 / M)
    assert abs(float(J.mean())) * math.sqrt(s) < 6 / math.sqrt(M)


@pytest.mark.parametrize(("loss", "K"), [("logistic", 1), ("cross_entropy", 2), ("cross_entropy", 4)])
def test_gaussian_classification_labels_uniform(loss, K):
    N = 4000
    P = gaussian_problem(K=K, N=N, blocks=[(1, 1)], lam=0.0, loss=loss, seed=7)
    freq = torch.bincount(P.y, minlength=max(K, 2)).to(DT) / N
    assert freq.numel() == max(K, 2)
    q = 1.0 / max(K, 2)
    assert float((freq - q).abs().max()) < 6 * math.sqrt(q * (1 - q) / N)


@given(
    seed=SEEDS,
    N=st.integers(2, 6),
    K=st.integers(1, 3),
    rho=st.integers(1, 8),
    dims=st.tuples(st.integers(1, 4), st.integers(1, 4)),
)
def test_gaussian_jacobian_rank(seed, N, K, rho, dims):
    blocks = [dims, (2, 2)]
    p = dims[0] * dims[1] + 4
    P = gaussian_problem(K=K, N=N, blocks=blocks, lam=0.0, seed=seed, jacobian_rank=rho)
    J = dense(P)
    G = J @ J.T
    expected = min(rho, K * N, p)
    assert int(torch.linalg.matrix_rank(G, hermitian=True)) == expected
    assert int(torch.linalg.matrix_rank(J)) == expected
    if rho <= K * N:
        # J = A B / sqrt(rho): B the first rho rows of the plain Gaussian Jacobian
        gen = torch.Generator().manual_seed(seed)
        s = max((m + n) / 2 for m, n in blocks)
        J0 = torch.randn(K * N, p, generator=gen, dtype=DT) / math.sqrt(s)
        A = torch.randn(K * N, rho, generator=gen, dtype=DT)
        torch.testing.assert_close(J, A @ J0[:rho] / math.sqrt(rho), rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# teacher_problem
# ---------------------------------------------------------------------------------------------


@given(
    seed=SEEDS,
    N=st.integers(1, 6),
    K=st.integers(1, 3),
    r=st.integers(1, 4),
    dims=st.tuples(st.integers(1, 4), st.integers(1, 4)),
)
def test_teacher_squared_noiseless_is_fit_exactly(seed, N, K, r, dims):
    blocks = [dims, (3, 2)]
    P = teacher_problem(K=K, N=N, blocks=blocks, lam=0.0, teacher_rank=r, seed=seed, noise=0.0)
    J, Ds = teacher_recipe(K, N, blocks, r, seed)
    torch.testing.assert_close(dense(P), J, rtol=0, atol=0)
    assert float(P.f0.abs().max()) == 0.0
    # the planted teacher: rank min(r, m, n), and it fits the labels exactly
    for (m, n), D in zip(blocks, Ds, strict=True):
        assert int(torch.linalg.matrix_rank(D)) == min(r, m, n)
    assert P.risk(Ds) <= 1e-28
    torch.testing.assert_close(P.predictions(Ds), P.y, rtol=1e-13, atol=1e-14)
    # recipe-independent check: the min-norm least-squares FT solution reaches risk ~ 0
    x = torch.linalg.lstsq(J, P.y.reshape(-1, 1), driver="gelsd").solution[:, 0]
    assert P.risk(P.unvec(x)) <= 1e-20


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_teacher_squared_noise_gives_positive_residual(seed):
    """Overdetermined (K N > p): with noise > 0 least squares cannot reach zero risk."""
    P = teacher_problem(K=2, N=10, blocks=[(2, 2)], lam=0.0, seed=seed, noise=0.5)
    J = dense(P)
    x = torch.linalg.lstsq(J, P.y.reshape(-1, 1)).solution[:, 0]
    assert P.risk(P.unvec(x)) > 1e-3
    _, Ds = teacher_recipe(2, 10, [(2, 2)], 1, seed)
    assert P.risk(Ds) > 1e-3


@given(seed=SEEDS, N=st.integers(1, 8), K=st.integers(2, 4), r=st.integers(1, 3))
def test_teacher_classification_labels_noiseless(seed, N, K, r):
    blocks = [(3, 3)]
    _, Ds = teacher_recipe(K, N, blocks, r, seed)
    P = teacher_problem(
        K=K, N=N, blocks=blocks, lam=0.0, teacher_rank=r, seed=seed, noise=0.0, loss="cross_entropy"
    )
    z = P.predictions(Ds)
    assert torch.equal(P.y, z.argmax(dim=1))
    _, Ds1 = teacher_recipe(1, N, blocks, r, seed)
    Q = teacher_problem(
        K=1, N=N, blocks=blocks, lam=0.0, teacher_rank=r, seed=seed, noise=0.0, loss="logistic"
    )
    assert torch.equal(Q.y, (Q.predictions(Ds1)[:, 0] > 0).long())


def test_teacher_meta_keeps_teacher():
    P = teacher_problem(K=2, N=5, blocks=[(3, 4)], lam=0.1, teacher_rank=2, seed=4, noise=0.0)
    assert "teacher" in P.meta
    D = (P.meta["teacher"][0],)
    assert P.risk(D) <= 1e-28


# ---------------------------------------------------------------------------------------------
# random_features_problem
# ---------------------------------------------------------------------------------------------


@given(
    seed=SEEDS,
    N=st.integers(1, 4),
    K=st.integers(1, 3),
    m=st.integers(1, 4),
    n=st.integers(1, 4),
    tokens=st.integers(1, 4),
    loss=st.sampled_from(LOSS_NAMES),
)
def test_features_jacobian_is_autograd_jacobian(seed, N, K, m, n, tokens, loss):
    K = k_of(loss, K)
    P = random_features_problem(K=K, N=N, m=m, n=n, lam=0.0, tokens=tokens, loss=loss, seed=seed)
    X, W0, C, Dstar = features_recipe(K, N, m, n, tokens, seed)
    torch.testing.assert_close(P.f0, network(X, W0, C), rtol=1e-13, atol=1e-14)
    Jac = torch.func.jacrev(lambda W: network(X, W, C))(W0)  # (N, K, m, n)
    torch.testing.assert_close(dense(P), Jac.reshape(K * N, m * n), rtol=1e-12, atol=1e-14)
    # labels from the linearized rank-one teacher W0 + D*
    z = P.predictions((Dstar,))
    if loss == "cross_entropy":
        assert torch.equal(P.y, z.argmax(dim=1))
    elif loss == "logistic":
        assert torch.equal(P.y, (z[:, 0] > 0).long())
    else:
        assert float((P.y - z).abs().max()) < 1.0  # z + 0.1 * N(0, 1)
        assert float((P.y - z).abs().max()) > 0.0


@given(
    seed=SEEDS,
    N=st.integers(1, 4),
    K=st.integers(1, 3),
    m=st.integers(2, 6),
    n=st.integers(2, 6),
    tokens=st.integers(1, 5),
)
def test_features_rows_have_rank_at_most_tokens(seed, N, K, m, n, tokens):
    """Recipe-independent: each row of J, as an m x n matrix, is a sum of T rank-one terms."""
    P = random_features_problem(K=K, N=N, m=m, n=n, lam=0.0, tokens=tokens, loss="squared", seed=seed)
    rows = dense(P).reshape(K * N, m, n)
    ranks = torch.linalg.matrix_rank(rows)
    assert int(ranks.max()) <= tokens
    assert int(ranks.min()) == min(tokens, m, n)  # generic: exactly min(T, m, n)


def test_features_meta_records_tokens():
    P = random_features_problem(K=2, N=3, m=2, n=3, lam=0.0, tokens=3)
    assert P.meta == {"generator": "random_features_problem", "tokens": 3}
    assert P.loss.name == "cross_entropy"


# ---------------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------------

G0 = {"K": 2, "N": 3, "blocks": [(2, 2)], "lam": 0.1}
F0 = {"K": 2, "N": 3, "m": 2, "n": 2, "lam": 0.1}

BAD = [
    ("gaussian-K0", gaussian_problem, {**G0, "K": 0}, r"K: expected a positive int, got 0"),
    ("gaussian-K-neg", gaussian_problem, {**G0, "K": -1}, r"K: expected a positive int, got -1"),
    (
        "gaussian-K-bool",
        gaussian_problem,
        {**G0, "K": True},
        r"K: expected a positive int, got True",
    ),
    (
        "gaussian-K-float",
        gaussian_problem,
        {**G0, "K": 2.0},
        r"K: expected a positive int, got 2\.0",
    ),
    ("gaussian-N0", gaussian_problem, {**G0, "N": 0}, r"N: expected a positive int, got 0"),
    (
        "gaussian-blocks-m0",
        gaussian_problem,
        {**G0, "blocks": [(0, 2)]},
        r"blocks\[0\]: expected a pair of positive ints \(m, n\), got \(0, 2\)",
    ),
    (
        "gaussian-blocks-n0-second",
        gaussian_problem,
        {**G0, "blocks": [(2, 2), (3, 0)]},
        r"blocks\[1\]: expected a pair of positive ints \(m, n\), got \(3, 0\)",
    ),
    (
        "gaussian-blocks-tuple-0",
        gaussian_problem,
        {**G0, "blocks": (2, 0)},
        r"blocks\[0\]: expected a pair of positive ints \(m, n\), got \(2, 0\)",
    ),
    (
        "gaussian-blocks-empty",
        gaussian_problem,
        {**G0, "blocks": []},
        r"blocks: expected at least one \(m, n\) shape, got none",
    ),
    (
        "gaussian-jacobian_rank-0",
        gaussian_problem,
        {**G0, "jacobian_rank": 0},
        r"jacobian_rank: expected None or a positive int, got 0",
    ),
    (
        "gaussian-jacobian_rank-neg",
        gaussian_problem,
        {**G0, "jacobian_rank": -2},
        r"jacobian_rank: expected None or a positive int, got -2",
    ),
    (
        "gaussian-jacobian_rank-float",
        gaussian_problem,
        {**G0, "jacobian_rank": 1.5},
        r"jacobian_rank: expected None or a positive int, got 1\.5",
    ),
    (
        "gaussian-lam-neg",
        gaussian_problem,
        {**G0, "lam": -1.0},
        r"lam: expected finite values >= 0, got -1\.0",
    ),
    (
        "gaussian-loss",
        gaussian_problem,
        {**G0, "loss": "hinge"},
        r"loss: expected one of .*got 'hinge'",
    ),
    (
        "gaussian-logistic-K2",
        gaussian_problem,
        {**G0, "loss": "logistic"},
        r"K: the logistic loss needs K = 1 output, got K = 2",
    ),
    (
        "teacher-rank0",
        teacher_problem,
        {**G0, "teacher_rank": 0},
        r"teacher_rank: expected a positive int, got 0",
    ),
    (
        "teacher-rank-neg",
        teacher_problem,
        {**G0, "teacher_rank": -3},
        r"teacher_rank: expected a positive int, got -3",
    ),
    (
        "teacher-rank-bool",
        teacher_problem,
        {**G0, "teacher_rank": True},
        r"teacher_rank: expected a positive int, got True",
    ),
    ("teacher-K0", teacher_problem, {**G0, "K": 0}, r"K: expected a positive int, got 0"),
    ("teacher-N0", teacher_problem, {**G0, "N": 0}, r"N: expected a positive int, got 0"),
    (
        "teacher-blocks-0",
        teacher_problem,
        {**G0, "blocks": [(2, 2), (0, 1)]},
        r"blocks\[1\]: expected a pair of positive ints \(m, n\), got \(0, 1\)",
    ),
    (
        "features-tokens0",
        random_features_problem,
        {**F0, "tokens": 0},
        r"tokens: expected a positive int, got 0",
    ),
    (
        "features-tokens-float",
        random_features_problem,
        {**F0, "tokens": 2.5},
        r"tokens: expected a positive int, got 2\.5",
    ),
    ("features-K0", random_features_problem, {**F0, "K": 0}, r"K: expected a positive int, got 0"),
    ("features-N0", random_features_problem, {**F0, "N": 0}, r"N: expected a positive int, got 0"),
    (
        "features-m0",
        random_features_problem,
        {**F0, "m": 0},
        r"blocks\[0\]: expected a pair of positive ints \(m, n\), got \(0, 2\)",
    ),
    (
        "features-n0",
        random_features_problem,
        {**F0, "n": 0},
        r"blocks\[0\]: expected a pair of positive ints \(m, n\), got \(2, 0\)",
    ),
    (
        "features-ce-K1",
        random_features_problem,
        {**F0, "K": 1},
        r"K: cross_entropy needs K >= 2 outputs, got K = 1",
    ),
]


@pytest.mark.parametrize(("fn", "kwargs", "match"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_arguments(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)
