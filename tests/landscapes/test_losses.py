"""Tests for landscapes.losses: values, gradients, HVPs, conjugates, curvature bounds, validation.

Oracles: closed forms (values at 0, conjugates on the simplex), autograd (``torch.func.grad``,
``torch.func.jvp``, dense Hessians) and independent reference losses from
``torch.nn.functional``; Hypothesis draws seeds and sizes, tensors come from a seeded generator.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from landscapes.losses import (
    LOSS_NAMES,
    CrossEntropyLoss,
    LogisticLoss,
    Loss,
    SquaredLoss,
    get_loss,
)

DT = torch.float64
SEEDS = st.integers(0, 2**32 - 1)
# |z| stays below torch's softplus threshold (20):
# see test_logistic_value_accurate_for_large_margins.
Z_CLAMP = 15.0


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def k_for(name: str, K: int) -> int:
    return 1 if name == "logistic" else (max(K, 2) if name == "cross_entropy" else K)


def make_labels(name: str, N: int, K: int, g: torch.Generator) -> torch.Tensor:
    if name == "squared":
        return torch.randn(N, K, generator=g, dtype=DT)
    if name == "logistic":
        return torch.randint(0, 2, (N,), generator=g)
    return torch.randint(0, K, (N,), generator=g)


def make_case(name: str, N: int, K: int, seed: int, scale: float):
    """Return (loss, z, y, v) for a random problem; K is adjusted to the loss."""
    K = k_for(name, K)
    g = torch.Generator().manual_seed(seed)
    z = (scale * torch.randn(N, K, generator=g, dtype=DT)).clamp(-Z_CLAMP, Z_CLAMP)
    y = make_labels(name, N, K, g)
    v = torch.randn(N, K, generator=g, dtype=DT)
    return get_loss(name), z, y, v


def reference_value(name: str, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Independent per-example implementations (torch.nn.functional)."""
    if name == "squared":
        return 0.5 * ((z - y) ** 2).sum(dim=1)
    if name == "logistic":
        return F.binary_cross_entropy_with_logits(z[:, 0], y.to(z.dtype), reduction="none")
    return F.cross_entropy(z, y, reduction="none")


def random_simplex(N: int, K: int, g: torch.Generator) -> torch.Tensor:
    """Uniform (Dirichlet(1)) points of the probability simplex, shape (N, K)."""
    e = -torch.log(torch.rand(N, K, generator=g, dtype=DT).clamp_min(1e-300))
    return e / e.sum(dim=1, keepdim=True)


def feasible_s(name: str, y: torch.Tensor, N: int, K: int, g: torch.Generator) -> torch.Tensor:
    """A random point of the conjugate's domain (any s for squared)."""
    if name == "squared":
        return 3.0 * torch.randn(N, K, generator=g, dtype=DT)
    if name == "logistic":
        p = torch.rand(N, 1, generator=g, dtype=DT)
        return p - y.to(DT).unsqueeze(1)
    p = random_simplex(N, K, g)
    return p - F.one_hot(y, K).to(DT)


sizes = st.integers(1, 6)
scales = st.sampled_from([0.1, 1.0, 3.0])
names = st.sampled_from(LOSS_NAMES)


# ---------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------


def test_registry():
    assert set(LOSS_NAMES) == {"squared", "logistic", "cross_entropy"}
    assert isinstance(get_loss("squared"), SquaredLoss)
    assert isinstance(get_loss("logistic"), LogisticLoss)
    assert isinstance(get_loss("cross_entropy"), CrossEntropyLoss)
    obj = CrossEntropyLoss()
    assert get_loss(obj) is obj
    for name in LOSS_NAMES:
        assert get_loss(name).name == name


@pytest.mark.parametrize("bad", ["hinge", "Squared", "", None, 3])
def test_get_loss_unknown_name(bad):
    with pytest.raises(ValueError, match=r"loss: expected one of squared, logistic, cross_entropy"):
        get_loss(bad)


@pytest.mark.parametrize("K", [2, 3, 7])
def test_cross_entropy_at_zero_is_log_K(K):
    loss = CrossEntropyLoss()
    z = torch.zeros(K, K, dtype=DT)
    y = torch.arange(K)
    torch.testing.assert_close(loss.value(z, y), torch.full((K,), math.log(K), dtype=DT))
    # gradient at 0: uniform minus one-hot
    expected = torch.full((K, K), 1.0 / K, dtype=DT) - torch.eye(K, dtype=DT)
    torch.testing.assert_close(loss.grad(z, y), expected)
    # conjugate of the uniform distribution: sum (1/K) log(1/K) = -log K
    s = expected
    torch.testing.assert_close(loss.conjugate(s, y), torch.full((K,), -math.log(K), dtype=DT))


def test_logistic_closed_forms():
    loss = LogisticLoss()
    z = torch.zeros(2, 1, dtype=DT)
    y = torch.tensor([0, 1])
    torch.testing.assert_close(loss.value(z, y), torch.full((2,), math.log(2.0), dtype=DT))
    torch.testing.assert_close(loss.grad(z, y), torch.tensor([[0.5], [-0.5]], dtype=DT))
    torch.testing.assert_close(loss.hvp(z, y, torch.ones(2, 1, dtype=DT)), torch.full((2, 1), 0.25, dtype=DT))
    # z = log 3: sigma = 3/4, value log(4) - y log 3
    z = torch.full((2, 1), math.log(3.0), dtype=DT)
    torch.testing.assert_close(
        loss.value(z, y), torch.tensor([math.log(4.0), math.log(4.0) - math.log(3.0)], dtype=DT)
    )
    # conjugate at p = 1/2 is -log 2; at the endpoints p in {0, 1} it is 0
    s = torch.tensor([[0.5], [-0.5]], dtype=DT)
    torch.testing.assert_close(loss.conjugate(s, y), torch.full((2,), -math.log(2.0), dtype=DT))
    ends = torch.tensor([[0.0], [1.0], [0.0], [-1.0]], dtype=DT)
    yy = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(loss.conjugate(ends, yy), torch.zeros(4, dtype=DT))


def test_squared_closed_forms():
    loss = SquaredLoss()
    z = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=DT)
    y = torch.tensor([[1.0, 0.0], [3.0, -1.0]], dtype=DT)
    torch.testing.assert_close(loss.value(z, y), torch.tensor([2.0, 4.5], dtype=DT))
    torch.testing.assert_close(loss.grad(z, y), z - y)
    v = torch.tensor([[0.3, -2.0], [1.0, 5.0]], dtype=DT)
    torch.testing.assert_close(loss.hvp(z, y, v), v)
    s = torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=DT)
    # 0.5 ||s||^2 + <s, y>
    torch.testing.assert_close(loss.conjugate(s, y), torch.tensor([2.0, 8.0], dtype=DT))


def test_cross_entropy_conjugate_at_vertices_is_zero():
    loss = CrossEntropyLoss()
    K = 4
    y = torch.tensor([0, 1, 2, 3, 2])
    target = torch.tensor([0, 3, 1, 3, 2])  # p = e_target
    s = F.one_hot(target, K).to(DT) - F.one_hot(y, K).to(DT)
    torch.testing.assert_close(loss.conjugate(s, y), torch.zeros(5, dtype=DT))


# ---------------------------------------------------------------------------------------------
# Autograd / reference oracles (Hypothesis over seeds and sizes)
# ---------------------------------------------------------------------------------------------


@given(name=names, N=sizes, K=sizes, seed=SEEDS, scale=scales)
def test_value_matches_reference(name, N, K, seed, scale):
    loss, z, y, _ = make_case(name, N, K, seed, scale)
    val = loss.value(z, y)
    assert val.shape == (N,)
    assert val.dtype == DT
    torch.testing.assert_close(val, reference_value(name, z, y), rtol=1e-12, atol=1e-13)


@given(name=names, N=sizes, K=sizes, seed=SEEDS, scale=scales)
def test_grad_matches_autograd(name, N, K, seed, scale):
    loss, z, y, _ = make_case(name, N, K, seed, scale)
    auto = torch.func.grad(lambda zz: loss.value(zz, y).sum())(z)
    ref = torch.func.grad(lambda zz: reference_value(name, zz, y).sum())(z)
    got = loss.grad(z, y)
    assert got.shape == z.shape
    torch.testing.assert_close(got, auto, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-13)


@given(name=names, N=sizes, K=sizes, seed=SEEDS, scale=scales)
def test_hvp_matches_autograd(name, N, K, seed, scale):
    loss, z, y, v = make_case(name, N, K, seed, scale)
    g = torch.func.grad(lambda zz: reference_value(name, zz, y).sum())
    _, auto = torch.func.jvp(g, (z,), (v,))
    got = loss.hvp(z, y, v)
    assert got.shape == z.shape
    torch.testing.assert_close(got, auto, rtol=1e-11, atol=1e-13)
    # and the HVP is the directional derivative of the library's own gradient
    _, dgrad = torch.func.jvp(lambda zz: loss.grad(zz, y), (z,), (v,))
    torch.testing.assert_close(got, dgrad, rtol=1e-11, atol=1e-13)


@given(name=names, N=st.integers(1, 5), K=st.integers(1, 5), seed=SEEDS, scale=scales)
def test_max_curvature_bounds_hessian(name, N, K, seed, scale):
    loss, z, y, _ = make_case(name, N, K, seed, scale)
    K = z.shape[1]
    H = torch.autograd.functional.hessian(
        lambda zf: reference_value(name, zf.reshape(N, K), y).sum(), z.reshape(-1)
    )
    torch.testing.assert_close(H, H.T)
    ev = torch.linalg.eigvalsh(H)
    assert float(ev.min()) >= -1e-12  # convex
    assert float(ev.max()) <= loss.max_curvature + 1e-12
    # the library's hvp applied to the identity gives the same dense Hessian
    cols = []
    for c in range(N * K):
        e = torch.zeros(N * K, dtype=DT)
        e[c] = 1.0
        cols.append(loss.hvp(z, y, e.reshape(N, K)).reshape(-1))
    torch.testing.assert_close(torch.stack(cols, dim=1), H, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize(("name", "K"), [("squared", 3), ("logistic", 1), ("cross_entropy", 2)])
def test_max_curvature_is_attained(name, K):
    """The bound is tight: attained at z = 0 (logistic, binary CE) / everywhere (squared)."""
    loss = get_loss(name)
    z = torch.zeros(1, K, dtype=DT)
    y = torch.zeros(1, K, dtype=DT) if name == "squared" else torch.zeros(1, dtype=torch.long)
    H = torch.autograd.functional.hessian(lambda zz: loss.value(zz.reshape(1, K), y).sum(), z.reshape(-1))
    assert float(torch.linalg.eigvalsh(H).max()) == pytest.approx(loss.max_curvature, abs=1e-14)


# ---------------------------------------------------------------------------------------------
# Conjugates
# ---------------------------------------------------------------------------------------------


@given(name=names, N=sizes, K=sizes, seed=SEEDS, scale=scales)
def test_fenchel_young_equality_at_gradient(name, N, K, seed, scale):
    loss, z, y, _ = make_case(name, N, K, seed, scale)
    s = loss.grad(z, y)
    conj = loss.conjugate(s, y)
    assert conj.shape == (N,)
    assert bool(torch.isfinite(conj).all())
    lhs = loss.value(z, y) + conj
    torch.testing.assert_close(lhs, (s * z).sum(dim=1), rtol=1e-10, atol=1e-11)


@given(name=names, N=sizes, K=sizes, seed=SEEDS, scale=scales, c=st.floats(0.01, 0.99))
def test_fenchel_young_inequality(name, N, K, seed, scale, c):
    loss, z, y, _ = make_case(name, N, K, seed, scale)
    K = z.shape[1]
    g = torch.Generator().manual_seed(seed + 1)
    for s in (c * loss.grad(z, y), feasible_s(name, y, N, K, g)):
        conj = loss.conjugate(s, y)
        assert bool(torch.isfinite(conj).all())
        gap = loss.value(z, y) + conj - (s * z).sum(dim=1)
        assert float(gap.min()) >= -1e-10
    # strict for s = c * grad (c < 1) unless the gradient vanishes: the sup is attained only at grad
    s = c * loss.grad(z, y)
    gap = loss.value(z, y) + loss.conjugate(s, y) - (s * z).sum(dim=1)
    nonzero = loss.grad(z, y).abs().amax(dim=1) > 1e-3
    assert bool((gap[nonzero] > 0).all())


@given(N=sizes, K=st.integers(2, 6), seed=SEEDS)
def test_cross_entropy_conjugate_on_simplex_closed_form(N, K, seed):
    loss = CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (N,), generator=g)
    p = random_simplex(N, K, g)
    s = p - F.one_hot(y, K).to(DT)
    torch.testing.assert_close(loss.conjugate(s, y), torch.special.xlogy(p, p).sum(dim=1))


@given(N=sizes, seed=SEEDS)
def test_logistic_conjugate_closed_form(N, seed):
    loss = LogisticLoss()
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (N,), generator=g)
    p = torch.rand(N, generator=g, dtype=DT)
    s = (p - y.to(DT)).unsqueeze(1)
    expected = torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)
    torch.testing.assert_close(loss.conjugate(s, y), expected)


@given(N=sizes, seed=SEEDS, delta=st.sampled_from([1e-8, 1e-4, 0.5, 10.0]))
def test_logistic_conjugate_infinite_outside_domain(N, seed, delta):
    loss = LogisticLoss()
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (N,), generator=g)
    side = torch.randint(0, 2, (N,), generator=g).to(DT)  # 1: p > 1, 0: p < 0
    p = side * (1.0 + delta) + (1 - side) * (-delta)
    s = (p - y.to(DT)).unsqueeze(1)
    conj = loss.conjugate(s, y)
    assert bool(torch.isposinf(conj).all())


@given(N=sizes, K=st.integers(2, 6), seed=SEEDS, delta=st.sampled_from([1e-6, 1e-3, 0.3]))
def test_cross_entropy_conjugate_infinite_outside_simplex(N, K, seed, delta):
    loss = CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (N,), generator=g)
    p = random_simplex(N, K, g)
    onehot = F.one_hot(y, K).to(DT)
    # (a) sums to one but one entry negative: move mass delta + p_a from coordinate a to b
    a = torch.randint(0, K, (N,), generator=g)
    b = (a + 1) % K
    shift = (p.gather(1, a.unsqueeze(1)).squeeze(1) + delta).unsqueeze(1)
    p_neg = p - shift * F.one_hot(a, K).to(DT) + shift * F.one_hot(b, K).to(DT)
    assert bool((p_neg.sum(dim=1) - 1).abs().max() < 1e-12)
    assert bool(torch.isposinf(loss.conjugate(p_neg - onehot, y)).all())
    # (b) non-negative but the sum is 1 + delta
    p_big = p * (1.0 + delta)
    assert bool(torch.isposinf(loss.conjugate(p_big - onehot, y)).all())
    # (c) non-negative, sum 1 - delta
    p_small = p * (1.0 - delta)
    assert bool(torch.isposinf(loss.conjugate(p_small - onehot, y)).all())


@given(N=sizes, K=sizes, seed=SEEDS)
def test_squared_conjugate_is_finite_everywhere_and_attains_sup(N, K, seed):
    loss = SquaredLoss()
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(N, K, generator=g, dtype=DT)
    s = 100.0 * torch.randn(N, K, generator=g, dtype=DT)
    conj = loss.conjugate(s, y)
    assert bool(torch.isfinite(conj).all())
    # the sup over u of <s, u> - l(u) is attained at u = y + s
    u = y + s
    torch.testing.assert_close(conj, (s * u).sum(dim=1) - loss.value(u, y), rtol=1e-12, atol=1e-9)


def test_cross_entropy_conjugate_is_per_example():
    loss = CrossEntropyLoss()
    y = torch.tensor([1, 1])
    s_bad = torch.tensor([[5e-4, 0.0]], dtype=DT)  # p = (5e-4, 1): sum 1.0005, not in the simplex
    s_huge = torch.tensor([[1e6, 0.0]], dtype=DT)
    alone = loss.conjugate(s_bad, y[:1])
    assert bool(torch.isposinf(alone).all())  # correct on its own
    batch = loss.conjugate(torch.cat([s_bad, s_huge]), y)
    assert bool(torch.isposinf(batch[0]))  # ... but not next to a large row


def test_logistic_value_accurate_for_large_margins():
    loss = LogisticLoss()
    z = torch.tensor([[21.0], [25.0], [30.0]], dtype=DT)
    y = torch.ones(3, dtype=torch.long)
    ref = F.binary_cross_entropy_with_logits(z[:, 0], y.to(DT), reduction="none")
    assert bool((ref > 0).all())
    torch.testing.assert_close(loss.value(z, y), ref, rtol=1e-10, atol=0.0)


# ---------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------

N0 = 4

VALIDATE_CASES = [
    # squared
    (
        "squared",
        2,
        torch.zeros(N0, dtype=DT),
        ValueError,
        r"y: expected shape \(4, 2\) .*got \(4,\)",
    ),
    (
        "squared",
        2,
        torch.zeros(N0, 3, dtype=DT),
        ValueError,
        r"y: expected shape \(4, 2\).*got \(4, 3\)",
    ),
    (
        "squared",
        2,
        torch.zeros(N0 + 1, 2, dtype=DT),
        ValueError,
        r"y: expected shape \(4, 2\).*got \(5, 2\)",
    ),
    (
        "squared",
        2,
        torch.zeros(N0, 2, dtype=torch.long),
        ValueError,
        r"y: expected a floating dtype.*got torch\.int64",
    ),
    (
        "squared",
        2,
        torch.tensor([[0.0, 1.0], [math.nan, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=DT),
        ValueError,
        r"y: expected finite targets, got NaN or inf",
    ),
    (
        "squared",
        2,
        torch.tensor([[0.0, 1.0], [math.inf, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=DT),
        ValueError,
        r"y: expected finite targets",
    ),
    ("squared", 2, [[0.0, 0.0]] * N0, TypeError, r"y: expected a torch\.Tensor.*got list"),
    # logistic
    (
        "logistic",
        2,
        torch.zeros(N0, dtype=torch.long),
        ValueError,
        r"K: the logistic loss needs K = 1 output, got K = 2",
    ),
    (
        "logistic",
        1,
        torch.tensor([0, 1, 2, 0]),
        ValueError,
        r"y: expected labels in \[0, 1\] for K = 1, got a label 2",
    ),
    (
        "logistic",
        1,
        torch.tensor([0, -1, 1, 0]),
        ValueError,
        r"y: expected labels in \[0, 1\] for K = 1, got a label -1",
    ),
    (
        "logistic",
        1,
        torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=DT),
        ValueError,
        r"y: expected an integer dtype for class labels, got torch\.float64",
    ),
    (
        "logistic",
        1,
        torch.tensor([False, True, True, False]),
        ValueError,
        r"y: expected an integer dtype.*got torch\.bool",
    ),
    (
        "logistic",
        1,
        torch.zeros(N0, 1, dtype=torch.long),
        ValueError,
        r"y: expected shape \(4,\).*got \(4, 1\)",
    ),
    # cross-entropy
    (
        "cross_entropy",
        1,
        torch.zeros(N0, dtype=torch.long),
        ValueError,
        r"K: cross_entropy needs K >= 2 outputs, got K = 1",
    ),
    (
        "cross_entropy",
        3,
        torch.tensor([0, 1, 3, 2]),
        ValueError,
        r"y: expected labels in \[0, 2\] for K = 3, got a label 3",
    ),
    (
        "cross_entropy",
        3,
        torch.tensor([0, 1, -2, 2]),
        ValueError,
        r"y: expected labels in \[0, 2\] for K = 3, got a label -2",
    ),
    (
        "cross_entropy",
        3,
        torch.tensor([0.0, 1.0, 2.0, 0.0], dtype=DT),
        ValueError,
        r"y: expected an integer dtype for class labels, got torch\.float64",
    ),
    (
        "cross_entropy",
        3,
        torch.zeros(N0 - 1, dtype=torch.long),
        ValueError,
        r"y: expected shape \(4,\).*got \(3,\)",
    ),
    (
        "cross_entropy",
        3,
        torch.zeros(N0, 3, dtype=torch.long),
        ValueError,
        r"y: expected shape \(4,\).*got \(4, 3\)",
    ),
]


@pytest.mark.parametrize(
    ("name", "K", "y", "exc", "match"),
    VALIDATE_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(VALIDATE_CASES)],
)
def test_validate_rejects(name, K, y, exc, match):
    with pytest.raises(exc, match=match):
        get_loss(name).validate(y, N0, K)


@pytest.mark.parametrize(
    ("name", "K", "y"),
    [
        ("squared", 2, torch.zeros(N0, 2, dtype=DT)),
        ("squared", 1, torch.randn(N0, 1, dtype=torch.float32)),
        ("logistic", 1, torch.tensor([0, 1, 1, 0])),
        ("logistic", 1, torch.tensor([1, 1, 1, 1], dtype=torch.int32)),
        ("cross_entropy", 2, torch.tensor([0, 1, 1, 0])),
        ("cross_entropy", 5, torch.tensor([4, 0, 3, 2], dtype=torch.int16)),
    ],
)
def test_validate_accepts(name, K, y):
    assert get_loss(name).validate(y, N0, K) is None


def test_loss_is_abstract():
    with pytest.raises(TypeError):
        Loss()  # type: ignore[abstract]
    assert repr(SquaredLoss()) == "SquaredLoss()"
