"""HSK-above: certified eps-rank bounds, "consistent with" only on separated growth, flatness refuted."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from landscapes.attention import HskSetting, hsk_instance
from landscapes.eps_rank import eps_rank_bounds, orthogonal_vectors_pre_activations
from verify.hsk.checkers import _sound_slope_range, check_hsk_above, fit_exponent

# Gamma^2/log L = 1/400 below the threshold: there the OV bounds meet (lower = upper), so the sound
# range is a point; at 1/64 the upper bounds are loose and the sound range is too wide to separate
KW = dict(lengths=(64, 128, 256, 512), ratios=(0.05, 1.0, 3.0))


@pytest.fixture(scope="module")
def verdict():
    return check_hsk_above(HskSetting(case="C1"), **KW)


def _matrix(row, setting, matrix):
    if row["family"] == "ov":
        Q, K = orthogonal_vectors_pre_activations(row["L"], row["d"], row["gamma"], seed=setting.seed)
        S = setting.beta * Q @ K.T
    else:
        h = hsk_instance(
            L=row["L"], d=row["d"], r=setting.r, gamma=row["gamma"], case=setting.case, seed=setting.seed
        )
        W = h.weights()
        S = (h.beta * (h.X @ W["Q"]) @ (h.X @ W["K"]).T).numpy()
    if matrix == "exp":
        return np.exp(S - S.max())
    P = np.exp(S - S.max(axis=1, keepdims=True))
    return P / P.sum(axis=1, keepdims=True)


def _slope(xs, ys):
    x = np.log(np.asarray(xs, dtype=float))
    return float(np.polyfit(x, np.log(np.asarray(ys, dtype=float)), 1)[0])


def _brute_range(lengths, lower, upper):
    # every integer rank sequence in the box (the extremes of a linear function sit at its vertices,
    # which are integer): min and max of the plain least-squares slope
    slopes = [
        _slope(lengths, ys)
        for ys in itertools.product(*(range(max(lo, 1), max(up, 1) + 1) for lo, up in zip(lower, upper)))
    ]
    return min(slopes), max(slopes)


def _vertex_range(lengths, lower, upper):
    # the slope is linear in the log-ranks, so its extremes over the box sit at one of the 2^n vertices
    ends = [(max(lo, 1), max(up, 1)) for lo, up in zip(lower, upper)]
    slopes = [_slope(lengths, ys) for ys in itertools.product(*ends)]
    return min(slopes), max(slopes)


def test_sound_slope_range_matches_a_brute_force_over_all_rank_sequences():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(2, 5))
        lengths = sorted(rng.choice([8, 16, 32, 64, 100, 128, 256, 500], size=n, replace=False).tolist())
        lower = rng.integers(0, 9, size=n).tolist()
        upper = [lo + int(g) for lo, g in zip(lower, rng.integers(0, 5, size=n))]
        got = _sound_slope_range(lengths, lower, upper)
        assert got == pytest.approx(_brute_range(lengths, lower, upper), abs=1e-12), (lengths, lower, upper)
    # a synthetic separation: tight bounds growing like L^0.7 against loose flat ones
    Ls = [64, 128, 256, 512]
    top = _sound_slope_range(Ls, [round(L**0.7) for L in Ls], [round(L**0.7) + 1 for L in Ls])
    low = _sound_slope_range(Ls, [5] * 4, [8] * 4)
    assert 0.65 < top[0] <= top[1] < 0.75 and low[1] < top[0]
    # weights (-1.5, -0.5, 0.5, 1.5) / (5 ln 2): the extremes are +- (2 / (5 ln 2)) ln(8/5)
    half = 2 / (5 * math.log(2)) * math.log(8 / 5)
    assert low == pytest.approx((-half, half), abs=1e-12)
    with pytest.raises(ValueError, match="lower <= upper"):
        _sound_slope_range(Ls, [3] * 4, [2] * 4)


def test_orthogonal_vectors_give_separated_sound_ranges_said_as_consistent_never_holds(verdict):
    v = verdict
    assert v.status == "inconclusive" and v.certificate["consistent"] is True, v.reason
    assert v.reason.startswith("consistent with [HSK24] Thm 4.1 (SETH-conditional, worst case): on ov")
    assert "sound exponent range of the least-squares fit" in v.reason
    by = {(r["family"], r["ratio"]): r for r in v.certificate["rank_exponent_by_ratio"]}
    above, below = by[("ov", 1.0)], by[("ov", 0.05)]
    assert above["interval"][0] >= 0.5 and above["interval"][0] > below["interval"][1]
    assert v.certificate["transition_ratio"]["ov"] <= 1.0
    for (fam, c), r in by.items():  # the reported exponents are the fits of the reported bounds
        rows = sorted(
            (g for g in v.certificate["grid"] if g["family"] == fam and g["ratio"] == c), key=lambda g: g["L"]
        )
        assert r["lower_bounds"] == [g["exp"]["lower"] for g in rows]
        assert r["exponent"] == pytest.approx(
            fit_exponent(KW["lengths"], [max(g["exp"]["lower"], 1) for g in rows])
        )
        assert all(g["exp"]["lower"] <= g["exp"]["upper"] for g in rows)
        # the reported sound range is the brute-force range over the reported bounds, and it holds
        # the plain fits to the bounds themselves (two of the sequences in the box)
        lo, up = r["lower_bounds"], r["upper_bounds"]
        assert r["interval"] == pytest.approx(_vertex_range(KW["lengths"], lo, up), abs=1e-12)
        assert r["interval"][0] - 1e-12 <= min(r["lower_exponent"], r["upper_exponent"])
        assert max(r["lower_exponent"], r["upper_exponent"]) <= r["interval"][1] + 1e-12
    assert all("softmax" in g for g in v.certificate["grid"])  # the side measurement


def test_the_grid_bounds_are_the_bounds_of_the_regenerated_matrices(verdict):
    s = HskSetting(case="C1")
    for row in verdict.certificate["grid"][::5]:
        b = eps_rank_bounds(_matrix(row, s, "exp"), 1e-3)
        assert (b.lower, b.upper) == (row["exp"]["lower"], row["exp"]["upper"])


def test_loose_bounds_below_the_threshold_are_not_consistent():
    # at Gamma^2/log L = 1/64 the OV upper bounds (16..29) sit far above the lower ones (6..8): some
    # rank sequence between them has a least-squares slope above the whole range at 1, so no claim
    v = check_hsk_above(
        HskSetting(case="C1"),
        families=("ov",),
        report_softmax=False,
        lengths=KW["lengths"],
        ratios=(0.125, 1.0),
    )
    assert v.status == "inconclusive" and v.certificate["consistent"] is False, v.reason
    assert v.reason.startswith("cannot be told apart")
    by = {r["ratio"]: r for r in v.certificate["rank_exponent_by_ratio"]}
    assert by[1.0]["interval"][0] >= 0.5  # growth above the threshold alone is not enough
    assert by[0.125]["interval"][1] >= by[1.0]["interval"][0]
    # the old, uncertified statistic (spread of the fits) would have separated them
    assert by[0.125]["fit_spread"][1] < by[1.0]["fit_spread"][0]


def test_random_heads_alone_cannot_be_told_apart():
    # random instances: exp(S - max S) collapses towards rank 1-4 at large ratios, so no separated growth
    v = check_hsk_above(HskSetting(case="C1"), families=("random",), **KW)
    assert v.status == "inconclusive" and v.certificate["consistent"] is False
    assert v.reason.startswith("cannot be told apart")
    by = {r["ratio"]: r for r in v.certificate["rank_exponent_by_ratio"]}
    assert by[3.0]["lower_bounds"][-1] <= 4


def test_no_below_threshold_ratio_is_not_consistent():
    v = check_hsk_above(HskSetting(), lengths=(64, 128, 256), ratios=(1.0, 2.0), families=("ov",))
    assert v.certificate["consistent"] is False and v.status == "inconclusive"


def test_no_transition_is_refuted_by_a_certified_lower_bound():
    s = HskSetting(case="C1")
    bad = check_hsk_above(s, variant="no-transition", lengths=(64, 128, 256), ratios=(0.125, 1.0))
    assert bad.status == "violated", bad.reason
    cap = bad.certificate["flat_rank"]
    grid = bad.certificate["grid"]
    assert cap == max(r["exp"]["upper"] for r in grid if r["ratio"] == 0.125)
    cell = bad.certificate["refuting_cell"]
    row = next(r for r in grid if all(r[k] == cell[k] for k in cell))
    # recomputed from the regenerated instance: the lower bound (not the upper one) exceeds the claimed cap
    assert eps_rank_bounds(_matrix(row, s, "exp"), 1e-3).lower > cap
    # a cap above every certified lower bound is not refuted, and never "holds"
    top = max(r["exp"]["lower"] for r in grid)
    ok = check_hsk_above(s, variant="no-transition", flat_rank=top, lengths=(64, 128), ratios=(0.125, 3.0))
    assert ok.status == "inconclusive" and ok.certificate["consistent"] is False


def test_bad_input():
    s = HskSetting()
    with pytest.raises(ValueError, match="rel_err"):
        check_hsk_above(s, rel_err=2.0)
    with pytest.raises(ValueError, match="families"):
        check_hsk_above(s, families=("gaussian",))
    with pytest.raises(ValueError, match="flat_rank"):
        check_hsk_above(s, flat_rank=-1)
    with pytest.raises(ValueError, match="matrix"):
        check_hsk_above(s, matrix="dense")
    with pytest.raises(ValueError, match="lengths"):
        check_hsk_above(s, lengths=(64,))
    with pytest.raises(TypeError, match="report_softmax"):
        check_hsk_above(s, report_softmax=1)
