"""verify.strategies: valid draws, call-time argument errors, determinism, and claims tested with them.

``test_nuc_optimum_rank_obeys_the_bound`` is the worked example of ``docs/strategies.md``, verbatim.
"""

import doctest
import math

import pytest
import torch
from hypothesis import HealthCheck, Phase, find, given, seed, settings
from hypothesis import strategies as st

import verify.strategies
from landscapes import (
    Problem,
    gaussian_problem,
    nuc_certificate,
    random_features_problem,
    reduce_rank,
    solve_nuc,
    teacher_problem,
)
from landscapes.lora import LoRAPoint, balanced_factors, lora_value, lora_value_and_grad, product
from theory import r_max, triangular
from verify.strategies import lora_points, problems, psd_matrices, ranks_above_bound, ranks_below_bound

GENERATORS = {
    "gaussian_problem": gaussian_problem,
    "teacher_problem": teacher_problem,
    "random_features_problem": random_features_problem,
}


def _within(value, spec):
    """Whether ``value`` fits a size/real argument (strategies are not checked here)."""
    if isinstance(spec, tuple):
        return spec[0] <= value <= spec[1]
    if isinstance(spec, (int, float)):
        return value == spec
    return True


def _rebuild(P: Problem) -> Problem:
    """The problem again, from the generator and seed it records."""
    kind = P.meta["generator"]
    kw = dict(K=P.K, N=P.N, lam=list(P.lam), loss=P.loss.name, seed=P.seed, dtype=P.dtype)
    if kind == "random_features_problem":
        ((m, n),) = P.blocks
        kw.update(m=m, n=n)
    else:
        kw["blocks"] = list(P.blocks)
    if kind == "teacher_problem":
        kw["teacher_rank"] = P.meta["teacher_rank"]
    return GENERATORS[kind](**kw)


def _same_problem(P: Problem, Q: Problem) -> bool:
    return (
        P.blocks == Q.blocks
        and P.lam == Q.lam
        and P.loss.name == Q.loss.name
        and torch.equal(P.J.matrix, Q.J.matrix)
        and torch.equal(P.f0, Q.f0)
        and torch.equal(P.y, Q.y)
    )


# ---- problems ------------------------------------------------------------------------------------
PROBLEM_CONFIGS = [
    {},
    dict(K=2, losses=("cross_entropy", "logistic", "squared")),  # logistic is skipped: needs K = 1
    dict(K=1, N=3, blocks=2, m=(2, 3), n=4, losses=("logistic",), lam=0.25, kinds=("gaussian", "teacher")),
    dict(blocks=(1, 3), lam=(0.0, 1.0), lam_per_block=True, dtype=torch.float32),
    dict(
        K=st.integers(1, 3),
        N=st.just(2),
        blocks=st.integers(1, 2),
        lam=st.floats(0.01, 0.02),
        kinds=("random_features",),
    ),
    dict(kinds=("teacher",), teacher_rank=3, losses=("squared",), K=(2, 4), N=(5, 7)),
]


@pytest.mark.parametrize("kwargs", PROBLEM_CONFIGS, ids=[str(i) for i in range(len(PROBLEM_CONFIGS))])
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_problems_are_valid_and_follow_the_arguments(kwargs, data):
    P = data.draw(problems(**kwargs))
    assert isinstance(P, Problem)
    # the constructor's validation passes again on the drawn tensors
    Problem(P.J.matrix, P.f0, P.y, loss=P.loss, blocks=P.blocks, lam=P.lam)
    assert P.dtype == kwargs.get("dtype", torch.float64)
    assert P.loss.name in kwargs.get("losses", ("squared", "logistic", "cross_entropy"))
    assert P.loss.name != "logistic" or P.K == 1
    assert P.loss.name != "cross_entropy" or P.K >= 2
    assert _within(P.K, kwargs.get("K", (1, 3)))
    assert _within(P.N, kwargs.get("N", (1, 6)))
    assert _within(len(P.blocks), kwargs.get("blocks", (1, 2)))
    for m, n in P.blocks:
        assert _within(m, kwargs.get("m", (1, 5))) and _within(n, kwargs.get("n", (1, 5)))
    assert all(_within(v, kwargs.get("lam", (1e-3, 0.5))) for v in P.lam)
    if not kwargs.get("lam_per_block", False):
        assert len(set(P.lam)) == 1
    kind = P.meta["generator"].removesuffix("_problem")
    assert kind in kwargs.get("kinds", ("gaussian", "teacher", "random_features"))
    if kind == "teacher":
        assert _within(P.meta["teacher_rank"], kwargs.get("teacher_rank", (1, 2)))
    # tensors come from the recorded seed: the generator rebuilds the same problem
    assert isinstance(P.seed, int)
    assert _same_problem(P, _rebuild(P))


BAD_PROBLEM_ARGS = [
    (dict(K=0), ValueError, r"K: expected an int >= 1, got 0"),
    (dict(K=True), TypeError, r"K: expected an int, a \(lo, hi\) tuple of ints or a hypothesis strategy"),
    (dict(K=1.5), TypeError, r"K: expected an int, .* got float 1.5"),
    (dict(K=(3, 1)), ValueError, r"K: expected a \(lo, hi\) range with 1 <= lo <= hi, got \(3, 1\)"),
    (dict(K=(0, 2)), ValueError, r"K: expected a \(lo, hi\) range with 1 <= lo <= hi"),
    (dict(K=(1, 2, 3)), TypeError, r"K: expected a \(lo, hi\) tuple of two ints, got \(1, 2, 3\)"),
    (dict(K=(1, 2.5)), TypeError, r"K: expected a \(lo, hi\) tuple of two ints"),
    (dict(K=[1, 3]), TypeError, r"K: expected an int, .* got list \[1, 3\]"),
    (dict(N=-1), ValueError, r"N: expected an int >= 1, got -1"),
    (dict(N="3"), TypeError, r"N: expected an int, .* got str '3'"),
    (dict(blocks=0), ValueError, r"blocks: expected an int >= 1, got 0"),
    (dict(m=(0, 2)), ValueError, r"m: expected a \(lo, hi\) range with 1 <= lo <= hi"),
    (dict(n=None), TypeError, r"n: expected an int, .* got NoneType None"),
    (dict(losses="squared"), TypeError, r"losses: expected a sequence of names such as \('squared',\)"),
    (dict(losses=()), ValueError, r"losses: expected a non-empty sequence of names"),
    (dict(losses=("hinge",)), ValueError, r"losses: expected names from .* got 'hinge'"),
    (dict(losses=("logistic",), K=2), ValueError, r"losses: expected a loss .*K=2 .*\('logistic',\)"),
    (dict(losses=("cross_entropy",), K=(1, 1)), ValueError, r"losses: expected a loss .*K=\(1, 1\)"),
    (dict(kinds=("random_features",), blocks=2), ValueError, r"kinds: expected a kind .*blocks=2"),
    (dict(kinds=("random_features",), blocks=(2, 3)), ValueError, r"kinds: expected a kind possible"),
    (dict(kinds=("gaussian", "nope")), ValueError, r"kinds: expected names from .* got 'nope'"),
    (dict(kinds="gaussian"), TypeError, r"kinds: expected a sequence of names"),
    (dict(kinds=5), TypeError, r"kinds: expected a sequence of names from .* got int 5"),
    (dict(lam=-0.1), ValueError, r"lam: expected a finite number >= 0.0, got -0.1"),
    (dict(lam=math.nan), ValueError, r"lam: expected a finite number >= 0.0, got nan"),
    (dict(lam=math.inf), ValueError, r"lam: expected a finite number >= 0.0, got inf"),
    (dict(lam=(0.5, 0.1)), ValueError, r"lam: expected a \(lo, hi\) range .* with 0.0 <= lo <= hi"),
    (dict(lam=(0.0, math.inf)), ValueError, r"lam: expected a \(lo, hi\) range of finite numbers"),
    (dict(lam=("a", 1)), TypeError, r"lam: expected a \(lo, hi\) tuple of two numbers"),
    (dict(lam="0.1"), TypeError, r"lam: expected a number, a \(lo, hi\) tuple of numbers or a hypothesis"),
    (dict(lam=False), TypeError, r"lam: expected a number, .* got bool False"),
    (dict(lam_per_block=1), TypeError, r"lam_per_block: expected a bool, got int 1"),
    (dict(teacher_rank=0), ValueError, r"teacher_rank: expected an int >= 1, got 0"),
    (dict(dtype=torch.int64), ValueError, r"dtype: expected torch.float32 or torch.float64, got torch.int64"),
    (dict(dtype="float64"), ValueError, r"dtype: expected torch.float32 or torch.float64, got 'float64'"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD_PROBLEM_ARGS, ids=[str(a[0]) for a in BAD_PROBLEM_ARGS])
def test_problems_rejects_bad_arguments_when_called(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        problems(**kwargs)  # no draw: the error comes from the call itself


def test_problems_positional_arguments_are_refused():
    with pytest.raises(TypeError):
        problems(2)  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(K=st.just(0)), ValueError, r"K: expected the strategy to draw ints >= 1, got 0"),
        (dict(N=st.just(2.0)), TypeError, r"N: expected the strategy to draw ints, got float 2.0"),
        (dict(lam=st.just(-1.0)), ValueError, r"lam: expected the strategy to draw finite numbers >= 0.0"),
        (dict(lam=st.just("x")), TypeError, r"lam: expected the strategy to draw numbers, got str"),
    ],
)
def test_values_drawn_from_user_strategies_are_checked(kwargs, exc, match):
    strategy = problems(**kwargs)  # a strategy argument can only be checked when drawn

    @settings(max_examples=1, database=None)
    @given(strategy)
    def draw(problem):
        pass

    with pytest.raises(exc, match=match):
        draw()


# ---- LoRA points ---------------------------------------------------------------------------------
@given(
    data=st.data(),
    rank=st.sampled_from([1, 4, (1, 3), (2, 9), st.integers(1, 6)]),
    cap_rank=st.booleans(),
)
def test_lora_points_fit_the_problem(data, rank, cap_rank):
    P = data.draw(problems(dtype=data.draw(st.sampled_from([torch.float64, torch.float32]))))
    pt = data.draw(lora_points(P, rank=rank, cap_rank=cap_rank))
    assert isinstance(pt, LoRAPoint)
    lora_value(P, pt.U, pt.V)  # the factors are accepted by the objective
    for (m, n), u, v, r in zip(P.blocks, pt.U, pt.V, pt.ranks):
        assert u.shape == (m, r) and v.shape == (n, r)
        assert u.dtype == v.dtype == P.dtype and u.device == P.device
        assert bool(torch.isfinite(u).all() and torch.isfinite(v).all())
        if cap_rank:
            assert r <= min(m, n)
        lo, hi = (rank, rank) if isinstance(rank, int) else rank if isinstance(rank, tuple) else (1, 6)
        assert min(lo, min(m, n)) <= r <= hi if cap_rank else lo <= r <= hi


@given(data=st.data())
def test_lora_points_per_block_ranks_and_special_points(data):
    P = gaussian_problem(K=1, N=3, blocks=[(4, 2), (3, 5)], lam=0.1, seed=0)
    pt = data.draw(lora_points(P, rank=[(1, 5), 2], special=("zero_B", "zero"), scale=1.0))
    assert pt.ranks[0] <= 2 and pt.ranks[1] == 2
    zero_U = all(not bool(u.any()) for u in pt.U)
    zero_V = all(not bool(v.any()) for v in pt.V)
    assert zero_V <= zero_U  # V = 0 only at the zero point, where U = 0 too


def test_lora_points_draws_each_special_point():
    P = gaussian_problem(K=1, N=2, blocks=[(3, 3)], lam=0.1, seed=0)
    strategy = lora_points(P, special=("zero_B", "zero"))
    zero_B = find(strategy, lambda p: not p.U[0].any() and bool(p.V[0].any()))
    assert zero_B.V[0].abs().min() > 0  # B = U = 0, A = V^T random
    zero = find(strategy, lambda p: not p.U[0].any() and not p.V[0].any())
    assert zero.ranks[0] >= 1
    simplest = find(strategy, lambda p: True)  # shrinking goes to the zero point
    assert not simplest.U[0].any() and not simplest.V[0].any()
    assert find(lora_points(P), lambda p: True).U[0].abs().min() > 0  # without special points: random


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(problem=None), TypeError, r"problem: expected a landscapes.problem.Problem, got NoneType"),
        (dict(rank=0), ValueError, r"rank: expected an int >= 1, got 0"),
        (dict(rank=(2, 1)), ValueError, r"rank: expected a \(lo, hi\) range with 1 <= lo <= hi"),
        (dict(rank=[1]), ValueError, r"rank: expected one rank per block \(2\), got a list of 1"),
        (dict(rank=[1, 0]), ValueError, r"rank\[1\]: expected an int >= 1, got 0"),
        (dict(rank=[1, "a"]), TypeError, r"rank\[1\]: expected an int"),
        (dict(rank=2.0), TypeError, r"rank: expected an int, .* got float 2.0"),
        (dict(scale=-1.0), ValueError, r"scale: expected a finite number >= 0.0, got -1.0"),
        (dict(scale=(1.0, math.nan)), ValueError, r"scale: expected a \(lo, hi\) range of finite numbers"),
        (dict(special="zero"), TypeError, r"special: expected a sequence of names such as \('zero',\)"),
        (dict(special=("one",)), ValueError, r"special: expected names from \('zero_B', 'zero'\), got 'one'"),
        (dict(cap_rank="yes"), TypeError, r"cap_rank: expected a bool, got str 'yes'"),
    ],
)
def test_lora_points_rejects_bad_arguments_when_called(kwargs, exc, match):
    P = gaussian_problem(K=1, N=2, blocks=[(3, 3), (2, 4)], lam=0.1, seed=0)
    problem = kwargs.pop("problem", P)
    with pytest.raises(exc, match=match):
        lora_points(problem, **kwargs)


# ---- PSD matrices --------------------------------------------------------------------------------
PSD_CONFIGS = [
    {},
    dict(n=(1, 8), rank=(0, 3)),
    dict(n=(2, 6), rank=2, condition=100.0),
    dict(n=5, condition=(1.0, 1e6)),
    dict(n=st.integers(3, 6), rank=st.integers(0, 3)),
    dict(rank=(1, 4), condition=st.floats(1.0, 1e3)),
    dict(n=(1, 4), dtype=torch.float32),
]


@pytest.mark.parametrize("kwargs", PSD_CONFIGS, ids=[str(i) for i in range(len(PSD_CONFIGS))])
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_psd_matrices_are_symmetric_psd_with_the_requested_spectrum(kwargs, data):
    M = data.draw(psd_matrices(**kwargs))
    dtype = kwargs.get("dtype", torch.float64)
    eps = torch.finfo(dtype).eps
    assert M.dtype == dtype and M.ndim == 2 and M.shape[0] == M.shape[1]
    size = M.shape[0]
    assert _within(size, kwargs.get("n", (1, 6)))
    assert torch.equal(M, M.T)
    mu = torch.linalg.eigvalsh(M.double())
    top = max(float(mu[-1]), 1.0) if size else 1.0
    assert float(mu[0]) >= -10 * size * eps * top
    nonzero = mu[mu > 1e3 * size * eps * top]
    rank = int(nonzero.numel())
    assert rank == size if kwargs.get("rank") is None else _within(rank, kwargs["rank"])
    if "condition" in kwargs:
        assert rank >= 2
        c = float(nonzero[-1] / nonzero[0])
        assert float(nonzero[-1]) == pytest.approx(1.0, rel=100 * size * eps)
        lo, hi = kwargs["condition"] if isinstance(kwargs["condition"], tuple) else (1.0, math.inf)
        if isinstance(kwargs["condition"], float):
            lo = hi = kwargs["condition"]
        tol = 100 * size * eps * c
        assert lo * (1 - tol) <= c <= hi * (1 + tol)


@given(c=st.floats(1.0, 1e8), r=st.integers(2, 6), data=st.data())
def test_psd_condition_number_holds_to_the_stated_accuracy(c, r, data):
    M = data.draw(psd_matrices(n=(r, 8), rank=r, condition=c))
    mu = torch.linalg.eigvalsh(M)[-r:]
    assert float(mu[-1] / mu[0]) == pytest.approx(c, rel=100 * M.shape[0] * 2.2e-16 * c)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n=0), ValueError, r"n: expected an int >= 1, got 0"),
        (dict(n="4"), TypeError, r"n: expected an int, .* got str '4'"),
        (dict(rank=-1), ValueError, r"rank: expected an int >= 0, got -1"),
        (dict(rank=5, n=(1, 3)), ValueError, r"rank: expected ranks <= n, got rank=5 with n=\(1, 3\)"),
        (dict(rank=(4, 6), n=3), ValueError, r"rank: expected ranks <= n"),
        (dict(condition=0.5), ValueError, r"condition: expected a finite number >= 1.0, got 0.5"),
        (dict(condition=math.inf), ValueError, r"condition: expected a finite number >= 1.0, got inf"),
        (dict(condition="10"), TypeError, r"condition: expected a number, .* got str '10'"),
        (dict(condition=10.0, rank=1), ValueError, r"rank: expected ranks >= 2 with a condition number"),
        (dict(condition=10.0, rank=(0, 1)), ValueError, r"rank: expected ranks >= 2 with a condition"),
        (dict(condition=10.0, n=1), ValueError, r"n: expected sizes >= 2 with a condition number"),
        (dict(condition=10.0, rank=3, n=2), ValueError, r"rank: expected ranks <= n"),
        (dict(dtype=torch.float16), ValueError, r"dtype: expected torch.float32 or torch.float64"),
    ],
)
def test_psd_matrices_rejects_bad_arguments_when_called(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        psd_matrices(**kwargs)


# ---- ranks ---------------------------------------------------------------------------------------
@given(K=st.integers(1, 50), N=st.integers(1, 500), data=st.data())
def test_ranks_sit_on_the_right_side_of_the_bound(K, N, data):
    above = data.draw(ranks_above_bound(K=K, N=N))
    assert triangular(above) > K * N and above <= 2 * (r_max(K, N) + 1)
    cap = data.draw(st.integers(r_max(K, N) + 1, r_max(K, N) + 10))
    capped = data.draw(ranks_above_bound(K=K, N=N, max_rank=cap))
    assert triangular(capped) > K * N and capped <= cap
    low = data.draw(st.integers(1, r_max(K, N)))
    below = data.draw(ranks_below_bound(K=K, N=N, min_rank=low))
    assert triangular(below) <= K * N and below >= low


@given(K=st.integers(1, 8), N=st.integers(1, 200), data=st.data())
def test_r_max_is_the_largest_rank_within_the_bound(K, N, data):
    """The claim behind r_max, through the strategies: every rank within the bound is <= r_max,
    every rank above it is > r_max, and both r_max and r_max + 1 are drawn at the ends."""
    rm = r_max(K, N)
    below = data.draw(ranks_below_bound(K=K, N=N))
    above = data.draw(ranks_above_bound(K=K, N=N))
    assert triangular(below) <= K * N < triangular(above)
    assert below <= rm < above
    assert data.draw(ranks_below_bound(K=K, N=N, min_rank=rm)) == rm
    assert data.draw(ranks_above_bound(K=K, N=N, max_rank=rm + 1)) == rm + 1
    assert triangular(rm) <= K * N < triangular(rm + 1)


@pytest.mark.parametrize("K, N", [(1, 1), (1, 2), (2, 32), (3, 7)])
def test_rank_strategies_shrink_to_the_bound(K, N):
    assert find(ranks_above_bound(K=K, N=N), lambda r: True) == r_max(K, N) + 1
    assert find(ranks_below_bound(K=K, N=N), lambda r: True) == 1
    assert find(ranks_below_bound(K=K, N=N), lambda r: triangular(r + 1) > K * N) == r_max(K, N)


@pytest.mark.parametrize(
    "fn, kwargs, exc, match",
    [
        (ranks_above_bound, dict(K=0, N=3), ValueError, r"K: expected an int >= 1, got 0"),
        (ranks_above_bound, dict(K="2", N=3), TypeError, r"K: expected an int >= 1, got str '2'"),
        (ranks_above_bound, dict(K=2, N=True), TypeError, r"N: expected an int >= 1, got bool True"),
        (
            ranks_above_bound,
            dict(K=2, N=32, max_rank=0),
            ValueError,
            r"max_rank: expected an int >= 1, got 0",
        ),
        (ranks_above_bound, dict(K=2, N=32, max_rank=1.5), TypeError, r"max_rank: expected None or an int"),
        (
            ranks_above_bound,
            dict(K=2, N=32, max_rank=10),
            ValueError,
            r"max_rank: expected an int >= 11 = r_max\(K, N\) \+ 1 .* KN = 64\), got 10",
        ),
        (ranks_below_bound, dict(K=1, N=0), ValueError, r"N: expected an int >= 1, got 0"),
        (ranks_below_bound, dict(K=1, N=3, min_rank=0), ValueError, r"min_rank: expected an int >= 1, got 0"),
        (ranks_below_bound, dict(K=1, N=3, min_rank=None), TypeError, r"min_rank: expected an int >= 1"),
        (
            ranks_below_bound,
            dict(K=2, N=32, min_rank=11),
            ValueError,
            r"min_rank: expected an int <= 10 = r_max\(K, N\) .* KN = 64\), got 11",
        ),
    ],
)
def test_rank_strategies_reject_bad_arguments_when_called(fn, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(**kwargs)


# ---- determinism ---------------------------------------------------------------------------------
def _draws(strategy, hypothesis_seed, n=4):
    out = []

    @seed(hypothesis_seed)
    @settings(max_examples=n, database=None, derandomize=False, phases=[Phase.generate])
    @given(strategy)
    def collect(x):
        out.append(x)

    collect()
    return out


def _tensors(x):
    if isinstance(x, Problem):
        return [x.J.matrix, x.f0, x.y, torch.tensor(x.lam)]
    if isinstance(x, LoRAPoint):
        return list(x.U) + list(x.V)
    return [x]


@pytest.mark.parametrize(
    "strategy",
    [
        problems(),
        psd_matrices(rank=(0, 4), condition=(1.0, 100.0)),
        lora_points(gaussian_problem(K=1, N=2, blocks=[(3, 4), (2, 2)], lam=0.1, seed=0), special=("zero",)),
    ],
    ids=["problems", "psd_matrices", "lora_points"],
)
def test_same_hypothesis_seed_gives_the_same_tensors(strategy):
    a, b = _draws(strategy, 1234), _draws(strategy, 1234)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        tx, ty = _tensors(x), _tensors(y)
        assert len(tx) == len(ty) and all(torch.equal(s, t) for s, t in zip(tx, ty))


def test_a_failing_example_notes_the_generator_call_that_rebuilds_it():
    drawn = []

    @settings(max_examples=5, database=None)
    @given(problems())
    def planted_failure(problem):
        drawn.append(problem)
        raise AssertionError("planted")

    with pytest.raises(AssertionError, match="planted") as info:
        planted_failure()
    lines = [s for s in getattr(info.value, "__notes__", []) if "problems() drew" in s]
    assert lines, getattr(info.value, "__notes__", None)
    call = lines[-1].split("problems() drew ", 1)[1]
    rebuilt = eval(call, {"torch": torch, **GENERATORS})  # the line a user pastes into @example
    assert _same_problem(drawn[-1], rebuilt)


def test_a_failing_lora_point_notes_the_call_that_rebuilds_it():
    from landscapes.lora import random_factors

    P = gaussian_problem(K=1, N=2, blocks=[(3, 4), (2, 2)], lam=0.1, seed=0)
    drawn = []

    @settings(max_examples=5, database=None)
    @given(lora_points(P, rank=(2, 3)))
    def planted_failure(point):
        drawn.append(point)
        raise AssertionError("planted")

    with pytest.raises(AssertionError, match="planted") as info:
        planted_failure()
    lines = [s for s in getattr(info.value, "__notes__", []) if "lora_points() drew" in s]
    assert lines, getattr(info.value, "__notes__", None)
    call = lines[-1].split("lora_points() drew ", 1)[1]
    rebuilt = eval(call, {"torch": torch, "random_factors": random_factors, "problem": P})
    assert all(torch.equal(a, b) for a, b in zip(_tensors(drawn[-1]), _tensors(rebuilt)))


# ---- claims written with the strategies ----------------------------------------------------------
@given(data=st.data())
def test_lora_objective_is_risk_plus_weight_decay(data):
    r"""F(U, V) = L(U V^T) + sum_j lam_j/2 (||U_j||^2 + ||V_j||^2), with L computed from J directly,
    and F >= the NUC objective at D = U V^T, with equality at balanced factors."""
    P = data.draw(problems())
    pt = data.draw(lora_points(P, special=("zero_B", "zero")))
    D = product(pt.U, pt.V)
    z = P.f0 + (P.J.matrix @ torch.cat([d.reshape(-1) for d in D])).reshape(P.N, P.K)
    risk = float(P.loss.value(z, P.y).mean())
    decay = sum(
        0.5 * lam * float(u.square().sum() + v.square().sum()) for lam, u, v in zip(P.lam, pt.U, pt.V)
    )
    value = lora_value(P, pt.U, pt.V)
    assert value == pytest.approx(risk + decay, rel=1e-12, abs=1e-12)
    assert lora_value_and_grad(P, pt.U, pt.V)[0] == pytest.approx(value, rel=1e-12, abs=1e-12)
    # (||U||^2 + ||V||^2)/2 >= ||U V^T||_*: LoRA never beats NUC at the same D ...
    assert value >= P.nuc_objective(D) - 1e-12 * max(1.0, abs(value))
    # ... and balanced factors of D attain it
    bf = balanced_factors(D, rank=list(pt.ranks))
    assert lora_value(P, bf.U, bf.V) == pytest.approx(P.nuc_objective(D), rel=1e-10, abs=1e-12)


# ---- the worked example of docs/strategies.md, verbatim (its imports are at the top) --------------
@settings(max_examples=10, deadline=None)
@given(problems(K=(1, 2), N=(1, 6), blocks=(1, 2), m=(1, 5), n=(1, 5), lam=(1e-3, 0.5)))
def test_nuc_optimum_rank_obeys_the_bound(problem):
    # Solve NUC, min_D L(D) + sum_j lam_j ||D_j||_*, to a certified relative duality gap.
    sol = solve_nuc(problem, seed=problem.seed)
    assert sol.converged, sol.certificate
    # Barvinok-Pataki is constructive: lower the ranks keeping the predictions J vec D and
    # without increasing sum_j lam_j ||D_j||_*, then certify the reduced point again.
    red = reduce_rank(problem, sol.D)
    assert nuc_certificate(problem, red.D).rel_gap <= 1e-6
    # The claim: sum_j r_j (r_j + 1) / 2 <= K N.
    assert sum(triangular(r) for r in red.ranks_after) <= problem.KN


def test_the_docs_example_is_the_test_above():
    """The doc's code block: its test function is the one above, verbatim; its imports resolve."""
    import inspect
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "strategies.md").read_text()
    start = doc.index("<!-- worked-example -->")
    start = doc.index("```python\n", start) + len("```python\n")
    example = doc[start : doc.index("```", start)]
    source = inspect.getsource(test_nuc_optimum_rank_obeys_the_bound)
    assert source.strip() in example
    namespace: dict = {}
    exec(example, namespace)  # defines the test (imports included) without running it
    assert callable(namespace["test_nuc_optimum_rank_obeys_the_bound"])


def test_docstring_examples_run():
    result = doctest.testmod(verify.strategies, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0
