"""The streaming exact route and the polynomial-method fast route of [HSK24] (landscapes.attention)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes.attention import (
    CASES,
    AttentionLoRA,
    exact_gradients,
    fast_gradients,
    hsk_instance,
    max_abs_entry_error,
    max_entry_error,
    numerical_rank,
    taylor_error_bound,
    taylor_features,
)


@given(
    seed=st.integers(0, 2**31 - 1),
    case=st.sampled_from(sorted(CASES)),
    L=st.integers(1, 40),
    block=st.integers(1, 50),
)
def test_streaming_exact_equals_dense(seed, case, L, block):
    h = hsk_instance(L=L, d=3, r=2, gamma=1.0, case=case, seed=seed)
    l0, a0, b0 = exact_gradients(h)
    l1, a1, b1 = exact_gradients(h, block_size=block)
    assert l1 == pytest.approx(l0, rel=1e-12, abs=1e-14)
    assert max_entry_error(a1, a0) <= 1e-12 and max_entry_error(b1, b0) <= 1e-12


@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 4), g=st.integers(0, 6))
def test_taylor_features_give_the_taylor_polynomial_of_exp(seed, d, g):
    # Multinomial theorem: sum_{|a| <= g} q^a k^a / a! = sum_{j <= g} <q, k>^j / j!.
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, d, generator=gen, dtype=torch.float64)
    Fq, Fk = taylor_features(q, g), taylor_features(k, g)
    assert Fq.shape == (1, math.comb(d + g, g))
    x = float(q @ k.T)
    expected = sum(x**j / math.factorial(j) for j in range(g + 1))
    assert float(Fq @ Fk.T) == pytest.approx(expected, rel=1e-12, abs=1e-13)


def test_taylor_error_bound_holds_and_is_nearly_attained():
    for M in (0.5, 1.0, 2.0, 4.0):
        x = torch.linspace(-M, M, 2001, dtype=torch.float64)
        for g in (1, 3, 6):
            T = sum(x**j / math.factorial(j) for j in range(g + 1))
            err = float((torch.exp(x) - T).abs().max())
            bound = taylor_error_bound(M, g)
            assert err <= bound * (1 + 1e-12)
            assert (
                err >= bound * math.exp(-2 * M) * 0.99
            )  # the remainder at x = M is e^xi M^{g+1}/(g+1)!, xi >= 0
    assert taylor_error_bound(0.0, 3) == 0.0


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_route_converges_to_the_exact_gradients(case):
    h = hsk_instance(L=64, d=4, r=2, gamma=0.6, case=case, seed=3)
    _, a0, b0 = exact_gradients(h)
    errs = []
    for g in (1, 2, 4, 6, 10):
        f = fast_gradients(h, degree=g)
        assert f.rank == math.comb(4 + g, g)
        errs.append(max(max_entry_error(f.grad_A, a0), max_entry_error(f.grad_B, b0)))
    assert all(b < a for a, b in zip(errs, errs[1:]))  # monotone in the degree here
    assert errs[-1] <= 1e-12


# Runs one route in a fresh interpreter under an address-space limit (RLIMIT_AS) of the
# interpreter's own size after imports and a warm-up, plus a margin far below one L x L matrix.
# (tracemalloc does not see torch's CPU allocations; an address-space limit sees every mapping.)
_AS_HARNESS = r"""
import resource, sys
import torch
from landscapes.attention import exact_gradients, fast_gradients, hsk_instance

torch.set_num_threads(2)
L, margin, routes = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
h = hsk_instance(L=L, d=2, r=1, gamma=0.3, case="C2", seed=0)
warm = hsk_instance(L=2048, d=2, r=1, gamma=0.3, case="C2", seed=0)
fast_gradients(warm, degree=3), exact_gradients(warm, block_size=256)  # thread pool, kernels, caches


def vm_size():
    with open("/proc/self/status") as fh:
        return next(int(x.split()[1]) * 1024 for x in fh if x.startswith("VmSize:"))


base = vm_size()
resource.setrlimit(resource.RLIMIT_AS, (base + margin, resource.getrlimit(resource.RLIMIT_AS)[1]))
for route in routes:
    try:
        if route == "fast":
            f = fast_gradients(h, degree=3)
            ok = all(bool(torch.isfinite(v).all()) for v in [*f.grad_A.values(), *f.grad_B.values()])
        else:  # the dense exact route forms the L x L attention matrix
            exact_gradients(h)
            ok = True
        out = "ok" if ok else "nonfinite"
    except MemoryError:
        out = "refused-allocation:MemoryError"
    except RuntimeError as e:  # torch: "... can't allocate memory ..."; anything else is not the limit
        msg = str(e).lower()
        out = ("refused-allocation:" if "allocat" in msg or "memory" in msg else "error:") + "RuntimeError"
    print(route, out, base)
"""


def _run_under_as_limit(L: int, margin: int, *routes: str) -> dict[str, tuple[str, int]]:
    """``{route: (status, base address-space size)}`` from one fresh interpreter."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _AS_HARNESS, str(L), str(margin), *routes],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = {}
    for line in done.stdout.splitlines()[-len(routes) :]:
        route, status, base = line.split()
        out[route] = (status, int(base))
    return out


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for VmSize")
def test_fast_route_never_forms_an_l_by_l_matrix():
    # L = 2^15: one float64 L x L matrix is 8 GiB (a float32 one 4 GiB); the process may map only
    # 1 GiB beyond its size after imports and a warm-up.  The fast route needs O(L R d^2) memory.
    L, margin = 1 << 15, 1 << 30
    assert L * L * 4 >= 4 * margin  # even a float32 L x L matrix is 4x the margin
    runs = _run_under_as_limit(L, margin, "fast", "dense")
    status, base = runs["fast"]
    assert status == "ok", (status, base)
    # The control, same process, same limit: the dense exact route (it forms the L x L matrix) is
    # refused by the allocator (a RuntimeError naming the failed allocation, or a MemoryError), not
    # by some other error.
    control, _ = runs["dense"]
    assert control.startswith("refused-allocation:"), control
    # and the fast route agrees with the streamed exact one on a smaller instance of the same kind
    small = hsk_instance(L=300, d=2, r=1, gamma=0.3, case="C2", seed=0)
    _, a0, _ = exact_gradients(small, block_size=64)
    assert max_entry_error(fast_gradients(small, degree=8).grad_A, a0) <= 1e-9


def test_absolute_and_relative_entry_errors_by_hand():
    exact = {"Q": torch.tensor([[10.0, -20.0]]), "V": torch.tensor([[0.5]])}
    approx = {"Q": torch.tensor([[10.5, -20.0]]), "V": torch.tensor([[0.4]])}
    assert max_abs_entry_error(approx, exact) == pytest.approx(0.5)  # |10.5 - 10|, the absolute measure
    assert max_entry_error(approx, exact) == pytest.approx(0.2)  # |0.4 - 0.5| / 0.5, per key
    assert max_abs_entry_error(dict(approx, V=torch.tensor([[float("nan")]])), exact) == math.inf
    with pytest.raises(ValueError, match="approx, exact: expected the same keys"):
        max_abs_entry_error({"Q": exact["Q"]}, exact)


def test_numerical_rank_closed_forms():
    D = torch.diag(torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64))
    assert numerical_rank(D, 0.05) == 2  # dropping 0.01 and 0.001 errs by 0.01 <= 0.05
    assert numerical_rank(D, 0.005) == 3
    g = torch.Generator().manual_seed(0)
    M = torch.randn(30, 3, generator=g, dtype=torch.float64) @ torch.randn(
        3, 20, generator=g, dtype=torch.float64
    )
    assert numerical_rank(M, 1e-10) == 3
    assert numerical_rank(torch.zeros(4, 4, dtype=torch.float64), 0.1) == 0


def test_hsk_instance_meets_its_entry_bound_exactly():
    for case in CASES:
        h = hsk_instance(L=50, d=5, r=3, gamma=1.7, case=case, seed=2)
        W = h.weights()
        peak = max(float((h.X @ W["Q"]).abs().max()), float((h.X @ W["K"]).abs().max()))
        assert peak == pytest.approx(1.7, rel=1e-12)
        assert set(h.A) == set(CASES[case])


def test_bad_input():
    h = hsk_instance(L=20, d=3, r=2, gamma=1.0, seed=0)
    with pytest.raises(ValueError, match="block_size: expected"):
        exact_gradients(h, block_size=0)
    with pytest.raises(ValueError, match="degree: expected an int >= 0"):
        taylor_features(h.X, -1)
    with pytest.raises(ValueError, match="rel_err: expected a float in"):
        numerical_rank(h.X, 1.5)
    with pytest.raises(ValueError, match="gamma: expected"):
        hsk_instance(L=20, d=3, r=2, gamma=0.0)
    with pytest.raises(ValueError, match="case: expected one of"):
        hsk_instance(L=20, d=3, r=2, gamma=1.0, case="C3")
    with pytest.raises(ValueError, match="L: expected a positive int"):
        hsk_instance(L=0, d=3, r=2, gamma=1.0)
    with pytest.raises(ValueError, match="M: expected"):
        taylor_error_bound(-1.0, 2)
    # degree 1 (1 + x) goes negative for scores below -1: the normalizer check names the degree
    eye = torch.eye(3, dtype=torch.float64)
    anti = AttentionLoRA(
        torch.ones(5, 3, dtype=torch.float64),
        torch.zeros(5, 3, dtype=torch.float64),
        {"Q": eye, "K": -eye, "V": eye},
        {k: torch.zeros(1, 3, dtype=torch.float64) for k in "QV"},
        {k: torch.zeros(3, 1, dtype=torch.float64) for k in "QV"},
    )  # every score is <q, k> = -3: 1 + x = -2 < 0
    with pytest.raises(ValueError, match="degree: the degree-1 features give a softmax normalizer"):
        fast_gradients(anti, degree=1)
    assert fast_gradients(anti, degree=2).min_row_sum > 0  # even degrees are positive
