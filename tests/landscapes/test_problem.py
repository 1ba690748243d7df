"""Tests for landscapes.problem: validation on construction, predictions/risk/gradients, forms.

Oracles: closed forms (diagonal blocks for the nuclear norm, explicit index formulas for the
row/column conventions), autograd of an independent risk implementation, and the dense vs
operator form of the same Jacobian; Hypothesis draws seeds and sizes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from landscapes.losses import LOSS_NAMES, SquaredLoss
from landscapes.operators import DenseOperator, FunctionOperator
from landscapes.problem import Problem, RiskEvaluation

DT = torch.float64
SEEDS = st.integers(0, 2**32 - 1)

# Base sizes for the validation table: N = 4, K = 3, blocks (2,3) + (2,2): p = 10, KN = 12.
N0, K0, BLOCKS0 = 4, 3, [(2, 3), (2, 2)]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def make_tensors(seed: int, N: int, K: int, blocks, loss: str):
    g = torch.Generator().manual_seed(seed)
    p = sum(m * n for m, n in blocks)
    J = torch.randn(K * N, p, generator=g, dtype=DT) / math.sqrt(p)
    f0 = 0.5 * torch.randn(N, K, generator=g, dtype=DT)
    if loss == "squared":
        y = torch.randn(N, K, generator=g, dtype=DT)
    elif loss == "logistic":
        y = torch.randint(0, 2, (N,), generator=g)
    else:
        y = torch.randint(0, K, (N,), generator=g)
    return J, f0, y


def make_point(seed: int, blocks) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(m, n, generator=g, dtype=DT) for m, n in blocks)


def base_kwargs(loss: str = "squared") -> dict:
    K = 1 if loss == "logistic" else K0
    J, f0, y = make_tensors(0, N0, K, BLOCKS0, loss)
    return {"J": J, "f0": f0, "y": y, "loss": loss, "blocks": list(BLOCKS0), "lam": 0.1, "seed": 3}


def build(kw: dict) -> Problem:
    kw = dict(kw)
    return Problem(kw.pop("J"), kw.pop("f0"), kw.pop("y"), **kw)


def ref_loss(name: str, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "squared":
        return 0.5 * ((z - y) ** 2).sum(dim=1)
    if name == "logistic":
        return F.binary_cross_entropy_with_logits(z[:, 0], y.to(z.dtype), reduction="none")
    return F.cross_entropy(z, y, reduction="none")


def ref_predictions(J, f0, blocks, D):
    """z[i, k] = f0[i, k] + sum_j <J[i*K + k, block j reshaped row-major], D_j>."""
    N, K = f0.shape
    z = f0.clone()
    off = 0
    for (m, n), Dj in zip(blocks, D, strict=True):
        Jb = J[:, off : off + m * n].reshape(K * N, m, n)
        z = z + torch.einsum("rab,ab->r", Jb, Dj).reshape(N, K)
        off += m * n
    return z


def ref_risk(J, f0, y, blocks, name, D):
    return ref_loss(name, ref_predictions(J, f0, blocks, D), y).mean()


def k_of(loss: str, K: int) -> int:
    return 1 if loss == "logistic" else (max(K, 2) if loss == "cross_entropy" else K)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _set(**changes):
    def f(kw):
        kw.update(changes)
        return kw

    return f


def _mod(key, fn):
    def f(kw):
        kw[key] = fn(kw[key])
        return kw

    return f


def _nan_at(t, value=math.nan):
    t = t.clone()
    t.view(-1)[1] = value
    return t


def _fop(J, shape=None, dtype=DT):
    return FunctionOperator(lambda x: J @ x, lambda y: J.T @ y, shape or tuple(J.shape), dtype=dtype)


# (id, loss, modifier, exception, message regex naming the argument, expected and received)
BAD = [
    (
        "J-extra-row",
        "squared",
        _mod("J", lambda J: torch.cat([J, J[:1]])),
        ValueError,
        r"J: expected 12 rows \(K\*N with N=4, K=3 from f0\), got 13",
    ),
    (
        "J-missing-row",
        "squared",
        _mod("J", lambda J: J[:-1]),
        ValueError,
        r"J: expected 12 rows .*got 11",
    ),
    (
        "J-extra-column",
        "squared",
        _mod("J", lambda J: torch.cat([J, J[:, :1]], dim=1)),
        ValueError,
        r"J: expected 10 columns \(sum of m\*n over blocks \[\(2, 3\), \(2, 2\)\]\), got 11",
    ),
    (
        "J-missing-column",
        "cross_entropy",
        _mod("J", lambda J: J[:, :-1]),
        ValueError,
        r"J: expected 10 columns .*got 9",
    ),
    (
        "J-1d",
        "squared",
        _mod("J", lambda J: J.reshape(-1)),
        ValueError,
        r"J: expected a 2-D tensor of shape \(K\*N, p\), got shape \(120,\)",
    ),
    (
        "J-int",
        "squared",
        _mod("J", lambda J: J.to(torch.long)),
        ValueError,
        r"J: expected a floating dtype \(float16, float32, float64\), got torch\.int64",
    ),
    (
        "J-nan",
        "squared",
        _mod("J", _nan_at),
        ValueError,
        r"J: expected finite values, got NaN or inf",
    ),
    (
        "J-inf",
        "cross_entropy",
        _mod("J", lambda J: _nan_at(J, -math.inf)),
        ValueError,
        r"J: expected finite values, got NaN or inf",
    ),
    (
        "J-numpy",
        "squared",
        _mod("J", lambda J: J.numpy()),
        TypeError,
        r"J: expected a torch\.Tensor or LinearOperator, got ndarray",
    ),
    (
        "J-operator-rows",
        "squared",
        _mod("J", lambda J: _fop(torch.cat([J, J[:1]]))),
        ValueError,
        r"J: expected 12 rows .*got 13",
    ),
    (
        "J-operator-columns",
        "squared",
        _mod("J", lambda J: _fop(J[:, :-1])),
        ValueError,
        r"J: expected 10 columns .*got 9",
    ),
    (
        "f0-nan",
        "squared",
        _mod("f0", _nan_at),
        ValueError,
        r"f0: expected finite values, got NaN or inf",
    ),
    (
        "f0-inf",
        "logistic",
        _mod("f0", lambda f: _nan_at(f, math.inf)),
        ValueError,
        r"f0: expected finite values",
    ),
    (
        "f0-1d",
        "squared",
        _mod("f0", lambda f: f.reshape(-1)),
        ValueError,
        r"f0: expected a 2-D tensor of shape \(N, K\), got \(12,\)",
    ),
    (
        "f0-list",
        "squared",
        _mod("f0", lambda f: f.tolist()),
        ValueError,
        r"f0: expected a 2-D tensor of shape \(N, K\), got list",
    ),
    (
        "f0-no-examples",
        "squared",
        lambda kw: {**kw, "J": kw["J"][:0], "f0": kw["f0"][:0], "y": kw["y"][:0]},
        ValueError,
        r"f0: expected at least one example and one output, got shape \(0, 3\)",
    ),
    (
        "f0-no-outputs",
        "squared",
        lambda kw: {**kw, "J": kw["J"][:0], "f0": kw["f0"][:, :0], "y": kw["y"][:, :0]},
        ValueError,
        r"f0: expected at least one example and one output, got shape \(4, 0\)",
    ),
    (
        "f0-dtype",
        "squared",
        _mod("f0", lambda f: f.float()),
        ValueError,
        r"f0: expected dtype torch\.float64 \(the dtype of J\), got torch\.float32",
    ),
    (
        "J-dtype-vs-f0",
        "cross_entropy",
        _mod("J", lambda J: J.float()),
        ValueError,
        r"f0: expected dtype torch\.float32 \(the dtype of J\), got torch\.float64",
    ),
    (
        "operator-dtype-vs-f0",
        "squared",
        _mod("J", lambda J: _fop(J.float(), dtype=torch.float32)),
        ValueError,
        r"f0: expected dtype torch\.float32 \(the dtype of J\), got torch\.float64",
    ),
    (
        "y-nan",
        "squared",
        _mod("y", _nan_at),
        ValueError,
        r"y: expected finite targets, got NaN or inf",
    ),
    (
        "y-inf",
        "squared",
        _mod("y", lambda y: _nan_at(y, math.inf)),
        ValueError,
        r"y: expected finite targets",
    ),
    (
        "y-shape",
        "squared",
        _mod("y", lambda y: y[:, :2]),
        ValueError,
        r"y: expected shape \(4, 3\) \(real targets\), got \(4, 2\)",
    ),
    (
        "y-dtype",
        "squared",
        _mod("y", lambda y: y.float()),
        ValueError,
        r"y: expected dtype torch\.float64 \(the dtype of J\), got torch\.float32",
    ),
    (
        "y-int-for-squared",
        "squared",
        _mod("y", lambda y: y.long()),
        ValueError,
        r"y: expected a floating dtype for squared-loss targets, got torch\.int64",
    ),
    (
        "y-list",
        "squared",
        _mod("y", lambda y: y.tolist()),
        TypeError,
        r"y: expected a torch\.Tensor, got list",
    ),
    (
        "y-label-too-large",
        "cross_entropy",
        _mod("y", lambda y: torch.tensor([0, 1, 3, 2])),
        ValueError,
        r"y: expected labels in \[0, 2\] for K = 3, got a label 3",
    ),
    (
        "y-label-negative",
        "cross_entropy",
        _mod("y", lambda y: torch.tensor([0, -1, 2, 2])),
        ValueError,
        r"y: expected labels in \[0, 2\] for K = 3, got a label -1",
    ),
    (
        "y-logistic-label-2",
        "logistic",
        _mod("y", lambda y: torch.tensor([0, 1, 2, 1])),
        ValueError,
        r"y: expected labels in \[0, 1\] for K = 1, got a label 2",
    ),
    (
        "y-float-labels",
        "cross_entropy",
        _mod("y", lambda y: y.to(DT)),
        ValueError,
        r"y: expected an integer dtype for class labels, got torch\.float64",
    ),
    (
        "logistic-with-K3",
        "squared",
        _set(loss="logistic", y=torch.tensor([0, 1, 1, 0])),
        ValueError,
        r"K: the logistic loss needs K = 1 output, got K = 3",
    ),
    (
        "cross-entropy-with-K1",
        "logistic",
        _set(loss="cross_entropy"),
        ValueError,
        r"K: cross_entropy needs K >= 2 outputs, got K = 1",
    ),
    (
        "lam-negative",
        "squared",
        _set(lam=-0.1),
        ValueError,
        r"lam: expected finite values >= 0, got -0\.1 for block 0",
    ),
    (
        "lam-negative-block-1",
        "squared",
        _set(lam=[0.1, -2.0]),
        ValueError,
        r"lam: expected finite values >= 0, got -2\.0 for block 1",
    ),
    (
        "lam-nan",
        "squared",
        _set(lam=math.nan),
        ValueError,
        r"lam: expected finite values >= 0, got nan",
    ),
    (
        "lam-nan-in-list",
        "squared",
        _set(lam=(0.0, math.nan)),
        ValueError,
        r"lam: expected finite values >= 0, got nan for block 1",
    ),
    (
        "lam-inf",
        "squared",
        _set(lam=math.inf),
        ValueError,
        r"lam: expected finite values >= 0, got inf",
    ),
    (
        "lam-too-many",
        "squared",
        _set(lam=[0.1, 0.2, 0.3]),
        ValueError,
        r"lam: expected one value or 2 \(one per block\), got 3",
    ),
    (
        "lam-too-few",
        "squared",
        _set(lam=[0.1]),
        ValueError,
        r"lam: expected one value or 2 \(one per block\), got 1",
    ),
    (
        "lam-string",
        "squared",
        _set(lam="0.1"),
        ValueError,
        r"lam: expected a non-negative number or one per block, got '0\.1'",
    ),
    (
        "lam-bool",
        "squared",
        _set(lam=True),
        ValueError,
        r"lam: expected a non-negative number or one per block, got True",
    ),
    (
        "lam-list-of-str",
        "squared",
        _set(lam=["a", 0.1]),
        ValueError,
        r"lam: expected real numbers, got \['a', 0\.1\]",
    ),
    (
        "loss-unknown",
        "squared",
        _set(loss="hinge"),
        ValueError,
        r"loss: expected one of squared, logistic, cross_entropy; got 'hinge'",
    ),
    (
        "blocks-empty",
        "squared",
        _set(blocks=[]),
        ValueError,
        r"blocks: expected a non-empty sequence of \(m, n\) shapes, got \[\]",
    ),
    (
        "blocks-string",
        "squared",
        _set(blocks="2x3"),
        ValueError,
        r"blocks: expected a non-empty sequence of \(m, n\) shapes, got '2x3'",
    ),
    (
        "blocks-zero",
        "squared",
        _set(blocks=[(0, 3), (2, 2)]),
        ValueError,
        r"blocks\[0\]: expected a pair of positive ints \(m, n\), got \(0, 3\)",
    ),
    (
        "blocks-negative",
        "squared",
        _set(blocks=[(2, 3), (2, -2)]),
        ValueError,
        r"blocks\[1\]: expected a pair of positive ints \(m, n\), got \(2, -2\)",
    ),
    (
        "blocks-float",
        "squared",
        _set(blocks=[(2.0, 3), (2, 2)]),
        ValueError,
        r"blocks\[0\]: expected a pair of positive ints \(m, n\), got \(2\.0, 3\)",
    ),
    (
        "blocks-bool",
        "squared",
        _set(blocks=[(2, 3), (True, 4)]),
        ValueError,
        r"blocks\[1\]: expected a pair of positive ints \(m, n\), got \(True, 4\)",
    ),
    (
        "blocks-triple",
        "squared",
        _set(blocks=[(2, 3, 1), (2, 2)]),
        ValueError,
        r"blocks\[0\]: expected a pair of positive ints \(m, n\), got \(2, 3, 1\)",
    ),
    (
        "seed-float",
        "squared",
        _set(seed=1.5),
        ValueError,
        r"seed: expected an int or None, got 1\.5",
    ),
    ("seed-str", "squared", _set(seed="7"), ValueError, r"seed: expected an int or None, got '7'"),
    (
        "seed-bool",
        "squared",
        _set(seed=True),
        ValueError,
        r"seed: expected an int or None, got True",
    ),
]


@pytest.mark.parametrize(("loss", "modify", "exc", "match"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_construction_rejects(loss, modify, exc, match):
    kw = modify(base_kwargs(loss))
    with pytest.raises(exc, match=match):
        build(kw)


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_base_kwargs_are_valid(loss):
    """The unmodified inputs of the table construct: each rejection is due to its change."""
    P = build(base_kwargs(loss))
    assert P.N == N0
    assert P.K == (1 if loss == "logistic" else K0)
    assert P.KN == P.N * P.K
    assert P.num_params == 10
    assert P.blocks == ((2, 3), (2, 2))
    assert P.lam == (0.1, 0.1)
    assert P.seed == 3
    assert P.loss.name == loss
    assert P.dtype == DT
    assert P.device == torch.device("cpu")
    assert isinstance(P.J, DenseOperator)


def test_construction_normalizes():
    kw = base_kwargs("squared")
    P = build(
        {
            **kw,
            "blocks": [[2, 3], [2, 2]],
            "lam": [1, 0],
            "seed": None,
            "name": 5,
            "loss": SquaredLoss(),
        }
    )
    assert P.blocks == ((2, 3), (2, 2))
    assert P.lam == (1.0, 0.0)
    assert all(isinstance(v, float) for v in P.lam)
    assert P.seed is None
    assert P.name == "5"
    assert P.meta == {}
    meta = {"a": 1}
    Q = build({**kw, "meta": meta})
    meta["a"] = 2
    assert Q.meta == {"a": 1}  # copied
    assert "N=4" in repr(Q) and "loss='squared'" in repr(Q)


def test_problem_is_frozen():
    P = build(base_kwargs())
    with pytest.raises(AttributeError):
        P.lam = (0.0, 0.0)  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Points, predictions, risk, gradients
# ---------------------------------------------------------------------------------------------


def test_zeros_and_check_point():
    P = build(base_kwargs())
    Z = P.zeros()
    assert [tuple(z.shape) for z in Z] == [(2, 3), (2, 2)]
    assert all(float(z.abs().sum()) == 0.0 and z.dtype == DT for z in Z)
    D = make_point(1, BLOCKS0)
    assert P.check_point(list(D)) == D
    with pytest.raises(ValueError, match=r"D: expected 2 blocks, got 1"):
        P.check_point(D[:1])
    with pytest.raises(ValueError, match=r"D: expected a tuple of 2 matrices, got one tensor"):
        P.check_point(D[0])
    with pytest.raises(ValueError, match=r"X\[1\]: expected shape \(2, 2\), got \(2, 3\)"):
        P.check_point((D[0], D[0]), name="X")
    with pytest.raises(ValueError, match=r"D\[0\]: expected dtype torch\.float64, got torch\.float32"):
        P.check_point((D[0].float(), D[1]))


def test_vec_order_closed_form():
    P = build(base_kwargs())
    D = (torch.arange(6, dtype=DT).reshape(2, 3), 10 + torch.arange(4, dtype=DT).reshape(2, 2))
    torch.testing.assert_close(P.vec(D), torch.tensor([0, 1, 2, 3, 4, 5, 10, 11, 12, 13], dtype=DT))


@given(seed=SEEDS, nblocks=st.integers(1, 3), dims=st.lists(st.integers(1, 4), min_size=6, max_size=6))
def test_vec_unvec_round_trip(seed, nblocks, dims):
    blocks = [(dims[2 * j], dims[2 * j + 1]) for j in range(nblocks)]
    J, f0, y = make_tensors(seed, 2, 2, blocks, "squared")
    P = Problem(J, f0, y, loss="squared", blocks=blocks, lam=0.0)
    D = make_point(seed, blocks)
    x = P.vec(D)
    assert x.shape == (P.num_params,)
    back = P.unvec(x)
    assert len(back) == nblocks
    for a, b in zip(back, D, strict=True):
        assert torch.equal(a, b)
    g = torch.Generator().manual_seed(seed + 1)
    x2 = torch.randn(P.num_params, generator=g, dtype=DT)
    assert torch.equal(P.vec(P.unvec(x2)), x2)


@given(
    loss=st.sampled_from(LOSS_NAMES),
    N=st.integers(1, 5),
    K=st.integers(1, 3),
    seed=SEEDS,
    dims=st.lists(st.integers(1, 3), min_size=4, max_size=4),
)
def test_evaluate_matches_autograd(loss, N, K, seed, dims):
    K = k_of(loss, K)
    blocks = [(dims[0], dims[1]), (dims[2], dims[3])]
    J, f0, y = make_tensors(seed, N, K, blocks, loss)
    P = Problem(J, f0, y, loss=loss, blocks=blocks, lam=0.1, seed=seed)
    D = make_point(seed + 7, blocks)

    z_ref = ref_predictions(J, f0, blocks, D)
    torch.testing.assert_close(P.predictions(D), z_ref, rtol=1e-12, atol=1e-13)
    r_ref = float(ref_risk(J, f0, y, blocks, loss, D))
    assert P.risk(D) == pytest.approx(r_ref, rel=1e-12, abs=1e-14)

    ev = P.evaluate(D)
    assert isinstance(ev, RiskEvaluation)
    assert ev.value == pytest.approx(r_ref, rel=1e-12, abs=1e-14)
    torch.testing.assert_close(ev.z, z_ref, rtol=1e-12, atol=1e-13)
    # g = (1/N) dl/dz = gradient of the risk w.r.t. the predictions
    g_ref = torch.func.grad(lambda zz: ref_loss(loss, zz, y).mean())(z_ref)
    assert ev.g.shape == (N, K)
    torch.testing.assert_close(ev.g, g_ref, rtol=1e-11, atol=1e-13)
    # S_j = dL/dD_j
    S_ref = torch.func.grad(lambda D1, D2: ref_risk(J, f0, y, blocks, loss, (D1, D2)), argnums=(0, 1))(*D)
    assert len(ev.S) == 2
    for Sj, Rj, shape in zip(ev.S, S_ref, blocks, strict=True):
        assert tuple(Sj.shape) == shape
        torch.testing.assert_close(Sj, Rj, rtol=1e-11, atol=1e-13)
    # evaluate_at from the predictions agrees
    ev2 = P.evaluate_at(ev.z)
    assert ev2.value == ev.value
    for a, b in zip(ev2.S, ev.S, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_risk_at_zero_closed_form(loss):
    """f0 = 0, D = 0: z = 0, so the risk is 0.5 mean ||y||^2 / log 2 / log K."""
    K = 1 if loss == "logistic" else 3
    J, _, y = make_tensors(5, 4, K, BLOCKS0, loss)
    P = Problem(J, torch.zeros(4, K, dtype=DT), y, loss=loss, blocks=BLOCKS0, lam=0.0)
    if loss == "squared":
        expected = 0.5 * float((y**2).sum(dim=1).mean())
    else:
        expected = math.log(2.0) if loss == "logistic" else math.log(3.0)
    assert P.risk(P.zeros()) == pytest.approx(expected, rel=1e-14)


@given(
    seed=SEEDS,
    lam1=st.floats(0.0, 5.0, allow_subnormal=False),  # a subnormal lam is refused by Problem
    lam2=st.floats(0.0, 5.0, allow_subnormal=False),
)
def test_nuc_objective_closed_form_diagonal(seed, lam1, lam2):
    blocks = [(3, 2), (2, 4)]
    J, f0, y = make_tensors(seed, 3, 2, blocks, "squared")
    P = Problem(J, f0, y, loss="squared", blocks=blocks, lam=[lam1, lam2])
    g = torch.Generator().manual_seed(seed + 1)
    d1 = torch.randn(2, generator=g, dtype=DT)
    d2 = torch.randn(2, generator=g, dtype=DT)
    D1 = torch.zeros(3, 2, dtype=DT)
    D1[0, 0], D1[1, 1] = d1[0], d1[1]
    D2 = torch.zeros(2, 4, dtype=DT)
    D2[0, 0], D2[1, 1] = d2[0], d2[1]
    pen = lam1 * float(d1.abs().sum()) + lam2 * float(d2.abs().sum())  # ||diag(d)||_* = sum |d_i|
    assert P.penalty((D1, D2)) == pytest.approx(pen, rel=1e-12, abs=1e-14)
    expected = float(ref_risk(J, f0, y, blocks, "squared", (D1, D2))) + pen
    assert P.nuc_objective((D1, D2)) == pytest.approx(expected, rel=1e-12, abs=1e-14)
    # a permuted/sign-flipped diagonal (same singular values) has the same penalty
    D1p = torch.zeros(3, 2, dtype=DT)
    D1p[2, 1], D1p[0, 0] = -d1[0], d1[1]
    assert P.penalty((D1p, D2)) == pytest.approx(pen, rel=1e-12, abs=1e-14)


# ---------------------------------------------------------------------------------------------
# Operator form, SciPy export
# ---------------------------------------------------------------------------------------------


@given(loss=st.sampled_from(LOSS_NAMES), N=st.integers(1, 4), K=st.integers(1, 3), seed=SEEDS)
def test_operator_form_matches_dense(loss, N, K, seed):
    K = k_of(loss, K)
    blocks = [(2, 3), (3, 1)]
    J, f0, y = make_tensors(seed, N, K, blocks, loss)
    dense = Problem(J, f0, y, loss=loss, blocks=blocks, lam=0.2, seed=seed)
    calls = {"mv": 0, "rmv": 0}

    def mv(x):
        calls["mv"] += 1
        return J @ x

    def rmv(v):
        calls["rmv"] += 1
        return J.T @ v

    op = Problem(
        FunctionOperator(mv, rmv, tuple(J.shape)),
        f0,
        y,
        loss=loss,
        blocks=blocks,
        lam=0.2,
        seed=seed,
    )
    D = make_point(seed + 3, blocks)
    a, b = dense.evaluate(D), op.evaluate(D)
    assert calls["mv"] >= 1 and calls["rmv"] >= 1  # the operator is really used
    assert a.value == b.value
    assert torch.equal(a.z, b.z)
    assert torch.equal(a.g, b.g)
    for x, w in zip(a.S, b.S, strict=True):
        assert torch.equal(x, w)
    assert dense.nuc_objective(D) == op.nuc_objective(D)
    fa, fb = dense.fingerprint(), op.fingerprint()
    assert fa["J_form"] == "dense" and fb["J_form"] == "operator"
    # the materialized operator is J
    torch.testing.assert_close(op.J.rows(), J)
    torch.testing.assert_close(op.J.gram(), J @ J.T)


@given(seed=SEEDS, rows=st.integers(1, 8), cols=st.integers(1, 8))
def test_to_scipy_matches_dense(seed, rows, cols):
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(rows, cols, generator=g, dtype=DT)
    Jn = J.numpy()
    x = torch.randn(cols, generator=g, dtype=DT).numpy()
    v = torch.randn(rows, generator=g, dtype=DT).numpy()
    X = torch.randn(cols, 3, generator=g, dtype=DT).numpy()
    for op in (DenseOperator(J), _fop(J)):
        A = op.to_scipy()
        assert A.shape == (rows, cols)
        assert A.dtype == np.float64
        np.testing.assert_allclose(A.matvec(x), Jn @ x, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(A.rmatvec(v), Jn.T @ v, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(A @ X, Jn @ X, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(A.T @ v, Jn.T @ v, rtol=1e-13, atol=1e-13)


def test_problem_to_scipy_of_jacobian():
    kw = base_kwargs("cross_entropy")
    P = build(kw)
    A = P.J.to_scipy()
    x = np.linspace(-1.0, 1.0, P.num_params)
    np.testing.assert_allclose(A.matvec(x), kw["J"].numpy() @ x, rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Fingerprint
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_fingerprint_deterministic_and_content_sensitive(loss):
    P1, P2 = build(base_kwargs(loss)), build(base_kwargs(loss))
    fp = P1.fingerprint()
    assert fp == P2.fingerprint()
    assert fp == P1.fingerprint()
    assert len(fp["sha256"]) == 16 and int(fp["sha256"], 16) >= 0
    assert fp["N"] == N0 and fp["KN"] == P1.KN and fp["loss"] == loss and fp["seed"] == 3
    assert fp["blocks"] == [[2, 3], [2, 2]] and fp["lam"] == [0.1, 0.1] and fp["dtype"] == "float64"
    # changing y changes the hash
    kw = base_kwargs(loss)
    y = kw["y"].clone()
    if loss == "squared":
        y[0, 0] += 1e-9
    elif loss == "logistic":
        y[0] = 1 - y[0]
    else:
        y[0] = (y[0] + 1) % K0
    kw["y"] = y
    assert build(kw).fingerprint()["sha256"] != fp["sha256"]
    # so do J and f0
    kw = base_kwargs(loss)
    kw["J"] = kw["J"].clone()
    kw["J"][3, 4] *= -1
    assert build(kw).fingerprint()["sha256"] != fp["sha256"]
    kw = base_kwargs(loss)
    kw["f0"] = kw["f0"] + 1.0
    assert build(kw).fingerprint()["sha256"] != fp["sha256"]


def test_risk_rejects_transposed_block():
    P = build(base_kwargs())
    D = make_point(2, BLOCKS0)
    with pytest.raises(ValueError, match=r"D\[0\]: expected shape \(2, 3\), got \(3, 2\)"):
        P.risk((D[0].T.contiguous(), D[1]))


def test_subset_into_a_buffer_equals_a_fresh_subset():
    from landscapes import gaussian_problem

    P = gaussian_problem(K=2, N=10, blocks=[(4, 3)], lam=0.1, loss="cross_entropy", seed=1)
    idx = torch.tensor([7, 2, 5])
    buf = torch.empty(8, P.num_params, dtype=P.dtype)
    a, b = P.subset(idx), P.subset(idx, buffer=buf)
    assert torch.equal(a.J.matrix, b.J.matrix) and torch.equal(a.y, b.y) and torch.equal(a.f0, b.f0)
    assert b.J.matrix.data_ptr() == buf.data_ptr()
    D = (torch.randn(4, 3, dtype=P.dtype),)
    assert a.risk(D) == b.risk(D)
    with pytest.raises(ValueError, match=r"buffer: expected a tensor of shape \(>= 6, 12\)"):
        P.subset(idx, buffer=torch.empty(5, P.num_params, dtype=P.dtype))


def test_fingerprint_hashes_low_rank_factors():
    from landscapes.operators import LowRankOperator

    g = torch.Generator().manual_seed(0)
    L = torch.randn(4, 2, generator=g, dtype=torch.float64)
    R = torch.randn(2, 6, generator=g, dtype=torch.float64)
    f0, y = torch.zeros(4, 1, dtype=torch.float64), torch.ones(4, 1, dtype=torch.float64)
    a = Problem(LowRankOperator(L, R), f0, y, loss="squared", blocks=[(3, 2)], lam=0.1).fingerprint()
    b = Problem(LowRankOperator(L, 2 * R), f0, y, loss="squared", blocks=[(3, 2)], lam=0.1).fingerprint()
    assert a["J_form"] == "low-rank" and a["sha256"] != b["sha256"]
